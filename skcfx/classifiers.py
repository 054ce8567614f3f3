"""Image classifiers: :class:`TimmClassifier`, and adapters that put any classifier behind one interface.

Counterfactual methods explain a classifier through :func:`as_proba_model`, which wraps

* a fitted :class:`TimmClassifier`;
* a ``torch.nn.Module`` returning logits (any timm model), fed ``(n, C, H, W)`` images in [-1, 1]
  unless ``input_range`` says otherwise;
* a fitted scikit-learn classifier with ``predict_proba`` on *flattened* pixels: rows of
  ``images.reshape(n, H * W * C)`` with values in [0, 1] (channels last, so a grayscale image
  flattens exactly like ``sklearn.datasets.load_digits().images.reshape(n, -1)``);
* a plain callable mapping ``(n, H, W, C)`` float images in [0, 1] to probabilities ``(n, n_classes)``.

into a :class:`ProbaModel` with numpy ``predict_proba`` and torch ``torch_logits`` / ``torch_proba``.
Torch-backed models are *differentiable*: gradients of ``torch_logits`` flow back to the input, which
guided diffusion (DiME) needs. :func:`feature_extractor` gives the penultimate (pre-logits) features of
a timm network, used for Frechet distances and as a perceptual distance.

Convention: torch modules inside skcfx see images as ``(n, C, H, W)`` float32 tensors in [-1, 1]; a
:class:`TimmClassifier` normalises its inputs that way, so its ``module_`` can be used directly on
tensors made by :func:`skcfx._images.to_tensor`.
"""

from __future__ import annotations

import contextlib
import io
import numbers
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from tqdm.auto import tqdm

from ._images import check_image_size, check_images, iter_batches, to_numpy, to_tensor
from ._validation import check_positive_int, make_generator, resolve_device, seed_from_random_state

__all__ = ["TimmClassifier", "ProbaModel", "as_proba_model", "FeatureExtractor", "feature_extractor"]

#: tolerance on probabilities returned by wrapped models (range and row sums)
_PROBA_TOL = 1e-3
#: smallest probability kept before taking logs of a non-differentiable model's output
_MIN_PROBA = 1e-12
#: reserved timm arguments that TimmClassifier derives itself
_DERIVED_KWARGS = ("num_classes", "in_chans", "pretrained")


# --------------------------------------------------------------------------------------------------
# torch helpers


@contextlib.contextmanager
def _seeded_torch(seed, device):
    """Seed torch's global RNG inside the block, then restore the caller's RNG state.

    timm initialises weights and draws dropout masks from the global RNG (it takes no
    ``torch.Generator``), so forking is the only way to make fits reproducible without
    disturbing the user's own random stream.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _module_device(module):
    """The device of a module's first parameter or buffer (CPU when it has none)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_logits(out, n_samples, source):
    """Check that a module returned a ``(n, n_classes)`` logits tensor."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"{source} must return a logits tensor shaped (n, n_classes), got {type(out).__name__}."
        )
    if out.ndim != 2 or out.shape[0] != n_samples or out.shape[1] < 2:
        raise ValueError(
            f"{source} must return logits shaped (n, n_classes) with n_classes >= 2 for "
            f"n={n_samples} images, got shape {tuple(out.shape)}."
        )
    return out


def _batched_outputs(fn, images, device, batch_size):
    """Run ``fn`` over validated NHWC [0, 1] images in batches, without gradients.

    No input validation. ``fn`` maps a ``(b, C, H, W)`` tensor in [-1, 1] to a tensor; the
    concatenated result comes back on the CPU as float32.
    """
    outputs = []
    with torch.no_grad():
        for batch in iter_batches(len(images), batch_size):
            outputs.append(fn(to_tensor(images[batch], device=device)).float().cpu())
    return torch.cat(outputs)


def _softmax_numpy(logits):
    """Float64 probabilities from a logits tensor (float64 so rows sum to 1 tightly)."""
    return torch.softmax(logits.double(), dim=1).numpy()


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
        with _seeded_torch(seed, device):
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


# --------------------------------------------------------------------------------------------------
# the common interface


def _check_proba(proba, n_samples, n_classes, source):
    """Check a model's output: finite ``(n, n_classes)`` probabilities whose rows sum to 1."""
    try:
        proba = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{source} must return a numeric array of probabilities.") from exc
    expected = f"({n_samples}, {n_classes if n_classes is not None else 'n_classes'})"
    if proba.ndim != 2 or proba.shape[0] != n_samples or proba.shape[1] < 2:
        raise ValueError(
            f"{source} must return probabilities shaped (n_images, n_classes) = {expected} with "
            f"n_classes >= 2, got shape {proba.shape}. A binary model that returns P(class 1) "
            "only should return np.column_stack([1 - p, p])."
        )
    if n_classes is not None and proba.shape[1] != n_classes:
        raise ValueError(
            f"{source} returned {proba.shape[1]} classes, expected {n_classes} (shape {expected})."
        )
    if not np.isfinite(proba).all():
        raise ValueError(f"{source} returned NaN or infinite probabilities.")
    if proba.min() < -_PROBA_TOL or proba.max() > 1 + _PROBA_TOL:
        raise ValueError(
            f"{source} returned values outside [0, 1] (range [{proba.min():.4g}, "
            f"{proba.max():.4g}]); return probabilities (e.g. a softmax), not scores or logits."
        )
    sums = proba.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > _PROBA_TOL:
        raise ValueError(
            f"{source} returned probabilities whose rows do not sum to 1 (row {worst} sums to "
            f"{sums[worst]:.4g}); return one probability per class (e.g. a softmax)."
        )
    return proba


