"""Input checks and small numerical helpers shared by the metric modules.

Every metric validates its own arguments with these helpers so that error
messages always name the argument the user passed.
"""

import numbers

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict


def check_numeric(x, name, *, min_ndim=1, max_ndim=None, min_samples=1):
    """Return `x` as a finite float64 array or raise naming `name`.

    Parameters
    ----------
    x : array-like
        Numeric or boolean values.
    name : str
        Argument name used in error messages.
    min_ndim, max_ndim : int or None
        Allowed number of dimensions.
    min_samples : int, default=1
        Minimum length of the first axis.

    Returns
    -------
    arr : ndarray of float64
        A new array.
    """
    arr = _asarray(x, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}.")
    _check_ndim(arr, name, min_ndim, max_ndim)
    if arr.shape[0] < min_samples:
        raise ValueError(
            f"{name} must have at least {min_samples} sample(s) along its first axis, "
            f"got shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def check_probabilities(x, name, *, min_ndim=1, max_ndim=None):
    """Like :func:`check_numeric`, and every value must lie in [0, 1]."""
    arr = check_numeric(x, name, min_ndim=min_ndim, max_ndim=max_ndim)
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] (apply a sigmoid/softmax to "
            f"logits first), got values in [{arr.min():.4g}, {arr.max():.4g}]."
        )
    return arr


def check_labels(y, name, *, ndim=1, min_samples=1):
    """Return `y` as a non-empty array of hashable labels with `ndim` dimensions."""
    arr = _asarray(y, name)
    if arr.dtype.kind not in "biuUSO":
        raise TypeError(
            f"{name} must hold integer, boolean or string labels, got dtype {arr.dtype}."
        )
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}.")
    if arr.size == 0 or arr.shape[0] < min_samples:
        raise ValueError(
            f"{name} must hold at least {min_samples} label(s), got shape {arr.shape}."
        )
    return arr


def check_scalar(value, name, *, kind=numbers.Real, low=None, high=None):
    """Check a scalar parameter's type and closed bounds, returning it unchanged."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}.")
    return value


def pair_with_queries(queries, counterfactuals, names):
    """Align queries with one or several counterfactuals per query.

    Parameters
    ----------
    queries : ndarray of shape (n, *item_shape)
    counterfactuals : ndarray of shape (n, *item_shape) or (n, k, *item_shape)
    names : tuple of str
        Argument names of `queries` and `counterfactuals`, for messages.

    Returns
    -------
    queries, counterfactuals : ndarray of shape (n, k, *item_shape)
        `queries` is repeated along the new axis; k = 1 for a single
        counterfactual per query.
    """
    q_name, cf_name = names
    item_shape = queries.shape[1:]
    n = queries.shape[0]
    if counterfactuals.shape == queries.shape:
        counterfactuals = counterfactuals[:, None]
    elif (
        counterfactuals.ndim != queries.ndim + 1
        or counterfactuals.shape[0] != n
        or counterfactuals.shape[2:] != item_shape
    ):
        raise ValueError(
            f"{cf_name} must have shape {(n, *item_shape)} or {(n, 'k', *item_shape)} "
            f"to match {q_name} of shape {queries.shape}, got {counterfactuals.shape}."
        )
    queries = np.broadcast_to(queries[:, None], counterfactuals.shape)
    return queries, counterfactuals


def pearson_columns(X, y):
    """Pearson correlation of every column of `X` with the vector `y`.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)

    Returns
    -------
    r : ndarray of shape (d,)
        NaN where a column of `X`, or `y`, is constant: the correlation is
        undefined there. Callers decide how to treat those entries.
    """
    # A column counts as constant only when all its values are identical;
    # centring by a float mean would leave rounding noise instead of zeros.
    constant = np.ptp(X, axis=0) == 0
    if np.ptp(y) == 0:
        constant[:] = True
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (Xc * yc[:, None]).sum(axis=0) / np.sqrt(
            (Xc**2).sum(axis=0) * (yc**2).sum()
        )
    r = np.clip(r, -1.0, 1.0)
    r[constant] = np.nan
    return r


def flatten_samples(x):
    """Reshape ``(n, ...)`` to ``(n, prod(...))`` without copying when possible."""
    return x.reshape(x.shape[0], -1)


def check_classifier(classifier, name="classifier"):
    """Return an unfitted copy of `classifier`, or the default one when None.

    The default is a logistic regression, small enough to train on raw pixels
    of tiny images and a common probe in the DISSECT evaluation.
    """
    if classifier is None:
        return LogisticRegression(max_iter=2000)
    if not (hasattr(classifier, "fit") and hasattr(classifier, "predict")):
        raise TypeError(
            f"{name} must be a scikit-learn style classifier with fit and predict, "
            f"got {type(classifier).__name__}."
        )
    return clone(classifier)


def cross_validated_predictions(features, labels, groups, *, classifier, cv, random_state,
                                label_name="labels"):
    """Out-of-fold predictions of a classifier, folds never splitting a group.

    Parameters
    ----------
    features : ndarray of shape (m, d)
    labels : ndarray of shape (m,)
    groups : ndarray of shape (m,)
        Samples sharing a group (e.g. counterfactuals of one query) always
        fall in the same fold, so a classifier cannot recognise a test query
        it has seen during training.
    classifier : estimator or None
    cv : int or cross-validation splitter
    random_state : int, RandomState instance or None
        Shuffles the folds when `cv` is an int.
    label_name : str, default="labels"
        Argument name of the labels, for messages.

    Returns
    -------
    predictions : ndarray of shape (m,)
    """
    estimator = check_classifier(classifier)
    splitter = _check_cv(cv, labels, groups, random_state, label_name)
    return cross_val_predict(estimator, features, labels, groups=groups, cv=splitter)


def _check_cv(cv, labels, groups, random_state, label_name):
    if hasattr(cv, "split"):
        return cv
    check_scalar(cv, "cv", kind=numbers.Integral, low=2)
    _, class_counts = np.unique(labels, return_counts=True)
    if class_counts.size < 2:
        raise ValueError(f"{label_name} must hold at least two classes to tell apart.")
    n_groups = np.unique(groups).size
    if cv > class_counts.min() or cv > n_groups:
        raise ValueError(
            f"cv={cv} folds need at least {cv} samples of every class and {cv} "
            f"queries; got {class_counts.min()} in the smallest class and {n_groups} "
            "queries."
        )
    return StratifiedGroupKFold(n_splits=cv, shuffle=True, random_state=random_state)


def _asarray(x, name):
    if hasattr(x, "detach"):
        # A torch tensor: take it to host memory rather than failing on CUDA.
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a rectangular array-like, got {type(x).__name__}."
        ) from exc


def _check_ndim(arr, name, min_ndim, max_ndim):
    too_few = arr.ndim < min_ndim
    too_many = max_ndim is not None and arr.ndim > max_ndim
    if too_few or too_many:
        wanted = f"{min_ndim}" if max_ndim == min_ndim else f"{min_ndim} to {max_ndim}"
        if max_ndim is None:
            wanted = f"at least {min_ndim}"
        raise ValueError(f"{name} must have {wanted} dimension(s), got shape {arr.shape}.")
