"""The interface every counterfactual method implements, and the registry of methods by name.

A method is a small scikit-learn-style object (``get_params`` / ``set_params``, so the explainer's
``set_params(method__alpha=0.5)`` reaches it) with two hooks:

``fit(context, Z, y)``
    Learn what the method needs from training latents (DifCluE: nothing beyond the fitted
    direction finder; DiME: nothing). Called by :meth:`CounterfactualExplainer.fit`. A method
    with ``needs_training_images = True`` (DISSECT) also finds the training images as
    ``context.training_images``, and ``context.generator`` seeds what it learns.
``generate(context, x_0, targets)``
    Produce counterfactuals for one batch of queries. ``x_0`` is a ``(n, C, H, W)`` tensor in
    [-1, 1] on the explainer's device; ``targets`` is an int array ``(n, n_t)`` of target class
    *indices* (columns of the classifier's probabilities), padded with -1. Returns a
    :class:`MethodOutput`.

Methods never validate user input (the explainer did), never see numpy images and never touch an
estimator's private state: the diffusion autoencoder reaches them as a torch-level
:class:`skcfx.diffusion.DiffAE` (``context.model``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator

__all__ = ["ExplainContext", "MethodOutput", "CounterfactualMethod", "register_method", "create_method", "list_methods",
           "layout_slots"]


@dataclass
class ExplainContext:
    """What a method may use while explaining (built by the explainer; no validation inside).

    Attributes
    ----------
    model : skcfx.diffusion.DiffAE
        The diffusion autoencoder on tensors (encode / invert / decode / denoiser), on ``device``.
    encode_steps : int
        DDIM inversion steps the encoder was configured with.
    decode_steps : int
        DDIM decoding steps the encoder was configured with.
    direction_finder : ModalDirectionFinder or None
        Fitted mode finder (DifCluE only).
    proba_model : skcfx.classifiers.ProbaModel
        The explained classifier behind one interface (``torch_proba``, ``torch_logits`` when
        differentiable).
    device : torch.device
    generator : torch.Generator
        Source of all randomness (on ``device``).
    class_of_index : ndarray
        Class label of each column of the classifier's probabilities.
    verbose : bool
    training_images : skcfx._image_sources.ImageSource or None
        The training images, in the order of the latents ``Z`` given to ``fit`` (read a batch at
        a time with ``training_images.numpy(indices)``). Set only in :meth:`fit` and only for
        methods with ``needs_training_images = True`` (they train through the decoder and need
        each image's own inverted noise); None otherwise.
    """

    model: object
    encode_steps: int
    decode_steps: int
    direction_finder: object
    proba_model: object
    device: torch.device
    generator: torch.Generator
    class_of_index: np.ndarray
    verbose: bool = False
    training_images: object = None


@dataclass
class MethodOutput:
    """Counterfactuals for one batch of ``n`` queries with ``k`` slots each.

    Attributes
    ----------
    counterfactuals : torch.Tensor of shape (n, k, C, H, W), in [-1, 1]
    cf_target : ndarray of shape (n, k), int
        Target class index of each slot (-1 for padding).
    alphas : ndarray of shape (n, k), float
        Step along the slot's direction (NaN when not applicable).
    mode_ids : ndarray of shape (n, k), int
        Global mode index of each slot (-1 when not applicable).
    n_function_evals : float
        Total denoiser evaluations spent on the batch (per image, summed over images).
    info : dict
        Extra per-batch statistics (JSON-serialisable).
    """

    counterfactuals: torch.Tensor
    cf_target: np.ndarray
    alphas: np.ndarray
    mode_ids: np.ndarray
    n_function_evals: float
    info: dict


class CounterfactualMethod(BaseEstimator):
    """Base class of counterfactual methods (see module docstring)."""

    #: name used by ``CounterfactualExplainer(method=...)``
    name = None
    #: whether the method needs gradients of the classifier
    needs_gradients = False
    #: whether the method needs a fitted ModalDirectionFinder
    needs_directions = False
    #: whether the method needs an unconditional denoiser (a null latent)
    needs_unconditional = False
    #: whether ``fit`` needs the training images themselves (``context.training_images``), not
    #: only their latents
    needs_training_images = False

    def fit(self, context, Z, y):
        """Learn from training latents ``Z`` and labels ``y`` (default: nothing)."""
        return self

    def _check_gradients(self, context):
        """Raise a clear error when ``needs_gradients`` and the classifier has none."""
        proba = context.proba_model
        if self.needs_gradients and not getattr(proba, "differentiable", False):
            source = getattr(proba, "_source", type(proba).__name__)
            raise ValueError(
                f"method={self.name!r} needs gradients of the classifier, but {source} is not "
                "differentiable: pass a TimmClassifier or a torch.nn.Module returning logits."
            )

    def generate(self, context, x_0, targets):  # pragma: no cover - interface
        raise NotImplementedError


_REGISTRY = {}


def register_method(cls):
    """Class decorator: make ``cls`` available by ``cls.name``.

    ``CounterfactualExplainer(method=cls.name)`` then accepts it: the registry is the one list
    of method names. Registering another class under a taken name replaces it, with a warning.
    """
    if not (isinstance(cls, type) and issubclass(cls, CounterfactualMethod)):
        raise TypeError(f"register_method needs a CounterfactualMethod subclass, got {cls!r}.")
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError("a registered method needs a non-empty string `name`.")
    previous = _REGISTRY.get(cls.name)
    if previous is not None and previous is not cls:
        warnings.warn(f"method {cls.name!r} ({previous.__qualname__}) is replaced by {cls.__qualname__}.",
                      UserWarning, stacklevel=2)
    _REGISTRY[cls.name] = cls
    return cls


def list_methods():
    """Names of the registered methods."""
    return sorted(_REGISTRY)


def create_method(method):
    """Turn a registered name (see :func:`list_methods`) or a method object into a fresh method object."""
    if isinstance(method, CounterfactualMethod):
        from sklearn.base import clone

        return clone(method)
    if isinstance(method, str):
        if method not in _REGISTRY:
            raise ValueError(f"method must be one of {list_methods()} or a CounterfactualMethod, got {method!r}.")
        return _REGISTRY[method]()
    raise TypeError(
        f"method must be a string in {list_methods()} or a CounterfactualMethod instance, got {type(method).__name__}."
    )


def layout_slots(x_0, query_of_pair, images, cf_target, alphas, mode_ids):
    """Lay per-pair results out as ``(n, k)`` slots, query by query, in pair order.

    Parameters
    ----------
    x_0 : torch.Tensor of shape (n, C, H, W)
        The queries; padding slots hold the query itself.
    query_of_pair : ndarray of shape (m,)
        Query index of each generated counterfactual.
    images : torch.Tensor of shape (m, C, H, W)
    cf_target, alphas, mode_ids : ndarray of shape (m,)

    Returns
    -------
    counterfactuals, cf_target, alphas, mode_ids
        Shapes (n, k, C, H, W), (n, k), (n, k), (n, k) with k the most pairs of any query.
    """
    n = x_0.shape[0]
    counts = np.bincount(query_of_pair, minlength=n)
    k = int(counts.max()) if counts.size else 0
    out = x_0[:, None].expand(n, k, *x_0.shape[1:]).clone()
    out_target = np.full((n, k), -1, dtype=np.int64)
    out_alpha = np.full((n, k), np.nan)
    out_modes = np.full((n, k), -1, dtype=np.int64)
    # Position of each pair among its query's pairs.
    order = np.argsort(query_of_pair, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty_like(query_of_pair)
    slot[order] = np.arange(len(order)) - starts[query_of_pair[order]]
    out[query_of_pair, slot] = images
    out_target[query_of_pair, slot] = cf_target
    out_alpha[query_of_pair, slot] = alphas
    out_modes[query_of_pair, slot] = mode_ids
    return out, out_target, out_alpha, out_modes
