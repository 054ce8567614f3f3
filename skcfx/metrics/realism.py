"""Realism: do counterfactuals look like real images?

Frechet distance between feature distributions (FID, Heusel et al., NeurIPS
2017) on any frozen feature extractor, and a real-vs-generated classifier
(DISSECT, Ghandeharioun et al., ICLR 2022).
"""

import itertools
import numbers

import numpy as np
from sklearn.metrics import accuracy_score

from ._common import (
    check_numeric,
    check_scalar,
    cross_validated_predictions,
    flatten_samples,
)

__all__ = ["frechet_distance", "extract_features", "realism"]


def frechet_distance(features_a, features_b):
    r"""Frechet distance between Gaussian fits of two feature sets.

    With means :math:`\mu_a, \mu_b` and covariances :math:`\Sigma_a,
    \Sigma_b` (unbiased, rows are samples),

    .. math:: d^2 = \lVert \mu_a - \mu_b \rVert_2^2 + \mathrm{Tr}\big(
              \Sigma_a + \Sigma_b - 2 (\Sigma_a \Sigma_b)^{1/2} \big)

    the FID of Heusel et al. (NeurIPS 2017) when the features are
    Inception pool3 activations; DiME and DifCluE report it between real
    images and (successful) counterfactuals. Pass features from any frozen
    extractor, e.g. :func:`extract_features`.

    :math:`\mathrm{Tr}(\Sigma_a \Sigma_b)^{1/2}` is computed as the sum of the
    square roots of the eigenvalues of the symmetric PSD matrix
    :math:`\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2}`, which has the same
    eigenvalues as :math:`\Sigma_a \Sigma_b`. Unlike a general matrix square
    root this needs no regularisation for singular covariances (fewer
    samples than dimensions) and has no imaginary part to discard. Rounding
    noise is clipped, so the result is never negative.

    Parameters
    ----------
    features_a : array-like of shape (n_a, d)
    features_b : array-like of shape (n_b, d)
        At least 2 samples each. The estimate is biased upwards for small
        sets: compare scores computed with the same sample sizes.

    Returns
    -------
    distance : float
        The squared Frechet distance (the number usually reported as FID).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    >>> round(frechet_distance(a, a), 10)
    0.0
    >>> round(frechet_distance(a, a + [3.0, 4.0]), 10)
    25.0
    """
    a = check_numeric(features_a, "features_a", min_ndim=2, max_ndim=2, min_samples=2)
    b = check_numeric(features_b, "features_b", min_ndim=2, max_ndim=2, min_samples=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features_a and features_b must have the same number of features, got "
            f"{a.shape[1]} and {b.shape[1]}."
        )
    mean_term = float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2))
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    cross = _trace_sqrt_product(cov_a, cov_b)
    return max(0.0, mean_term + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * cross)


