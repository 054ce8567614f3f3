"""DISSECT's concept metrics: importance, distinctness, substitutability.

From Ghandeharioun et al., "DISSECT: Disentangled Simultaneous Explanations
via Concept Traversals", ICLR 2022. Realism and stability, the other two
DISSECT criteria, live in :mod:`skcfx.metrics.realism` and
:mod:`skcfx.metrics.proximity`.
"""

import numpy as np
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.metrics import accuracy_score, precision_score, recall_score

from ._common import (
    check_labels,
    check_numeric,
    check_probabilities,
    check_scalar,
    cross_validated_predictions,
    pair_with_queries,
    pearson_columns,
)

__all__ = ["importance", "distinctness", "substitutability"]


def importance(targets, outputs, *, eps=1e-6):
    r"""Agreement between intended and obtained classifier probabilities.

    Along a traversal of growing perturbation, `targets` p are the
    probabilities the explainer aimed at and `outputs` q those the
    classifier gives to the generated images. DISSECT reports

    - ``R``: Pearson correlation of p and q;
    - ``rho``: Spearman rank correlation of p and q (Pearson of average ranks);
    - ``KL``: :math:`\frac{1}{N} \sum_i \mathrm{KL}(\mathrm{Bern}(p_i) \,\|\,
      \mathrm{Bern}(q_i)) = \frac{1}{N} \sum_i p_i \log\frac{p_i}{q_i} +
      (1 - p_i) \log\frac{1 - p_i}{1 - q_i}`, with p and q clipped to
      :math:`[\epsilon, 1 - \epsilon]` so that 0 and 1 stay finite;
    - ``MSE``: :math:`\frac{1}{N} \sum_i (p_i - q_i)^2`.

    Parameters
    ----------
    targets : array-like of probabilities
        Intended probabilities p, any shape (flattened).
    outputs : array-like of probabilities
        Classifier probabilities q, same shape as `targets`.
    eps : float, default=1e-6
        Clipping for the KL term.

    Returns
    -------
    result : dict
        ``"R"``, ``"rho"``, ``"KL"``, ``"MSE"`` (floats). ``R`` and ``rho``
        are NaN when p or q is constant: a correlation is undefined there,
        while KL and MSE still are.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.1, 0.4, 0.7, 0.9])
    >>> res = importance(p, p)
    >>> res["R"], res["KL"], res["MSE"]
    (1.0, 0.0, 0.0)
    """
    check_scalar(eps, "eps", low=0.0, high=0.5)
    p = check_probabilities(targets, "targets").ravel()
    q = check_probabilities(outputs, "outputs").ravel()
    if np.shape(targets) != np.shape(outputs):
        raise ValueError(
            f"targets and outputs must have the same shape, got {np.shape(targets)} "
            f"and {np.shape(outputs)}."
        )
    return {
        "R": _pearson(p, q),
        "rho": _pearson(rankdata(p), rankdata(q)),
        "KL": _mean_bernoulli_kl(p, q, eps),
        "MSE": float(np.mean((p - q) ** 2)),
    }


def distinctness(queries, counterfactuals, concept_ids, *, classifier=None, cv=5,
                 random_state=None):
    """How well the concept a counterfactual changed can be told from its edit.

    DISSECT trains a classifier on (query, counterfactual) pairs to predict
    which concept produced the counterfactual: distinct concepts make
    different edits and are easy to tell apart. Here the classifier sees
    the flattened difference ``counterfactual - query`` and is evaluated
    out of fold; every counterfactual of one query stays in the same fold,
    so a test query is never seen in training.

    Parameters
    ----------
    queries : array-like of shape (n, *item_shape)
        Query images (or features).
    counterfactuals : array-like of shape (n, *item_shape) or (n, k, *item_shape)
        One or k counterfactuals per query.
    concept_ids : array-like of shape (n,), (k,) or (n, k)
        Concept (mode, direction) behind each counterfactual: per
        counterfactual for ``(n, ...)`` counterfactuals; per column or per
        counterfactual for ``(n, k, ...)`` ones.
    classifier : scikit-learn classifier or None, default=None
        Cloned before use. None uses ``LogisticRegression(max_iter=2000)``.
    cv : int or cross-validation splitter, default=5
        Number of stratified folds grouped by query, or a splitter
        (receives ``groups``, the query index).
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds when `cv` is an int.

    Returns
    -------
    result : dict
        ``"accuracy"``, ``"precision_micro"``, ``"precision_macro"``,
        ``"recall_micro"``, ``"recall_macro"`` (floats). For single-label
        predictions the micro averages equal the accuracy; DISSECT reports
        them all.
    """
    q = check_numeric(queries, "queries", min_ndim=2)
    cf = check_numeric(counterfactuals, "counterfactuals", min_ndim=2)
    q, cf = pair_with_queries(q, cf, ("queries", "counterfactuals"))
    labels = _concept_labels(concept_ids, cf.shape[:2])
    n, k = cf.shape[:2]
    edits = (cf - q).reshape(n * k, -1)
    groups = np.repeat(np.arange(n), k)
    pred = cross_validated_predictions(
        edits, labels, groups, classifier=classifier, cv=cv, random_state=random_state,
        label_name="concept_ids",
    )
    return _classification_report(labels, pred)


