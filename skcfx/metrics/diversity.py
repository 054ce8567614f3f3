"""Diversity sigma_L: how different the k counterfactuals of one query are."""

from itertools import combinations

import numpy as np

from ._common import check_numeric, flatten_samples

__all__ = ["diversity"]


def diversity(counterfactuals, distance=None):
    r"""Mean pairwise distance between the counterfactuals of each query.

    .. math:: \sigma_L = \frac{1}{n} \sum_{i=1}^{n} \binom{k}{2}^{-1}
              \sum_{j < l} d(x'_{ij}, x'_{il})

    DiME (Jeanneret et al., ACCV 2022) uses the LPIPS distance between
    counterfactuals from several seeds; for DifCluE the k counterfactuals
    are the k modes. Higher means more diverse. Keep only the
    counterfactuals you want to compare (e.g. the successful ones) before
    calling.

    Parameters
    ----------
    counterfactuals : array-like of shape (n, k, *item_shape)
        k >= 2 counterfactuals per query (images ``(n, k, H, W, C)``, or
        features/latents ``(n, k, d)``).
    distance : callable or None, default=None
        ``distance(a, b) -> (m,)`` for two batches ``a`` and ``b`` of shape
        ``(m, *item_shape)``, returning one distance per row (e.g. LPIPS or a
        feature distance wrapped to numpy). None uses the per-element mean
        absolute difference (L1 in pixel space, as in
        :func:`~skcfx.metrics.proximity`).

    Returns
    -------
    sigma_l : float

    Examples
    --------
    >>> import numpy as np
    >>> cf = np.stack([np.zeros((1, 4)), np.ones((1, 4)), np.full((1, 4), 0.5)], axis=1)
    >>> diversity(cf)  # pairs: 1.0, 0.5, 0.5
    0.6666666666666666
    """
    cf = check_numeric(counterfactuals, "counterfactuals", min_ndim=3)
    if cf.shape[1] < 2:
        raise ValueError(
            f"counterfactuals must hold k >= 2 counterfactuals per query on axis 1, "
            f"got shape {cf.shape}."
        )
    if distance is None:
        distance = _mean_abs_difference
    elif not callable(distance):
        raise TypeError(f"distance must be callable or None, got {type(distance).__name__}.")
    # One call per pair of columns keeps memory at two (n, ...) batches.
    pair_means = [
        _checked_distances(distance(cf[:, j], cf[:, l]), cf.shape[0])
        for j, l in combinations(range(cf.shape[1]), 2)
    ]
    return float(np.mean(pair_means))


def _mean_abs_difference(a, b):
    return np.abs(flatten_samples(a) - flatten_samples(b)).mean(axis=1)


def _checked_distances(values, n):
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"distance must return {n} finite distances (one per row), got "
            f"{values.size} value(s)."
        )
    return values
