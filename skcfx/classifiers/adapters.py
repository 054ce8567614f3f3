"""Adapters that put any classifier behind one interface (:class:`ProbaModel`)."""

from __future__ import annotations

import io
import numbers

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .._images import check_image_size, check_images, iter_batches, to_numpy
from .._validation import check_positive_int, resolve_device
from ._common import _batched_outputs, _check_logits, _module_device, _softmax_numpy
from .timm import TimmClassifier

__all__ = ["ProbaModel", "as_proba_model", "FeatureExtractor", "feature_extractor"]

#: tolerance on probabilities returned by wrapped models (range and row sums)
_PROBA_TOL = 1e-3
#: smallest probability kept before taking logs of a non-differentiable model's output
_MIN_PROBA = 1e-12


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
