"""Edits, not templates; counterfactuals, not adversarial examples.

:func:`edit_specificity` asks whether the counterfactuals of one mode keep what is particular to
each query (an *edit*) or look alike whatever the query (a *template* of the mode).
:func:`independent_validity` asks whether a flip of the explained classifier is shared by an
independently trained classifier, which an adversarial perturbation of the explained model
usually is not.
"""

import numpy as np
from scipy.spatial.distance import cdist

from ._common import check_labels, check_numeric, flatten_samples

__all__ = ["edit_specificity", "independent_validity"]


def independent_validity(independent_pred, target_class, flipped=None):
    r"""Share of flipped counterfactuals that an independent classifier also assigns to the target.

    .. math:: \mathrm{IV} = \frac{\sum_i [f(x'_i) = y^{t}_i]\,[g(x'_i) = y^{t}_i]}
                                 {\sum_i [f(x'_i) = y^{t}_i]}

    where :math:`f` is the explained classifier and :math:`g` a classifier trained independently
    (another architecture and seed, never used while generating). A counterfactual that flips
    :math:`f` but not :math:`g` changed something only :math:`f` reacts to: closer to an
    adversarial example than to a change of the class. This is the flip rate of DiME (Jeanneret
    et al., ACCV 2022) asked of a second classifier, restricted to the counterfactuals that
    flipped the first; Jeanneret et al. make the same point by also reporting validity with an
    oracle.

    Parameters
    ----------
    independent_pred : array-like
        The independent classifier's output on the counterfactuals, as for
        :func:`~skcfx.metrics.flip_rate`: labels (integer, boolean or string dtype) of shape
        ``(n,)`` or ``(n, k)``, or scores (float dtype: probabilities or logits, argmax taken) of
        shape ``(n, n_classes)`` or ``(n, k, n_classes)``.
    target_class : int, str or array-like of shape (n,) or (n, k)
        Target of every query (shared by its k counterfactuals) or of every counterfactual. With
        scores, targets are column indices in ``[0, n_classes)``.
    flipped : array-like of bool, shape (n,) or (n, k), or None, default=None
        Which counterfactuals flipped the explained classifier (e.g.
        ``CounterfactualExplanation.success``). None counts every counterfactual, which is then
        the plain flip rate of the independent classifier.

    Returns
    -------
    rate : float
        In [0, 1]; NaN when no counterfactual flipped (the share is undefined, and a table should
        say so rather than show 0 or 1).

    Examples
    --------
    >>> import numpy as np
    >>> pred = np.array([[1, 0], [1, 1]])         # independent classifier's labels
    >>> flipped = np.array([[True, True], [False, True]])
    >>> independent_validity(pred, 1, flipped)    # 2 of the 3 flipped ones
    0.6666666666666666
    """
    pred, n_classes = _labels(independent_pred, "independent_pred")
    target = _targets(target_class, pred, n_classes)
    if flipped is None:
        mask = np.ones(pred.shape, dtype=bool)
    else:
        mask = _mask(flipped, pred.shape, "flipped")
    if not mask.any():
        return float("nan")
    return float(np.mean(pred[mask] == target[mask]))


