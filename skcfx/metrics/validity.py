"""Validity: do the counterfactuals reach what they were made for?

Flip rate asks the explained classifier; percent conversion asks an external
oracle whether each mode's counterfactual shows that mode's attribute.
"""

import numpy as np

from ._common import check_labels, check_numeric, check_scalar

__all__ = ["flip_rate", "percent_conversion"]


def flip_rate(cf_pred_or_proba, target_class):
    r"""Share of counterfactuals the classifier assigns to their target class.

    .. math:: \mathrm{FR} = \frac{1}{N} \sum_{i} [\hat y(x'_i) = y^{target}_i]

    Used as the validity measure of DiME (Jeanneret et al., "Diffusion Models
    for Counterfactual Explanations", ACCV 2022) and most counterfactual papers.

    Parameters
    ----------
    cf_pred_or_proba : array-like
        Either predicted labels (integer, boolean or string dtype) shaped
        ``(n,)`` or ``(n, k)``, or class scores (float dtype: probabilities
        or logits, their argmax is used) shaped ``(n, n_classes)`` or
        ``(n, k, n_classes)``, e.g. ``CounterfactualExplanation.cf_proba``.
        The dtype decides: floats are always read as scores.
    target_class : int, str or array-like of shape (n,)
        Target class of every query (shared by its k counterfactuals).
        With scores, targets are column indices in ``[0, n_classes)``.

    Returns
    -------
    rate : float
        In [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> proba = np.array([[[0.9, 0.1], [0.3, 0.7]], [[0.2, 0.8], [0.4, 0.6]]])
    >>> flip_rate(proba, target_class=[1, 1])
    0.75
    """
    pred, n_classes = _predicted_labels(cf_pred_or_proba)
    target = _check_targets(target_class, pred, n_classes)
    return float(np.mean(pred == target))


def percent_conversion(oracle_pred, mode_labels_expected, *, threshold=0.5):
    r"""Per mode, the share of counterfactuals showing that mode's attribute.

    For mode :math:`k` with expected oracle label :math:`a_k`,

    .. math:: \mathrm{PC}_k = \frac{1}{n} \sum_i [o(x'_{ik}) = a_k],
              \qquad \mathrm{PC} = \frac{1}{K} \sum_k \mathrm{PC}_k

    where :math:`o` is an external oracle. Introduced by DifCluE (the
    positive class mixes two attributes; each mode's counterfactual of a
    negative query should show its own attribute; DifCluE reports a mean of
    0.83, DISSECT 0.53).

    Parameters
    ----------
    oracle_pred : array-like
        Either oracle labels (integer, boolean or string dtype) of shape
        ``(n, k)``, one per counterfactual; or oracle attribute
        probabilities (float dtype) of shape ``(n, k, n_attributes)``, in
        which case counterfactual ``(i, k)`` is converted when the
        probability of attribute ``mode_labels_expected[k]`` exceeds
        `threshold` (multi-label oracles such as CelebA's).
    mode_labels_expected : array-like of shape (k,) or (n, k)
        Expected oracle label (or attribute index, for probabilities) of
        every mode, or of every counterfactual.
    threshold : float, default=0.5
        Binarisation threshold for probabilities.

    Returns
    -------
    result : dict
        ``"per_mode"``: ndarray of shape (k,); ``"mean"``: float, the
        unweighted mean over modes.

    Examples
    --------
    >>> import numpy as np
    >>> pred = np.array([[0, 1], [0, 0], [1, 1], [0, 1]])
    >>> res = percent_conversion(pred, [0, 1])
    >>> res["per_mode"].tolist(), res["mean"]
    ([0.75, 0.75], 0.75)
    """
    check_scalar(threshold, "threshold", low=0.0, high=1.0)
    if np.asarray(oracle_pred).dtype.kind == "f":
        converted = _converted_from_proba(oracle_pred, mode_labels_expected, threshold)
    else:
        pred = check_labels(oracle_pred, "oracle_pred", ndim=2)
        expected = _expected_per_cf(mode_labels_expected, pred.shape)
        converted = pred == expected
    per_mode = converted.mean(axis=0)
    return {"per_mode": per_mode, "mean": float(per_mode.mean())}


def _predicted_labels(cf_pred_or_proba):
    """Return the predicted labels and the number of classes (None for labels)."""
    arr = np.asarray(cf_pred_or_proba)
    if arr.dtype.kind == "f":
        scores = check_numeric(arr, "cf_pred_or_proba", min_ndim=2, max_ndim=3)
        if scores.shape[-1] < 2:
            raise ValueError(
                "cf_pred_or_proba holds float scores, so its last axis must index at "
                f"least 2 classes; got shape {scores.shape}. Pass integer labels to "
                "give predictions."
            )
        return scores.argmax(axis=-1), scores.shape[-1]
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"cf_pred_or_proba with labels must be (n,) or (n, k), got shape {arr.shape}."
        )
    return check_labels(arr, "cf_pred_or_proba", ndim=arr.ndim), None


def _check_targets(target_class, pred, n_classes):
    target = np.asarray(target_class)
    if target.ndim == 0:
        target = np.full(pred.shape[0], target)
    target = check_labels(target, "target_class", ndim=1)
    if target.shape[0] != pred.shape[0]:
        raise ValueError(
            f"target_class must have one entry per query ({pred.shape[0]}), "
            f"got {target.shape[0]}."
        )
    if n_classes is not None:
        if target.dtype.kind not in "iu" or target.min() < 0 or target.max() >= n_classes:
            raise ValueError(
                f"target_class must hold class indices in [0, {n_classes}) when "
                "cf_pred_or_proba holds scores."
            )
    return target.reshape(target.shape + (1,) * (pred.ndim - 1))


def _expected_per_cf(mode_labels_expected, shape):
    expected = np.asarray(mode_labels_expected)
    if expected.shape not in ((shape[1],), shape):
        raise ValueError(
            f"mode_labels_expected must have shape ({shape[1]},) or {shape}, "
            f"got {expected.shape}."
        )
    return np.broadcast_to(expected, shape)


def _converted_from_proba(oracle_pred, mode_labels_expected, threshold):
    proba = check_numeric(oracle_pred, "oracle_pred", min_ndim=3, max_ndim=3)
    if proba.min() < 0.0 or proba.max() > 1.0:
        raise ValueError("oracle_pred holds floats, so they must be probabilities in [0, 1].")
    expected = _expected_per_cf(mode_labels_expected, proba.shape[:2])
    n_attributes = proba.shape[2]
    valid = expected.dtype.kind in "iu" and expected.min() >= 0
    if not valid or expected.max() >= n_attributes:
        raise ValueError(
            "mode_labels_expected must hold attribute indices in "
            f"[0, {n_attributes}) when oracle_pred holds probabilities."
        )
    chosen = np.take_along_axis(proba, expected[..., None].astype(np.intp), axis=2)
    return chosen[..., 0] > threshold

