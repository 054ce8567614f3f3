"""TimmClassifier: any timm architecture trained from scratch, as a scikit-learn classifier."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from tqdm.auto import tqdm

from .._images import check_images, iter_batches, to_tensor
from .._validation import make_generator, resolve_device, seed_from_random_state, seeded_torch
from ._common import _batched_outputs, _check_logits, _softmax_numpy

__all__ = ["TimmClassifier"]

#: reserved timm arguments that TimmClassifier derives itself
_DERIVED_KWARGS = ("num_classes", "in_chans", "pretrained")


def _random_shift(x, generator, max_fraction=0.125):
    """Translate each image by a random whole number of pixels (edges replicated).

    Shifts of up to ``max_fraction`` of the image size; nearest sampling on whole-pixel offsets
    keeps pixel values exact (no blur).
    """
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    for row, size in ((0, w), (1, h)):
        limit = max(1, int(size * max_fraction))
        shift = torch.randint(-limit, limit + 1, (n,), generator=generator)
        # affine_grid works in [-1, 1] coordinates, where one pixel spans 2 / size.
        theta[:, row, 2] = shift * (2.0 / size)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------------
# building timm networks


def _probe_module(module, image_shape, n_classes):
    """Run two blank images through ``module`` (eval mode) and check the logits' shape."""
    h, w, c = image_shape
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros(2, c, h, w))
    _check_logits(out, 2, "the timm model")
    if out.shape[1] != n_classes:
        raise ValueError(f"the timm model returned {out.shape[1]} logits, expected {n_classes}.")


def _create_module(spec):
    """Build the timm network described by ``spec`` (random weights; nothing is downloaded)."""
    import timm

    return timm.create_model(spec["model_name"], pretrained=False, **spec["kwargs"])


def _build_timm_module(model_name, model_kwargs, n_classes, image_shape):
    """Create a timm network for ``image_shape`` (H, W, C) and check that it accepts that size.

    Models with a fixed input size (ViT, Swin, ...) fail on small images with their default
    ``img_size``; when the user did not set it, the size of ``X`` is passed and tried once more.

    Returns
    -------
    module : torch.nn.Module
        In eval mode, on the CPU.
    spec : dict
        ``{"model_name", "kwargs"}`` that rebuilds the same architecture (used by pickling).
    """
    import timm

    if not timm.is_model(model_name):
        raise ValueError(
            f"model_name={model_name!r} is not a timm architecture; see timm.list_models()."
        )
    model_kwargs = dict(model_kwargs or {})
    reserved = sorted(set(_DERIVED_KWARGS) & set(model_kwargs))
    if reserved:
        raise ValueError(
            f"model_kwargs must not set {reserved}: the number of classes and channels come from "
            "y and X, and pretrained weights cannot be downloaded."
        )
    h, w, c = image_shape
    base = {**model_kwargs, "num_classes": n_classes, "in_chans": c}
    try:
        module = _create_module({"model_name": model_name, "kwargs": base})
    except TypeError as exc:
        raise TypeError(
            f"model_kwargs={model_kwargs!r} are not accepted by timm model {model_name!r}: {exc}"
        ) from exc
    attempts = [(module, base)]
    if "img_size" not in base:
        attempts.append((None, {**base, "img_size": h if h == w else (h, w)}))
    errors = []
    for module, kwargs in attempts:
        spec = {"model_name": model_name, "kwargs": kwargs}
        try:
            module = module if module is not None else _create_module(spec)
            _probe_module(module, image_shape, n_classes)
        # Architectures fail in their own ways on sizes they cannot handle (timm raises
        # AssertionError, torch RuntimeError, constructors without img_size TypeError).
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            continue
        return module, spec
    raise ValueError(
        f"timm model {model_name!r} with model_kwargs={model_kwargs!r} cannot classify {h}x{w} "
        f"images with {c} channel(s) ({errors[0]}). Choose an architecture that downsamples less "
        f"(e.g. 'resnet18' works from 16x16) or pass size arguments in model_kwargs (e.g. "
        f"{{'img_size': {h}, 'patch_size': 4}} for a ViT)."
    ) from errors[0]


# --------------------------------------------------------------------------------------------------
# TimmClassifier