def _check_image_shape(image_shape):
    """Validate an ``(H, W, C)`` tuple (or None)."""
    if image_shape is None:
        return None
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise TypeError(f"image_shape must be a tuple (H, W, C) or None, got {image_shape!r}.")
    h, w = check_image_size(tuple(image_shape[:2]), name="image_shape")
    c = image_shape[2]
    if not isinstance(c, numbers.Integral) or isinstance(c, bool) or c not in (1, 3):
        raise ValueError(f"image_shape must end with 1 or 3 channels, got {image_shape!r}.")
    return (h, w, int(c))


def _check_input_range(input_range):
    """Validate ``(low, high)`` with finite ``low < high``."""
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"input_range must be a pair (low, high), got {input_range!r}.") from exc
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"input_range must be finite with low < high, got {input_range!r}.")
    return (low, high)


class ProbaModel:
    """A classifier behind the one interface counterfactual methods use.

    Made by :func:`as_proba_model`; not meant to be built directly. Images go in as numpy
    ``(n, H, W, C)`` float arrays in [0, 1] or as torch ``(n, C, H, W)`` tensors in [-1, 1].

    Attributes
    ----------
    differentiable : bool
        Whether :meth:`torch_logits` carries gradients back to its input.
    image_shape : tuple of (int, int, int) or None
        ``(H, W, C)`` the model accepts, when known.
    batch_size : int
        Images per forward pass in :meth:`predict_proba`.
    """

    differentiable = False

    def __init__(self, *, image_shape=None, batch_size=256, classes=None):
        self.image_shape = _check_image_shape(image_shape)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self._classes = None if classes is None else np.asarray(classes)

    # -- class bookkeeping
    @property
    def n_classes(self):
        """Number of classes (probed once with blank images when not known otherwise)."""
        if self._classes is None:
            if self.image_shape is None:
                raise ValueError(
                    "the number of classes is not known yet: call predict_proba once or pass "
                    "image_shape to as_proba_model."
                )
            self.predict_proba(np.full((2, *self.image_shape), 0.5, dtype=np.float32))
        return len(self._classes)

    @property
    def classes_(self):
        """Class labels in column order (``0 .. n_classes - 1`` unless the model names them)."""
        self.n_classes  # noqa: B018 - make sure the classes are known
        return self._classes

    def _known_n_classes(self):
        return None if self._classes is None else len(self._classes)

    # -- validation
    def _check_numpy(self, images):
        if self.image_shape is None:
            return check_images(images, name="images")
        h, w, c = self.image_shape
        return check_images(images, name="images", image_size=(h, w), n_channels=c)

    def _check_tensor(self, x):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (n, C, H, W) tensor in [-1, 1], got {shape}.")
        if self.image_shape is not None:
            h, w, c = self.image_shape
            if tuple(x.shape[1:]) != (c, h, w):
                raise ValueError(
                    f"x must be shaped (n, {c}, {h}, {w}) for this classifier, got {tuple(x.shape)}."
                )
        return x

    # -- the interface
    def predict_proba(self, images):
        """Probabilities of numpy images ``(n, H, W, C)`` in [0, 1], without gradients.

        Returns
        -------
        proba : ndarray of shape (n, n_classes), dtype float64
        """
        return self._checked_proba(self._check_numpy(images))

    def _checked_proba(self, images):
        """Validated probabilities of validated images; learns ``n_classes`` on first use."""
        proba = _check_proba(
            self._numpy_proba(images), len(images), self._known_n_classes(), self._source
        )
        if self._classes is None:
            self._classes = np.arange(proba.shape[1])
        return proba

    def torch_logits(self, x):
        """Logits (or log-probabilities) of ``(n, C, H, W)`` images in [-1, 1], on ``x``'s device."""
        raise NotImplementedError

    def torch_proba(self, x):
        """Softmax of :meth:`torch_logits`: ``(n, n_classes)`` float32 on ``x``'s device."""
        return torch.softmax(self.torch_logits(x), dim=1)

    def _numpy_proba(self, images):  # pragma: no cover - interface
        raise NotImplementedError


