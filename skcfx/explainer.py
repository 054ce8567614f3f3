"""CounterfactualExplainer: one estimator, several counterfactual methods."""

from __future__ import annotations

import copy
import numbers
import time
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._image_sources import as_image_source, iter_source_batches, loader_workers
from ._images import iter_batches, to_numpy, to_tensor
from ._validation import make_generator, resolve_device, seed_from_random_state
from .classifiers import TimmClassifier, as_proba_model
from .encoder import DiffAEEncoder
from .explanation import CounterfactualExplanation
from .methods import CounterfactualMethod, ExplainContext, create_method
from .modes import ModalDirectionFinder

__all__ = ["CounterfactualExplainer"]


def _seeded_clone(estimator, random_state):
    """Clone ``estimator``; every ``random_state`` it leaves unset (nested ones too) gets a seed.

    scikit-learn's ensembles seed their clones the same way. With an integer ``random_state`` on
    the explainer, whatever it fits is then reproducible, even if the user's estimators were
    given without a seed.
    """
    estimator = clone(estimator)
    if random_state is None:
        return estimator
    unset = [key for key, value in estimator.get_params(deep=True).items()
             if (key == "random_state" or key.endswith("__random_state")) and value is None]
    if unset:
        estimator.set_params(**{key: seed_from_random_state(random_state) for key in unset})
    return estimator


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