class TimmClassifier(ClassifierMixin, BaseEstimator):
    """Any timm architecture trained from scratch on images, as a scikit-learn classifier.

    The network is built with ``timm.create_model(model_name, pretrained=False,
    num_classes=n_classes, in_chans=C, **model_kwargs)`` and trained with AdamW on the
    cross-entropy loss. Inputs are validated like every skcfx image batch and reach the network
    as ``(n, C, H, W)`` float32 tensors in [-1, 1]; use the same convention when calling
    ``module_`` directly.

    Parameters
    ----------
    model_name : str, default='resnet18'
        A name from ``timm.list_models()``. ResNets work from 16x16 images upwards; tiny
        architectures such as ``'test_resnet'`` or ``'test_efficientnet'`` train in about a
        second on a few hundred 16x16 images. Models with a fixed input size (ViTs) are given
        ``img_size`` from ``X`` unless ``model_kwargs`` sets it.
    max_epochs : int, default=10
        Passes over the training images.
    batch_size : int, default=64
        Images per optimisation step (and per forward pass when predicting). Networks with
        BatchNorm need at least 2; a leftover single image at the end of an epoch is skipped.
    learning_rate : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW decoupled weight decay.
    model_kwargs : dict, default=None
        Extra arguments for ``timm.create_model`` (e.g. ``{'drop_rate': 0.1}``); must not set
        ``num_classes``, ``in_chans`` or ``pretrained``.
    augment : bool, default=False
        Randomly translate training images by up to 1/8 of their size (edges replicated).
    device : {'auto', 'cpu', 'cuda', 'cuda:N'} or torch.device, default='auto'
        Where the network is trained and run; ``'auto'`` picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling, dropout and augmentation. With an int, two fits
        on the CPU give identical predictions.
    verbose : bool, default=False
        Show a progress bar over epochs with the running loss.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network, in eval mode, on ``device_``.
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the column order of :meth:`predict_proba`.
    image_shape_ : tuple of (int, int, int)
        ``(H, W, C)`` of the training images; later inputs must match it.
    device_ : torch.device
        Device of ``module_``.
    history_ : list of dict
        One entry per epoch: ``epoch``, ``train_loss`` and ``train_accuracy`` (averaged over the
        epoch's batches, in training mode).
    n_iter_ : int
        Number of epochs run.

    See Also
    --------
    as_proba_model : Wrap a fitted classifier for counterfactual methods.
    feature_extractor : Penultimate features of the trained network.

    Notes
    -----
    Pickling stores the weights on the CPU, so a classifier fitted on a GPU unpickles on a
    machine without one (with a warning; it then runs on the CPU). Results are bit-identical
    across runs only on the CPU; cuDNN kernels may differ slightly between GPU runs.

    Examples
    --------
    >>> import numpy as np
    >>> from skcfx.classifiers import TimmClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((20, 16, 16)).astype(np.float32)
    >>> y = np.array([0, 1] * 10)
    >>> X[y == 1, 4:12, 4:12] = 1.0  # class 1 has a bright square
    >>> clf = TimmClassifier('test_resnet', max_epochs=2, batch_size=8, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    >>> clf.image_shape_
    (16, 16, 1)
    """

    _parameter_constraints = {
        "model_name": [str],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "model_kwargs": [dict, None],
        "augment": ["boolean"],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model_name="resnet18",
        *,
        max_epochs=10,
        batch_size=64,
        learning_rate=1e-3,
        weight_decay=1e-2,
        model_kwargs=None,
        augment=False,
        device="auto",
        random_state=None,
        verbose=False,
    ):
        self.model_name = model_name
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.model_kwargs = model_kwargs
        self.augment = augment
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_is_fitted__(self):
        return hasattr(self, "module_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Inputs are batches of images (3-D or 4-D arrays, PIL images or paths), not tables.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train a fresh network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : ndarray, list of PIL.Image or list of path-like
            Training images: ``(n, H, W)`` or ``(n, H, W, C)`` arrays (uint8 or float in [0, 1]),
            PIL images or file paths.
        y : array-like of shape (n,)
            Class labels of any type; at least two classes.

        Returns
        -------
        self : TimmClassifier
            The fitted classifier. A failed fit leaves a previous fit untouched.
        """
        images = check_images(X, name="X")
        encoder, y_index = self._check_labels(y, len(images))
        device = resolve_device(self.device)
        seed = seed_from_random_state(self.random_state)
        image_shape = tuple(int(s) for s in images.shape[1:])
        with seeded_torch(seed, device):
            module, spec = _build_timm_module(
                self.model_name, self.model_kwargs, len(encoder.classes_), image_shape
            )
            module.to(device)
            history = self._train(module, to_tensor(images), torch.from_numpy(y_index), device, seed)
        module.eval()
        # Commit fitted state only once training succeeded.
        self.module_, self.classes_, self.image_shape_ = module, encoder.classes_, image_shape
        self.device_, self.history_, self.n_iter_ = device, history, len(history)
        self._module_spec = spec
        return self

    @staticmethod
    def _check_labels(y, n_samples):
        """Validate ``y`` against ``n_samples`` images; return the fitted encoder and indices."""
        y = column_or_1d(np.asarray(y), warn=True)
        if y.shape[0] != n_samples:
            raise ValueError(f"y has {y.shape[0]} labels but X has {n_samples} images.")
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise ValueError(f"y: {exc}") from exc
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y must contain at least two classes, got only {encoder.classes_.tolist()}."
            )
        return encoder, encoder.transform(y).astype(np.int64)

    def _train(self, module, x, y, device, seed):
        """Optimise ``module`` on tensors ``x`` (CPU, [-1, 1]) and ``y``; return the history.

        No input validation.
        """
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        generator = make_generator(seed, "cpu")
        history = []
        epochs = tqdm(range(self.max_epochs), desc=f"TimmClassifier({self.model_name})",
                      disable=not self.verbose, leave=False)
        for epoch in epochs:
            stats = self._train_epoch(module, optimizer, x, y, device, generator)
            if not np.isfinite(stats["train_loss"]):
                raise FloatingPointError(
                    f"training diverged (loss {stats['train_loss']}) in epoch {epoch + 1}; "
                    "lower learning_rate."
                )
            history.append({"epoch": epoch + 1, **stats})
            epochs.set_postfix(loss=f"{stats['train_loss']:.4f}")
        return history

    def _train_epoch(self, module, optimizer, x, y, device, generator):
        """One shuffled pass over the data; returns mean loss and accuracy. No input validation."""
        module.train()
        order = torch.randperm(len(x), generator=generator)
        total_loss, n_correct, n_seen = 0.0, 0, 0
        for batch in iter_batches(len(x), self.batch_size):
            index = order[batch]
            if len(index) == 1 and self.batch_size > 1:
                # A leftover single image would break BatchNorm; the next shuffle batches it.
                continue
            xb = _random_shift(x[index], generator) if self.augment else x[index]
            xb, yb = xb.to(device), y[index].to(device)
            logits = module(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(index)
            n_correct += int((logits.argmax(dim=1) == yb).sum())
            n_seen += len(index)
        return {"train_loss": total_loss / n_seen, "train_accuracy": n_correct / n_seen}

    def _check_X(self, X, name="X"):
        """Validate images against the fitted size and channel count."""
        check_is_fitted(self)
        h, w, c = self.image_shape_
        return check_images(X, name=name, image_size=(h, w), n_channels=c)

    def _logits(self, images):
        """Logits (CPU float32 tensor) of validated images; no input validation."""
        return _batched_outputs(self.module_, images, self.device_, self.batch_size)

    def predict_proba(self, X):
        """Class probabilities of images ``X``.

        Parameters
        ----------
        X : ndarray, list of PIL.Image or list of path-like
            Images of the fitted size and channel count.

        Returns
        -------
        proba : ndarray of shape (n, n_classes), dtype float64
            Columns follow ``classes_``.
        """
        return _softmax_numpy(self._logits(self._check_X(X)))

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably from the logits."""
        logits = self._logits(self._check_X(X))
        return torch.log_softmax(logits.double(), dim=1).numpy()

    def predict(self, X):
        """Predicted class labels of images ``X`` (an array of ``classes_`` values)."""
        logits = self._logits(self._check_X(X))
        return self.classes_[logits.argmax(dim=1).numpy()]

    # ---------------------------------------------------------------------------------- pickling
    def __getstate__(self):
        # A copy: object.__getstate__ returns the live __dict__ itself.
        state = dict(super().__getstate__())
        module = state.pop("module_", None)
        if module is not None:
            # Weights go to the CPU so a GPU-fitted classifier unpickles anywhere (skorch style);
            # the architecture is rebuilt from ``_module_spec`` when loading.
            state["_module_state"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        return state

    def __setstate__(self, state):
        weights = state.pop("_module_state", None)
        super().__setstate__(state)
        if weights is None:
            return
        device = self.device_
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This TimmClassifier was fitted on {device} but CUDA is not available; it is "
                "loaded on the CPU.", UserWarning, stacklevel=2,
            )
            device = torch.device("cpu")
        module = _create_module(self._module_spec)
        module.load_state_dict(weights)
        self.module_, self.device_ = module.to(device).eval(), device

    def _copy_to(self, device):
        """A fitted copy whose module lives on ``device`` (the original is left untouched)."""
        state = self.__getstate__()
        state["device_"] = device
        clone = type(self).__new__(type(self))
        clone.__setstate__(state)
        return clone