class _TorchProbaModel(ProbaModel):
    """Shared logic of torch-backed (differentiable) models."""

    differentiable = True

    def __init__(self, *, input_range=(-1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.input_range = _check_input_range(input_range)

    def _module_input(self, x):
        """Move ``x`` ([-1, 1]) to the module's device and its expected value range."""
        x = x.to(self.device, dtype=torch.float32)
        low, high = self.input_range
        if (low, high) != (-1.0, 1.0):
            x = low + (x + 1.0) * ((high - low) / 2.0)
        return x

    def torch_logits(self, x):
        """Logits of ``(n, C, H, W)`` images in [-1, 1]; gradients flow back to ``x``."""
        x = self._check_tensor(x)
        logits = _check_logits(self.module(self._module_input(x)), len(x), self._source)
        return logits.to(x.device)

    def _numpy_proba(self, images):
        logits = _batched_outputs(self.torch_logits, images, self.device, self.batch_size)
        return _softmax_numpy(logits)


class _TimmClassifierProba(_TorchProbaModel):
    """A fitted TimmClassifier (pickles through the classifier, so it stays device-portable)."""

    _source = "the TimmClassifier"

    def __init__(self, estimator, **kwargs):
        super().__init__(classes=estimator.classes_, **kwargs)
        self.estimator = estimator

    @property
    def module(self):
        return self.estimator.module_

    @property
    def device(self):
        return self.estimator.device_


class _ModuleProba(_TorchProbaModel):
    """A ``torch.nn.Module`` returning logits."""

    def __init__(self, module, **kwargs):
        n_classes = getattr(module, "num_classes", None)  # timm networks record it
        if isinstance(n_classes, numbers.Integral) and n_classes >= 2:
            kwargs.setdefault("classes", np.arange(n_classes))
        super().__init__(**kwargs)
        self.module = module
        self._source = f"classifier ({type(module).__name__})"

    @property
    def device(self):
        return _module_device(self.module)

    def __getstate__(self):
        state = self.__dict__.copy()
        buffer = io.BytesIO()
        torch.save(state.pop("module"), buffer)
        state["_module_bytes"] = buffer.getvalue()
        return state

    def __setstate__(self, state):
        data = state.pop("_module_bytes")
        self.__dict__.update(state)
        # Map CUDA tensors to the CPU where CUDA is missing, so pickles travel between machines.
        location = None if torch.cuda.is_available() else torch.device("cpu")
        self.module = torch.load(io.BytesIO(data), map_location=location, weights_only=False)


class _NumpyProbaModel(ProbaModel):
    """Models that only take numpy images: not differentiable; torch calls go through numpy."""

    def torch_proba(self, x):
        """Probabilities of ``(n, C, H, W)`` images in [-1, 1], computed via numpy (no gradients)."""
        x = self._check_tensor(x)
        proba = self._checked_proba(to_numpy(x))
        return torch.as_tensor(proba, dtype=torch.float32, device=x.device)

    def torch_logits(self, x):
        """Log-probabilities (valid logits: their softmax is the probabilities); no gradients."""
        return torch.log(self.torch_proba(x).clamp_min(_MIN_PROBA))


class _SklearnProba(_NumpyProbaModel):
    """A fitted scikit-learn classifier on flattened pixels in [0, 1]."""

    def __init__(self, estimator, **kwargs):
        super().__init__(classes=getattr(estimator, "classes_", None), **kwargs)
        self.estimator = estimator
        self._source = f"classifier ({type(estimator).__name__}).predict_proba"
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is not None and self.image_shape is not None:
            if int(np.prod(self.image_shape)) != n_features:
                raise ValueError(
                    f"classifier ({type(estimator).__name__}) was fitted on {n_features} features "
                    f"but images shaped {self.image_shape} flatten to "
                    f"{int(np.prod(self.image_shape))} pixels."
                )

    def _numpy_proba(self, images):
        flat = images.reshape(len(images), -1)
        n_features = getattr(self.estimator, "n_features_in_", None)
        if n_features is not None and flat.shape[1] != n_features:
            raise ValueError(
                f"images flatten to {flat.shape[1]} pixels but the classifier "
                f"({type(self.estimator).__name__}) was fitted on {n_features} features."
            )
        return np.concatenate(
            [self.estimator.predict_proba(flat[b]) for b in iter_batches(len(flat), self.batch_size)]
        )


class _CallableProba(_NumpyProbaModel):
    """A callable mapping ``(n, H, W, C)`` images in [0, 1] to probabilities."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn
        self._source = f"classifier ({getattr(fn, '__name__', type(fn).__name__)})"

    def _numpy_proba(self, images):
        return np.concatenate(
            [np.asarray(self.fn(images[b]), dtype=np.float64)
             for b in iter_batches(len(images), self.batch_size)]
        )


# --------------------------------------------------------------------------------------------------
# factories


_ACCEPTED = (
    "a fitted skcfx.classifiers.TimmClassifier, a torch.nn.Module returning logits (any timm "
    "model), a fitted scikit-learn classifier with predict_proba on flattened pixels (e.g. "
    "LogisticRegression, SVC(probability=True), a Pipeline), or a callable mapping (n, H, W, C) "
    "images in [0, 1] to probabilities"
)


def _check_sklearn_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise NotFittedError(
            f"classifier ({type(estimator).__name__}) is not fitted: fit it on flattened images "
            "(n, H * W * C) with values in [0, 1] first, e.g. clf.fit(X.reshape(len(X), -1), y)."
        ) from exc


def _wrap_timm_classifier(clf, device, kwargs):
    check_is_fitted(clf)
    image_shape = kwargs.pop("image_shape")
    if image_shape is not None and _check_image_shape(image_shape) != clf.image_shape_:
        raise ValueError(
            f"image_shape={tuple(image_shape)} differs from the {clf.image_shape_} images the "
            "TimmClassifier was fitted on."
        )
    if device is not None and resolve_device(device) != clf.device_:
        clf = clf._copy_to(resolve_device(device))
    return _TimmClassifierProba(clf, image_shape=clf.image_shape_, **kwargs)


def as_proba_model(classifier, *, image_shape=None, device=None, input_range=(-1, 1),
                   batch_size=256):
    """Put any supported classifier behind the :class:`ProbaModel` interface.

    Parameters
    ----------
    classifier : object
        One of: a fitted :class:`TimmClassifier`; a ``torch.nn.Module`` returning logits for
        ``(n, C, H, W)`` images (any timm model); a fitted scikit-learn classifier whose
        ``predict_proba`` takes flattened pixels ``images.reshape(n, H * W * C)`` in [0, 1]
        (channels last); a callable mapping ``(n, H, W, C)`` float images in [0, 1] to
        probabilities ``(n, n_classes)``; or a :class:`ProbaModel` (returned unchanged).
    image_shape : tuple of (int, int, int), default=None
        ``(H, W, C)`` of the images to be classified. Enables early checks (and, for callables
        and modules, finding ``n_classes`` at once by a probe on two blank images).
    device : str or torch.device, default=None
        Where a torch model runs. ``None`` keeps it where it is. A ``torch.nn.Module`` is moved
        in place (as ``module.to`` does); a TimmClassifier is copied instead.
    input_range : tuple of (float, float), default=(-1, 1)
        Value range a ``torch.nn.Module`` expects; skcfx images in [-1, 1] are mapped linearly
        onto it (``(0, 1)`` for a network trained on ``ToTensor()`` images). Only for modules.
    batch_size : int, default=256
        Images per forward pass in ``predict_proba``.

    Returns
    -------
    ProbaModel
        ``differentiable`` is True for torch modules and TimmClassifiers: their
        ``torch_logits`` carries gradients to the input. A wrapped ``torch.nn.Module`` is put in
        eval mode.

    Raises
    ------
    TypeError
        For unsupported objects (the message lists what is accepted).
    sklearn.exceptions.NotFittedError
        For an unfitted TimmClassifier or scikit-learn classifier (a ``ValueError``).
    ValueError
        When outputs are not valid probabilities or shapes disagree.

    Examples
    --------
    >>> import numpy as np
    >>> from skcfx.classifiers import as_proba_model
    >>> model = as_proba_model(lambda X: np.tile([0.25, 0.75], (len(X), 1)), image_shape=(8, 8, 1))
    >>> model.n_classes, model.differentiable
    (2, False)
    >>> model.predict_proba(np.zeros((3, 8, 8, 1))).shape
    (3, 2)
    """
    if isinstance(classifier, ProbaModel):
        return classifier
    input_range = _check_input_range(input_range)
    kwargs = {"image_shape": image_shape, "batch_size": batch_size}
    if isinstance(classifier, TimmClassifier):
        return _wrap_timm_classifier(classifier, device, {**kwargs, "input_range": input_range})
    if isinstance(classifier, torch.nn.Module):
        if device is not None:
            classifier.to(resolve_device(device))
        model = _ModuleProba(classifier.eval(), input_range=input_range, **kwargs)
    elif input_range != (-1.0, 1.0):
        raise ValueError(
            "input_range applies to torch modules only; scikit-learn models and callables "
            "receive images in [0, 1]."
        )
    elif hasattr(classifier, "predict_proba") or (
        hasattr(classifier, "fit") and hasattr(classifier, "get_params")
    ):
        model = _wrap_sklearn(classifier, kwargs)
    elif callable(classifier):
        model = _CallableProba(classifier, **kwargs)
    else:
        raise TypeError(f"classifier must be {_ACCEPTED}; got {type(classifier).__name__}.")
    if model.image_shape is not None:
        _probe(model)
    return model


def _probe(model):
    """Classify two blank images now, so a model that cannot handle the shape fails early."""
    try:
        model.predict_proba(np.full((2, *model.image_shape), 0.5, dtype=np.float32))
    except RuntimeError as exc:  # torch errors (wrong channels, too small an image, ...)
        raise ValueError(
            f"{model._source} failed on images shaped {model.image_shape} (H, W, C): {exc}"
        ) from exc


def _wrap_sklearn(estimator, kwargs):
    if not hasattr(estimator, "predict_proba"):
        raise TypeError(
            f"classifier ({type(estimator).__name__}) has no predict_proba; use a probabilistic "
            f"classifier (e.g. SVC(probability=True)). Accepted: {_ACCEPTED}."
        )
    if hasattr(estimator, "fit"):
        _check_sklearn_fitted(estimator)
    return _SklearnProba(estimator, **kwargs)


# --------------------------------------------------------------------------------------------------
# features


class FeatureExtractor:
    """Penultimate (pre-logits) features of a timm network.

    Made by :func:`feature_extractor`. ``__call__`` takes numpy images ``(n, H, W, C)`` in
    [0, 1] and returns float32 features ``(n, n_features)`` without gradients;
    :meth:`torch_features` takes ``(n, C, H, W)`` tensors in [-1, 1] and is differentiable.
    """

    def __init__(self, proba_model):
        self._model = proba_model

    @property
    def image_shape(self):
        return self._model.image_shape

    def torch_features(self, x):
        """Features ``(n, n_features)`` of ``(n, C, H, W)`` images in [-1, 1], on ``x``'s device."""
        model = self._model
        x = model._check_tensor(x)
        module = model.module
        features = module.forward_head(module.forward_features(model._module_input(x)),
                                       pre_logits=True)
        return features.flatten(1).to(x.device)

    def __call__(self, images):
        """Features of numpy images ``(n, H, W, C)`` in [0, 1] as float32 ``(n, n_features)``."""
        images = self._model._check_numpy(images)
        out = _batched_outputs(self.torch_features, images, self._model.device, self._model.batch_size)
        return out.numpy()


def feature_extractor(classifier, *, image_shape=None, device=None, input_range=(-1, 1),
                      batch_size=256):
    """Penultimate features of a TimmClassifier or timm network, for metrics and distances.

    The features are ``module.forward_head(module.forward_features(x), pre_logits=True)``: the
    pooled representation the final linear layer reads.

    Parameters
    ----------
    classifier : TimmClassifier, torch.nn.Module or ProbaModel
        A fitted TimmClassifier, a module with timm's ``forward_features`` / ``forward_head``,
        or a ProbaModel wrapping one of these.
    image_shape, device, input_range, batch_size
        As in :func:`as_proba_model`.

    Returns
    -------
    FeatureExtractor
        Callable on numpy images; ``torch_features`` for differentiable use.

    Examples
    --------
    >>> import timm, numpy as np
    >>> from skcfx.classifiers import feature_extractor
    >>> net = timm.create_model('test_resnet', num_classes=3, in_chans=1)
    >>> features = feature_extractor(net)
    >>> features(np.zeros((2, 16, 16, 1))).shape[0]
    2
    """
    model = as_proba_model(classifier, image_shape=image_shape, device=device,
                           input_range=input_range, batch_size=batch_size)
    module = getattr(model, "module", None)
    if not (callable(getattr(module, "forward_features", None))
            and callable(getattr(module, "forward_head", None))):
        raise TypeError(
            "feature_extractor needs a fitted TimmClassifier or a timm network (a torch.nn.Module "
            f"with forward_features and forward_head), got {type(classifier).__name__}."
        )
    return FeatureExtractor(model)