class CounterfactualExplainer(BaseEstimator):
    """Counterfactual explanations of an image classifier with a diffusion autoencoder.

    ``method='difclue'`` (default) makes one counterfactual per mode of the target class by
    walking the semantic latent of a :class:`DiffAEEncoder` along the directions of a
    :class:`ModalDirectionFinder` (DifCluE). ``method='dime'`` and ``'fastdime'`` make
    counterfactuals by classifier-guided diffusion with the same network (DiME, Jeanneret et al.
    2022, and its fast variant). ``method='dissect'`` learns K concept traversals of the latent
    jointly through the decoder and the classifier (after DISSECT, Ghandeharioun et al. 2022).

    Parameters
    ----------
    encoder : DiffAEEncoder, default=None
        The diffusion autoencoder. A fitted one is reused as is (never retrained); an unfitted one
        is cloned and fitted in :meth:`fit`; ``None`` fits ``DiffAEEncoder(random_state=...)``.
    direction_finder : ModalDirectionFinder, default=None
        Mode finder (DifCluE). Reused when fitted with the encoder's latent width, else cloned
        and fitted on the training latents; ``None`` means ``ModalDirectionFinder()``.
    classifier : object
        The model to explain: a :class:`skcfx.classifiers.TimmClassifier`, a fitted scikit-learn
        classifier with ``predict_proba`` on flattened images, a ``torch.nn.Module`` returning
        logits for ``(n, C, H, W)`` images in [-1, 1] (any timm model), or a callable mapping
        ``(n, H, W, C)`` images in [0, 1] to probabilities. An unfitted TimmClassifier or
        scikit-learn classifier is cloned and fitted on ``(X, y)`` in :meth:`fit`.
    method : str or CounterfactualMethod, default='difclue'
        How counterfactuals are made: a registered name (``'difclue'``, ``'dime'``,
        ``'fastdime'``, ``'dissect'``, or any method added with :func:`skcfx.methods.register_method`; see
        :func:`skcfx.methods.list_methods`), or a method object such as ``DifCluE(alpha=0.5)``
        or ``DiME(n_samples=3)`` to set its options (also reachable as ``method__alpha`` in
        ``set_params``).
    mode_labels : {'labels', 'classifier'}, default='labels'
        Which labels define the modes of each class: the dataset labels ``y`` (as in the DifCluE
        paper) or the explained classifier's own predictions on ``X`` (modes of what the
        classifier calls each class).
    batch_size : int, default=64
        Queries explained at once; bounds memory for large inputs.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Where explanations are computed; ``'auto'`` follows the encoder's device.
    random_state : int, RandomState instance or None, default=None
        Seeds every random draw of :meth:`explain` and every estimator fitted here (encoder,
        direction finder, classifier, and estimators nested in them) whose own ``random_state``
        is None, as scikit-learn's ensembles do with their clones; an int makes :meth:`fit` and
        :meth:`explain` reproducible on the CPU. Estimators given with a ``random_state`` keep it.
    verbose : bool, default=False
        Progress bars.

    Attributes
    ----------
    encoder_ : DiffAEEncoder
    direction_finder_ : ModalDirectionFinder or None
    classifier_ : object
        The explained model (fitted clone when it had to be fitted).
    method_ : CounterfactualMethod
    classes_ : ndarray
        Class labels, in the column order of the classifier's probabilities.
    image_shape_ : tuple
        ``(H, W, C)`` the explainer accepts.

    Examples
    --------
    >>> from skcfx import CounterfactualExplainer, DiffAEEncoder
    >>> from skcfx.classifiers import TimmClassifier
    >>> from skcfx.datasets import load_digits_images
    >>> X, y = load_digits_images(image_size=16)
    >>> y2 = (y == 1) | (y == 7)  # a class with two modes
    >>> explainer = CounterfactualExplainer(
    ...     encoder=DiffAEEncoder(max_steps=5, batch_size=8, random_state=0),
    ...     classifier=TimmClassifier(max_epochs=1, random_state=0), random_state=0,
    ... ).fit(X[:64], y2[:64])
    >>> explanation = explainer.explain(X[64:66])
    >>> explanation.counterfactuals.shape[:2]
    (2, 2)
    """

    _parameter_constraints = {
        "encoder": [DiffAEEncoder, None],
        "direction_finder": [ModalDirectionFinder, None],
        "classifier": "no_validation",
        # Any registered name (skcfx.methods.list_methods()); create_method validates it.
        "method": [str, CounterfactualMethod],
        "mode_labels": [StrOptions({"labels", "classifier"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        encoder=None,
        direction_finder=None,
        classifier=None,
        method="difclue",
        *,
        mode_labels="labels",
        batch_size=64,
        device="auto",
        random_state=None,
        verbose=False,
    ):
        self.encoder = encoder
        self.direction_finder = direction_finder
        self.classifier = classifier
        self.method = method
        self.mode_labels = mode_labels
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def _fit_encoder(self, X):
        encoder = self.encoder if self.encoder is not None else DiffAEEncoder(random_state=self.random_state)
        if _is_fitted(encoder):
            return encoder
        encoder = _seeded_clone(encoder, self.random_state)
        if self.verbose and not encoder.verbose:
            encoder.set_params(verbose=True)
        return encoder.fit(X)

    def _fit_classifier(self, X, y):
        clf = self.classifier
        if clf is None:
            raise ValueError(
                "classifier is required: pass the model to explain (a TimmClassifier, a fitted "
                "scikit-learn classifier, a torch.nn.Module returning logits, or a callable)."
            )
        if isinstance(clf, torch.nn.Module) or not hasattr(clf, "fit"):
            return clf
        if _is_fitted(clf):
            return clf
        clf = _seeded_clone(clf, self.random_state)
        # Fitting a classifier needs the images in memory (pass a fitted one for large collections).
        X = X.numpy(range(len(X)))
        if isinstance(clf, TimmClassifier):
            return clf.fit(X, y)
        # Other scikit-learn classifiers see flattened pixels (the adapter's convention).
        return clf.fit(X.reshape(X.shape[0], -1), y)

    def _latents_and_predictions(self, source, encoder, proba_model):
        """One pass over ``source``: semantic latents and the classifier's predicted class index."""
        Z, pred = [], []
        workers = loader_workers(source, encoder.num_workers)
        for _, images in iter_source_batches(source, encoder.inference_batch_size, num_workers=workers):
            Z.append(encoder.model_.encode(to_tensor(images, encoder.device_)).cpu().numpy())
            pred.append(np.argmax(proba_model.predict_proba(images), axis=1))
        return np.concatenate(Z), np.concatenate(pred)

    def _fit_finder(self, Z, labels):
        finder = self.direction_finder
        if finder is None:
            finder = ModalDirectionFinder(random_state=self.random_state)
        if _is_fitted(finder):
            if finder.n_features_in_ != Z.shape[1]:
                raise ValueError(
                    f"direction_finder was fitted on {finder.n_features_in_}-dimensional latents "
                    f"but the encoder produces {Z.shape[1]}."
                )
            return finder
        return _seeded_clone(finder, self.random_state).fit(Z, labels)

    def fit(self, X, y):
        """Fit what is not fitted yet: encoder, classifier, direction finder, method.

        Parameters
        ----------
        X : images
            Training images in any form :class:`DiffAEEncoder` accepts (arrays, lists of PIL
            images or paths, a folder, a uint8 memory map, a torch Dataset), read a batch at a
            time; only an unfitted classifier needs them in memory to be fitted.
        y : array-like of shape (n,)
            Class labels (for a folder: in the order of its sorted file paths).

        Returns
        -------
        self
        """
        self._validate_params()
        source = as_image_source(X, name="X")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != len(source):
            raise ValueError(f"y must be 1-D with one label per image ({len(source)}), got shape {y.shape}.")
        if np.unique(y).size < 2:
            raise ValueError("y must contain at least two classes.")
        method = create_method(self.method)
        encoder = self._fit_encoder(source)
        if method.needs_unconditional and not encoder.config_.null_latent:
            raise ValueError(
                f"method={method.name!r} needs an unconditional denoiser: fit the encoder with "
                "latent_dropout > 0 (a learned null latent)."
            )
        classifier = self._fit_classifier(source, y)
        device = encoder.device_ if self.device == "auto" else resolve_device(self.device)
        if device != encoder.device_:
            # Work on a copy so the user's fitted encoder stays where it is.
            encoder = copy.deepcopy(encoder)
            encoder.model_.to(device)
            encoder.device_ = device
        proba_model = as_proba_model(classifier, image_shape=source.image_shape, device=device)
        classes = np.asarray(proba_model.classes_)
        unknown = np.setdiff1d(np.unique(y), classes)
        if unknown.size:
            raise ValueError(
                f"y holds labels {unknown.tolist()} that the classifier does not know (classes: {classes.tolist()})."
            )
        if tuple(source.image_shape) != tuple(encoder.image_shape_):
            raise ValueError(f"X images are {source.image_shape} but the encoder was fitted on {encoder.image_shape_}.")
        Z, pred_index = self._latents_and_predictions(source, encoder, proba_model)
        finder = None
        if method.needs_directions:
            labels = y if self.mode_labels == "labels" else classes[pred_index]
            finder = self._fit_finder(Z, labels)
        # The fit-time generator seeds what a method learns (DISSECT's traversals); methods that
        # train through the decoder also get the training images (in the order of Z).
        context = self._context(encoder, finder, proba_model, device, classes,
                                make_generator(seed_from_random_state(self.random_state), device))
        if method.needs_training_images:
            context.training_images = source
        method.fit(context, Z, pred_index)
        # Commit fitted state only once everything succeeded.
        self.encoder_, self.classifier_, self.direction_finder_ = encoder, classifier, finder
        self.proba_model_, self.method_, self.classes_ = proba_model, method, classes
        self.image_shape_ = tuple(source.image_shape)
        self.device_ = device
        return self

    def _context(self, encoder, finder, proba_model, device, classes, generator=None):
        return ExplainContext(
            model=encoder.model_,
            encode_steps=int(encoder.encode_steps),
            decode_steps=int(encoder.decode_steps),
            direction_finder=finder,
            proba_model=proba_model,
            device=device,
            generator=generator,
            class_of_index=classes,
            verbose=bool(self.verbose),
        )

    def __setstate__(self, state):
        # A model fitted on a GPU must explain on a machine without one (the encoder maps itself).
        super().__setstate__(state)
        device = getattr(self, "device_", None)
        if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This CounterfactualExplainer was fitted on {device} but CUDA is not available here; "
                "it now runs on the CPU.", UserWarning, stacklevel=2,
            )
            self.device_ = torch.device("cpu")
            self.proba_model_ = as_proba_model(self.classifier_, image_shape=self.image_shape_, device="cpu")

    # ------------------------------------------------------------------ explaining
    def _resolve_targets(self, target_class, original_proba):
        """Target class indices as an ``(n, n_t)`` array; column 0 is the primary target.

        With ``target_class=None`` every class but the predicted one is a target, most probable
        first.
        """
        n, n_classes = original_proba.shape
        if target_class is None:
            order = np.argsort(-original_proba, axis=1, kind="stable")
            return order[:, 1:]
        target = np.asarray(target_class)
        if target.ndim == 0:
            target = np.repeat(target[None], n)
        if target.ndim != 1 or target.shape[0] != n:
            raise ValueError(
                f"target_class must be None, one class label, or one label per query ({n}), got shape {target.shape}."
            )
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        try:
            return np.array([index[c] for c in target.tolist()], dtype=np.int64)[:, None]
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"target_class {exc.args[0]!r} is not a class of the classifier (classes: {self.classes_.tolist()})."
            ) from None

    def explain(self, X, target_class=None):
        """Counterfactuals for each query.

        Parameters
        ----------
        X : images
            Queries, of the size the explainer was fitted on, in any accepted form (a folder or
            a list of paths is read a batch of ``batch_size`` queries at a time).
        target_class : label, array-like of shape (n,) or None, default=None
            The class each counterfactual should reach. ``None``: every class other than the one
            the classifier predicts (binary: the opposite class).

        Returns
        -------
        CounterfactualExplanation
        """
        check_is_fitted(self, "method_")
        start = time.perf_counter()
        images, original_proba, targets = self._prepare_queries(X, target_class)
        parts, nfe_total = self._generate(self.method_, images, targets, desc=f"explain ({self.method_.name})")
        return self._assemble(images, original_proba, targets, parts, nfe_total, time.perf_counter() - start)

    def importance_curve(self, X, alphas=None, target_class=None):
        """Classifier probability of the target class against the step along each mode's direction.

        Every query is decoded at each step of ``alphas`` along the direction of each of its
        counterfactual slots (the directions :meth:`explain` uses), as a fixed-step DifCluE
        would, and the classifier reads the result: how fast each mode's change convinces it.
        Costs one inversion and one decode per query, slot and step.

        Parameters
        ----------
        X : images
            Queries, of the size the explainer was fitted on.
        alphas : array-like of shape (n_steps,), default=None
            Steps, in the units of ``CounterfactualExplanation.alphas``; default ``0, 0.5, ..., 4``.
        target_class : label, array-like of shape (n,) or None, default=None
            As in :meth:`explain`; the slots are laid out the same way.

        Returns
        -------
        curve : dict
            ``'alphas'`` (n_steps,); ``'proba'`` (n, k, n_steps): probability of each slot's target
            class (NaN for slots without one); ``'mode_ids'`` and ``'cf_target_class'`` (n, k),
            as in the explanation.
        """
        check_is_fitted(self, "method_")
        if "alpha" not in self.method_.get_params():
            raise ValueError(f"importance_curve needs a method that steps along mode directions ('difclue'); "
                             f"this explainer uses {self.method_.name!r}.")
        alphas = np.linspace(0.0, 4.0, 9) if alphas is None else np.asarray(alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or not np.isfinite(alphas).all():
            raise ValueError(f"alphas must be a non-empty 1-D array of finite steps, got {alphas!r}.")
        images, original_proba, targets = self._prepare_queries(X, target_class)
        curves = []
        for alpha in alphas:
            method = copy.deepcopy(self.method_).set_params(alpha=float(alpha))
            parts, nfe = self._generate(method, images, targets, desc=f"importance curve (alpha {alpha:g})")
            step = self._assemble(images, original_proba, targets, parts, nfe, 0.0)
            column = np.clip(step.cf_target_class, 0, None)[..., None]
            p_target = np.take_along_axis(step.cf_proba, column, axis=2)[..., 0]
            curves.append(np.where(step.cf_target_class >= 0, p_target, np.nan))
        return {"alphas": alphas, "proba": np.stack(curves, axis=-1), "mode_ids": step.mode_ids,
                "cf_target_class": step.cf_target_class}

    def _prepare_queries(self, X, target_class):
        """The queries (read a batch at a time), the classifier's probabilities on them, the targets.

        Files are decoded batch by batch straight into the one array the explanation returns
        (``images``); explicit targets are checked before any file is read.
        """
        source = as_image_source(X, name="X", image_shape=self.image_shape_)
        if target_class is not None:
            self._resolve_targets(target_class, np.zeros((len(source), len(self.classes_))))
        images = np.empty((len(source), *self.image_shape_), dtype=np.float32)
        proba = []
        workers = loader_workers(source, getattr(self.encoder_, "num_workers", "auto"))
        for sl, batch in iter_source_batches(source, self.batch_size, num_workers=workers):
            images[sl] = batch
            proba.append(self.proba_model_.predict_proba(batch))
        original_proba = np.concatenate(proba)
        targets = self._resolve_targets(target_class, original_proba)
        if self.method_.needs_directions:
            self._check_targets_have_modes(targets)
        return images, original_proba, targets

    def _generate(self, method, images, targets, desc):
        """Run ``method`` over the queries in batches; returns the per-batch parts and total NFE."""
        generator = make_generator(seed_from_random_state(self.random_state), self.device_)
        context = self._context(self.encoder_, self.direction_finder_, self.proba_model_, self.device_,
                                self.classes_, generator)
        parts, nfe_total = [], 0.0
        with tqdm(total=images.shape[0], desc=desc, unit="image", disable=not self.verbose) as progress:
            for sl in iter_batches(images.shape[0], self.batch_size):
                x_0 = to_tensor(images[sl], self.device_)
                out = method.generate(context, x_0, targets[sl])
                shape = out.counterfactuals.shape[:2] + images.shape[1:]
                parts.append((to_numpy(out.counterfactuals.flatten(0, 1)).reshape(shape),
                              out.cf_target, out.alphas, out.mode_ids, out.info))
                nfe_total += out.n_function_evals
                progress.update(x_0.shape[0])
        return parts, nfe_total

    def _check_targets_have_modes(self, targets):
        finder_classes = set(np.asarray(self.direction_finder_.classes_).tolist())
        missing = sorted({self.classes_[t] for t in np.unique(targets) if t >= 0} - finder_classes, key=str)
        if missing:
            raise ValueError(
                f"target_class {missing} has no modes: the direction finder was fitted on classes "
                f"{sorted(finder_classes, key=str)}."
            )

    def _assemble(self, images, original_proba, targets, parts, nfe_total, wall_time):
        k = max(p[0].shape[1] for p in parts)
        n = images.shape[0]

        def pad(arr, fill):
            if arr.shape[1] == k:
                return arr
            widths = [(0, 0), (0, k - arr.shape[1])] + [(0, 0)] * (arr.ndim - 2)
            return np.pad(arr, widths, constant_values=fill)

        cfs = np.concatenate([pad(p[0], 0.0) for p in parts])
        # padding slots hold the query itself
        cf_target = np.concatenate([pad(p[1], -1) for p in parts])
        empty = cf_target < 0
        cfs[empty] = np.broadcast_to(images[:, None], cfs.shape)[empty]
        alphas = np.concatenate([pad(p[2], np.nan) for p in parts])
        mode_ids = np.concatenate([pad(p[3], -1) for p in parts])
        cf_proba = self.proba_model_.predict_proba(cfs.reshape((n * k,) + images.shape[1:])).reshape(n, k, -1)
        success = (np.argmax(cf_proba, axis=2) == cf_target) & ~empty
        n_cf = max(int((~empty).sum()), 1)
        infos = [p[4] for p in parts]
        # Per-batch statistics, averaged with the batch sizes as weights.
        weights = [p[1].shape[0] for p in parts]
        info = {key: float(np.average([i[key] for i in infos], weights=weights)) for key in infos[0]} if infos[0] else {}
        info.update(method_params={k_: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                                   for k_, v in self.method_.get_params().items()})
        return CounterfactualExplanation(
            images=images,
            counterfactuals=cfs.astype(np.float32, copy=False),
            success=success,
            original_proba=original_proba,
            cf_proba=cf_proba,
            target_class=targets[:, 0],
            cf_target_class=cf_target,
            alphas=alphas,
            mode_ids=mode_ids,
            classes=self.classes_,
            n_function_evals=nfe_total / n_cf,
            wall_time_s=wall_time,
            method=self.method_.name,
            info=info,
        )
