"""Proximity and stability: how far counterfactuals move from their inputs."""

import numpy as np

from ._common import check_numeric, flatten_samples, pair_with_queries

__all__ = ["proximity", "stability"]

_NORMS = ("l1", "l2")


def proximity(images, counterfactuals, norm="l1", *, per_sample=False):
    r"""Mean distance between each query and its counterfactual(s).

    Distances are normalised by the number of elements D of one image, so
    they do not grow with the image size and stay in the inputs' units:

    .. math:: d_{L1}(x, x') = \frac{1}{D} \lVert x - x' \rVert_1, \qquad
              d_{L2}(x, x') = \frac{1}{\sqrt{D}} \lVert x - x' \rVert_2

    (mean absolute error and root-mean-square error). Proximity/sparsity of
    this kind is a standard counterfactual desideratum (Wachter et al.,
    2017); DiME (Jeanneret et al., ACCV 2022) uses the L1 term as its
    distance loss.

    Parameters
    ----------
    images : array-like of shape (n, *image_shape)
        Queries, e.g. ``(n, H, W, C)`` in [0, 1]; any shape and units work
        (latents too), as long as counterfactuals share them.
    counterfactuals : array-like of shape (n, *image_shape) or (n, k, *image_shape)
        One or k counterfactuals per query.
    norm : {'l1', 'l2'}, default='l1'
    per_sample : bool, default=False
        Return every distance instead of their mean.

    Returns
    -------
    distance : float or ndarray of shape (n,) or (n, k)
        The mean over all counterfactuals, or every distance (shaped like
        the leading axes of `counterfactuals`) when `per_sample` is True.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((2, 2, 2, 1))
    >>> proximity(x, x + 0.5)
    0.5
    >>> proximity(x, np.stack([x, x + 1.0], axis=1), per_sample=True).tolist()
    [[0.0, 1.0], [0.0, 1.0]]
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}.")
    images = check_numeric(images, "images", min_ndim=2)
    cf = check_numeric(counterfactuals, "counterfactuals", min_ndim=2)
    queries, paired = pair_with_queries(images, cf, ("images", "counterfactuals"))
    diff = flatten_samples((paired - queries).reshape(-1, *images.shape[1:]))
    if norm == "l1":
        dist = np.abs(diff).mean(axis=1)
    else:
        dist = np.sqrt((diff**2).mean(axis=1))
    dist = dist.reshape(paired.shape[:2])
    if per_sample:
        return dist if cf.ndim > images.ndim else dist[:, 0]
    return float(dist.mean())


def stability(cf_a, cf_b):
    r"""Pixel-wise agreement of two sets of counterfactuals of the same queries.

    Typically `cf_a` explains x and `cf_b` explains a slightly perturbed
    :math:`x + \mathcal{N}(0, 0.01)`; a stable explainer returns nearly the
    same counterfactuals (DISSECT, Ghandeharioun et al., ICLR 2022):

    .. math:: \mathrm{MAE} = \mathrm{mean} |a - b|, \qquad
              \mathrm{MSE} = \mathrm{mean} (a - b)^2

    Parameters
    ----------
    cf_a, cf_b : array-like of the same shape (n, ...)
        Counterfactuals (any units; float images in [0, 1] in skcfx).

    Returns
    -------
    result : dict
        ``"mae"`` and ``"mse"``, floats.

    Examples
    --------
    >>> import numpy as np
    >>> stability(np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 1), 0.5))
    {'mae': 0.5, 'mse': 0.25}
    """
    a = check_numeric(cf_a, "cf_a")
    b = check_numeric(cf_b, "cf_b")
    if a.shape != b.shape:
        raise ValueError(f"cf_a and cf_b must have the same shape, got {a.shape} and {b.shape}.")
    diff = a - b
    return {"mae": float(np.abs(diff).mean()), "mse": float((diff**2).mean())}