def substitutability(counterfactuals, cf_targets, X_test, y_test, make_classifier,
                     original_score):
    """Score of a classifier trained only on counterfactuals, tested on real data.

    DISSECT trains the explained classifier's architecture on
    counterfactuals labelled with their target class and tests it on real
    held-out data: if the counterfactuals carry the class evidence, the
    score approaches that of the original classifier.

    .. math:: \\mathrm{ratio} = \\frac{\\mathrm{score}(f_{cf}; X_{test},
              y_{test})}{\\mathrm{score}(f; X_{test}, y_{test})}

    Parameters
    ----------
    counterfactuals : array-like of shape (*lead_shape, *item_shape)
        Training inputs; the leading axes matching `cf_targets` (``(m,)`` or
        ``(n, k)``) are flattened into one sample axis.
    cf_targets : array-like of shape (m,) or (n, k)
        Target class of every counterfactual.
    X_test : array-like of shape (n_test, *item_shape)
        Real test inputs, passed to the classifier as given.
    y_test : array-like of shape (n_test,)
    make_classifier : callable or estimator
        A callable (or class) returning a new unfitted classifier, or an
        unfitted estimator instance (cloned with ``sklearn.base.clone``,
        deep-copied if it is not a scikit-learn estimator). It needs ``fit`` and ``score``
        (accuracy for scikit-learn classifiers), and must accept the
        inputs as given (e.g. ``TimmClassifier`` for images).
    original_score : float
        Score of the original classifier on the same test set, > 0.

    Returns
    -------
    result : dict
        ``"score"`` (float) and ``"ratio"`` (score / original_score).
    """
    check_scalar(original_score, "original_score", low=0.0)
    if original_score == 0:
        raise ValueError("original_score must be > 0 to form a ratio.")
    X_train, y_train = _flatten_lead(counterfactuals, cf_targets)
    y_test = check_labels(y_test, "y_test")
    if len(X_test) != y_test.shape[0]:
        raise ValueError(
            f"X_test and y_test must have the same length, got {len(X_test)} and "
            f"{y_test.shape[0]}."
        )
    model = _new_classifier(make_classifier)
    score = float(model.fit(X_train, y_train).score(X_test, y_test))
    return {"score": score, "ratio": score / float(original_score)}


def _pearson(a, b):
    return float(pearson_columns(a[:, None], b)[0])


def _mean_bernoulli_kl(p, q, eps):
    p = np.clip(p, eps, 1.0 - eps)
    q = np.clip(q, eps, 1.0 - eps)
    kl = p * np.log(p / q) + (1.0 - p) * np.log((1.0 - p) / (1.0 - q))
    return float(np.mean(kl))


def _concept_labels(concept_ids, shape):
    """Concept labels flattened to (n * k,), from (n,), (k,) or (n, k) input."""
    n, k = shape
    ids = np.asarray(concept_ids)
    allowed = {(n, k)} | ({(n,)} if k == 1 else {(k,)})
    if ids.shape not in allowed:
        raise ValueError(
            f"concept_ids must have shape {' or '.join(map(str, sorted(allowed)))} to "
            f"match the counterfactuals, got {ids.shape}."
        )
    if ids.shape == (n,):
        ids = ids[:, None]
    ids = check_labels(np.broadcast_to(ids, shape).ravel(), "concept_ids")
    return ids


def _classification_report(labels, pred):
    report = {"accuracy": float(accuracy_score(labels, pred))}
    for average in ("micro", "macro"):
        report[f"precision_{average}"] = float(
            precision_score(labels, pred, average=average, zero_division=0)
        )
        report[f"recall_{average}"] = float(
            recall_score(labels, pred, average=average, zero_division=0)
        )
    return report


def _flatten_lead(counterfactuals, cf_targets):
    targets = np.asarray(cf_targets)
    if targets.ndim not in (1, 2):
        raise ValueError(f"cf_targets must be (m,) or (n, k), got shape {targets.shape}.")
    cf = check_numeric(counterfactuals, "counterfactuals", min_ndim=targets.ndim + 1)
    if cf.shape[:targets.ndim] != targets.shape:
        raise ValueError(
            f"The leading axes of counterfactuals {cf.shape} must match cf_targets "
            f"{targets.shape}."
        )
    y = check_labels(targets.ravel(), "cf_targets")
    X = cf.reshape(y.shape[0], *cf.shape[targets.ndim:]).astype(np.float32)
    return X, y


def _new_classifier(make_classifier):
    if hasattr(make_classifier, "fit") and not isinstance(make_classifier, type):
        # Never train the caller's object; non-sklearn objects are deep-copied.
        model = clone(make_classifier, safe=False)
    elif callable(make_classifier):
        model = make_classifier()
    else:
        raise TypeError(
            "make_classifier must be an unfitted estimator or a callable returning "
            f"one, got {type(make_classifier).__name__}."
        )
    if not (hasattr(model, "fit") and hasattr(model, "score")):
        raise TypeError("make_classifier must give a classifier with fit and score methods.")
    return model