def edit_specificity(queries, counterfactuals, mode_ids=None, *, metric="l1"):
    r"""How much the counterfactuals of one mode follow their queries rather than one template.

    For each mode :math:`m` with counterfactuals :math:`x'_{i}` of queries :math:`x_i`,
    :math:`i \in I_m`:

    .. math:: \mathrm{spread}_m = \frac{\operatorname{mean}_{i<j} d(x'_i, x'_j)}
                                       {\operatorname{mean}_{i<j} d(x_i, x_j)}, \qquad
              \mathrm{closer}_m = \operatorname{mean}_i [d(x'_i, x_i) < d(x'_i, \bar x'_m)]

    with :math:`\bar x'_m` the mean counterfactual of the mode. ``spread`` near 1: the
    counterfactuals differ from each other as much as the queries do (each keeps its query's
    slant, stroke, position); near 0: the mode's counterfactuals are one template whatever the
    query. ``closer`` is the share of counterfactuals nearer their own query than the mode's
    mean counterfactual (0 for a template). Edits that change what the mode needs and keep the
    rest, as DifCluE (Jain et al., 2025) and DiME (Jeanneret et al., ACCV 2022) intend, score
    high on both; a high score alone is not enough (an unchanged query scores 1 and 1), so read
    it beside the flip rate and the conversion.

    Parameters
    ----------
    queries : array-like of shape (n, *item_shape)
        The queries, e.g. images ``(n, H, W, C)`` or latents ``(n, d)``.
    counterfactuals : array-like of shape (n, k, *item_shape)
        k counterfactuals per query (``CounterfactualExplanation.counterfactuals``).
    mode_ids : array-like of int, shape (k,) or (n, k), or None, default=None
        Mode of each counterfactual (``CounterfactualExplanation.mode_ids``); entries < 0 (slots
        that do not apply) are left out. None: column ``j`` is mode ``j`` (for DiME, the
        ``j``-th sample of every query). Keep only the counterfactuals you want to judge (e.g.
        set the failed ones to -1).
    metric : {'l1', 'l2'}, default='l1'
        Distance: per-element mean absolute difference (as :func:`~skcfx.metrics.proximity`), or
        root mean squared difference.

    Returns
    -------
    result : dict
        ``"spread_ratio"`` (float: mean of the per-mode ratios), ``"closer_to_query"`` (float:
        share over all counterfactuals judged), ``"per_mode"`` (dict mode id -> dict with
        ``spread_ratio``, ``closer_to_query``, ``cf_spread``, ``query_spread``, ``n``). Modes
        with fewer than 2 counterfactuals are left out of the spread (NaN there) but count for
        ``closer_to_query``.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.array([[0.0], [1.0], [2.0]])
    >>> template = np.full((3, 1, 1), 5.0)              # every CF the same
    >>> edit_specificity(q, template)["spread_ratio"]
    0.0
    >>> edit_specificity(q, (q + 0.1)[:, None])["spread_ratio"]   # CFs follow their queries
    1.0
    """
    q = check_numeric(queries, "queries", min_ndim=2)
    cf = check_numeric(counterfactuals, "counterfactuals", min_ndim=3)
    if cf.ndim != q.ndim + 1 or cf.shape[0] != q.shape[0] or cf.shape[2:] != q.shape[1:]:
        raise ValueError(
            f"counterfactuals must have shape {(q.shape[0], 'k', *q.shape[1:])} to match queries of "
            f"shape {q.shape}, got {cf.shape}."
        )
    if metric not in ("l1", "l2"):
        raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}.")
    n, k = cf.shape[:2]
    modes = _mode_matrix(mode_ids, n, k)
    q_flat, cf_flat = flatten_samples(q), cf.reshape(n, k, -1)
    per_mode, closer_all = {}, []
    for m in np.unique(modes[modes >= 0]):
        rows, cols = np.nonzero(modes == m)
        x, xc = q_flat[rows], cf_flat[rows, cols]
        center = xc.mean(axis=0, keepdims=True)
        closer = _distance(xc, x, metric, paired=True) < _distance(xc, center, metric)[:, 0]
        closer_all.append(closer)
        cf_spread, q_spread = _mean_pairwise(xc, metric), _mean_pairwise(x, metric)
        if np.isnan(cf_spread) or q_spread == 0:
            ratio = float("nan")
        else:
            ratio = cf_spread / q_spread
        per_mode[int(m)] = {"spread_ratio": ratio, "closer_to_query": float(closer.mean()),
                            "cf_spread": cf_spread, "query_spread": q_spread, "n": int(len(rows))}
    if not per_mode:
        raise ValueError("mode_ids leaves no counterfactual to judge (every entry is < 0).")
    ratios = [v["spread_ratio"] for v in per_mode.values() if not np.isnan(v["spread_ratio"])]
    return {"spread_ratio": float(np.mean(ratios)) if ratios else float("nan"),
            "closer_to_query": float(np.concatenate(closer_all).mean()),
            "per_mode": per_mode}


# ------------------------------------------------------------------------------------------ helpers


def _labels(values, name):
    """Labels from labels or scores, and the number of classes (None for labels)."""
    arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
    if arr.dtype.kind == "f":
        scores = check_numeric(arr, name, min_ndim=2, max_ndim=3)
        if scores.shape[-1] < 2:
            raise ValueError(
                f"{name} holds float scores, so its last axis must index at least 2 classes; got "
                f"shape {scores.shape}. Pass integer labels to give predictions."
            )
        return scores.argmax(axis=-1), scores.shape[-1]
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} with labels must be (n,) or (n, k), got shape {arr.shape}.")
    return check_labels(arr, name, ndim=arr.ndim), None


def _targets(target_class, pred, n_classes):
    target = np.asarray(target_class)
    if target.ndim == 0:
        target = np.full(pred.shape[0], target)
    target = check_labels(target, "target_class", ndim=target.ndim)
    if target.shape == pred.shape[:1] and pred.ndim == 2:
        target = np.broadcast_to(target[:, None], pred.shape)
    if target.shape != pred.shape:
        raise ValueError(
            f"target_class must have shape {pred.shape[:1]} (one per query) or {pred.shape} (one per "
            f"counterfactual), got {target.shape}."
        )
    if n_classes is not None and (target.dtype.kind not in "iu" or target.min() < 0
                                  or target.max() >= n_classes):
        raise ValueError(
            f"target_class must hold class indices in [0, {n_classes}) when independent_pred "
            "holds scores."
        )
    return target


def _mask(flipped, shape, name):
    arr = np.asarray(flipped.detach().cpu().numpy() if hasattr(flipped, "detach") else flipped)
    if arr.dtype.kind != "b":
        raise TypeError(f"{name} must be a boolean mask, got dtype {arr.dtype}.")
    if arr.shape == shape[:1] and len(shape) == 2:
        arr = np.broadcast_to(arr[:, None], shape)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}.")
    return arr


def _mode_matrix(mode_ids, n, k):
    if mode_ids is None:
        return np.broadcast_to(np.arange(k), (n, k))
    arr = np.asarray(mode_ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"mode_ids must hold integers, got dtype {arr.dtype}.")
    if arr.shape == (k,):
        arr = np.broadcast_to(arr, (n, k))
    if arr.shape != (n, k):
        raise ValueError(f"mode_ids must have shape ({k},) or ({n}, {k}), got {arr.shape}.")
    return arr


def _distance(a, b, metric, paired=False):
    """Per-element L1 (mean absolute) or L2 (root mean square) distances; rows of a vs rows of b."""
    d = a.shape[1]
    if paired:
        diff = a - b
        return np.abs(diff).mean(axis=1) if metric == "l1" else np.sqrt((diff**2).mean(axis=1))
    if metric == "l1":
        return cdist(a, b, "cityblock") / d
    return cdist(a, b, "euclidean") / np.sqrt(d)


def _mean_pairwise(x, metric):
    if len(x) < 2:
        return float("nan")
    dist = _distance(x, x, metric)
    return float(dist[np.triu_indices(len(x), 1)].mean())