def extract_features(images, model, *, batch_size=64, device=None, input_range=(-1.0, 1.0)):
    """Features of images from a frozen model, computed in batches.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, C) or (n, H, W), or list
        Any image batch skcfx accepts: float values in [0, 1] or uint8 in
        0..255, channels last (1 or 3 channels), or a list of PIL images or
        file paths. Validated by ``skcfx._images.check_images`` (one float32
        copy in memory; features are computed batch by batch).
    model : torch.nn.Module or callable
        - A ``torch.nn.Module`` receives float32 NCHW tensors whose values
          are mapped linearly from [0, 1] to `input_range`. If it has
          ``forward_features`` (any timm model), the features are
          ``forward_head(forward_features(x), pre_logits=True)`` (timm's
          pooled pre-logits); without a usable ``forward_head``, a
          4-D ``forward_features(x)`` is averaged over H and W and any
          other output is flattened. Otherwise ``model(x)`` is used,
          flattened. The module is run in
          eval mode without gradients and its train/eval mode is restored.
        - Any other callable receives numpy batches ``(b, H, W, C)`` float32
          in [0, 1] (`input_range` does not apply) and returns an
          array-like (numpy or torch) with b rows.
    batch_size : int, default=64
        Images per forward pass; only one batch is on the device at a time.
    device : str, torch.device or None, default=None
        For a module only. None runs on the device of the module's
        parameters. Otherwise ('cpu', 'cuda', 'cuda:N', 'auto') the module is
        moved there in place, as ``module.to(device)`` does.
    input_range : tuple of float, default=(-1.0, 1.0)
        Value range the module expects; (-1, 1) is skcfx's convention for
        its own networks. Use (0, 1) for a model that normalises inside;
        wrap a model that needs ImageNet mean/std normalisation in a module
        that applies it. Grayscale models get C = 1; repeat the channel
        yourself (``np.repeat(images, 3, axis=-1)``) for RGB models.

    Returns
    -------
    features : ndarray of shape (n, n_features), float32

    Examples
    --------
    >>> import numpy as np
    >>> images = np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)
    >>> extract_features(images, lambda x: x.mean(axis=(1, 2)), batch_size=2).shape
    (5, 3)
    """
    from skcfx._images import check_images, iter_batches

    images = check_images(images, name="images")
    check_scalar(batch_size, "batch_size", kind=numbers.Integral, low=1)
    if _is_module(model):
        run_batch = _module_runner(model, device, input_range)
    elif callable(model):
        run_batch = model
    else:
        raise TypeError(
            f"model must be a torch.nn.Module or a callable, got {type(model).__name__}."
        )
    chunks = [
        _as_feature_rows(run_batch(images[batch]), images[batch].shape[0])
        for batch in iter_batches(images.shape[0], batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)


def realism(real, generated, *, classifier=None, cv=5, random_state=None):
    """Cross-validated accuracy of a classifier telling real from generated.

    DISSECT (Ghandeharioun et al., ICLR 2022) trains a post-hoc classifier
    to separate real images from generated ones: an accuracy near 0.5
    (chance, for balanced sets) means the generated images are hard to tell
    apart, i.e. realistic; near 1 means they are easy to spot. The
    classifier sees flattened inputs, so pass raw pixels or features of
    any extractor.

    Parameters
    ----------
    real : array-like of shape (n_real, ...)
    generated : array-like of shape (n_generated, ...)
        Same shape per sample as `real`.
    classifier : scikit-learn classifier or None, default=None
        Cloned before use. None uses ``LogisticRegression(max_iter=2000)``.
    cv : int or cross-validation splitter, default=5
        Number of stratified, shuffled folds, or a splitter.
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds when `cv` is an int.

    Returns
    -------
    accuracy : float
        Out-of-fold accuracy over all samples. Balance the two sets: with
        unbalanced sets, chance is the share of the larger one.
    """
    real = check_numeric(real, "real", min_ndim=2)
    generated = check_numeric(generated, "generated", min_ndim=2)
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(
            f"real and generated must have the same shape per sample, got "
            f"{real.shape[1:]} and {generated.shape[1:]}."
        )
    features = np.concatenate([flatten_samples(real), flatten_samples(generated)])
    labels = np.repeat([1, 0], [real.shape[0], generated.shape[0]])
    groups = np.arange(labels.size)
    pred = cross_validated_predictions(
        features, labels, groups, classifier=classifier, cv=cv, random_state=random_state
    )
    return float(accuracy_score(labels, pred))


def _trace_sqrt_product(cov_a, cov_b):
    """Tr((cov_a cov_b)^(1/2)) for symmetric PSD matrices, via eigh."""
    eigval_a, eigvec_a = np.linalg.eigh(cov_a)
    sqrt_a = (eigvec_a * np.sqrt(np.clip(eigval_a, 0.0, None))) @ eigvec_a.T
    middle = sqrt_a @ cov_b @ sqrt_a
    # Symmetrise away rounding so eigvalsh sees an exactly symmetric matrix.
    eigval = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    return float(np.sqrt(np.clip(eigval, 0.0, None)).sum())


def _is_module(model):
    import torch

    return isinstance(model, torch.nn.Module)


def _module_runner(module, device, input_range):
    """A function numpy batch -> torch features for `module`, on the right device."""
    import torch

    from skcfx._images import to_tensor
    from skcfx._validation import resolve_device

    low, high = _check_input_range(input_range)
    target = _module_device(module) if device is None else resolve_device(device)
    module.to(target)

    def run(batch):
        # to_tensor gives [-1, 1]; map that affinely onto the module's range.
        x = low + (high - low) * (to_tensor(batch, device=target) + 1.0) / 2.0
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                return _module_features(module, x)
        finally:
            module.train(was_training)

    return run


def _module_features(module, x):
    """Pooled features: timm's pre-logits when available, else a global pool."""
    if not hasattr(module, "forward_features"):
        return module(x)
    h = module.forward_features(x)
    if hasattr(module, "forward_head"):
        try:
            return module.forward_head(h, pre_logits=True)
        except TypeError:
            pass  # a forward_head without timm's pre_logits argument
    # Without a head, only NCHW maps have an unambiguous spatial pool.
    return h.mean(dim=(2, 3)) if h.ndim == 4 else h


def _as_feature_rows(out, n):
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    out = np.asarray(out, dtype=np.float64)
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(
            f"model must return one feature row per image ({n}), got shape {out.shape}."
        )
    out = out.reshape(n, -1)
    if not np.all(np.isfinite(out)):
        raise ValueError("model returned NaN or infinite features.")
    return out


def _check_input_range(input_range):
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"input_range must be a pair of floats, got {input_range!r}.") from exc
    if not low < high:
        raise ValueError(f"input_range must satisfy low < high, got {input_range!r}.")
    return low, high


def _module_device(module):
    import torch

    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device
