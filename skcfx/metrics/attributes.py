"""Attribute-level metrics judged by an external oracle: MNAC and CD.

Both follow DiME (Jeanneret et al., "Diffusion Models for Counterfactual
Explanations", ACCV 2022), which took MNAC from Rodriguez et al. (DiVE,
ICCV 2021) and introduced CD.
"""

import numbers

import numpy as np

from ._common import (
    check_numeric,
    check_probabilities,
    check_scalar,
    pair_with_queries,
    pearson_columns,
)

__all__ = ["mnac", "correlation_difference"]


def mnac(oracle_query, oracle_cf, threshold=0.5):
    r"""Mean Number of Attributes Changed between queries and counterfactuals.

    With an oracle's attribute probabilities :math:`o(x) \in [0, 1]^A`,

    .. math:: \mathrm{MNAC} = \frac{1}{N} \sum_i \sum_{a=1}^{A}
              \big[ [o_a(x_i) > t] \ne [o_a(x'_i) > t] \big]

    over all N counterfactuals, with threshold t. The query attribute
    counts too, so a counterfactual that changes only the query attribute
    scores 1 (as in DiME's evaluation code). Lower is better, above 1.

    Parameters
    ----------
    oracle_query : array-like of shape (n, n_attributes)
        Oracle probabilities (or booleans) on the queries.
    oracle_cf : array-like of shape (n, n_attributes) or (n, k, n_attributes)
        Oracle probabilities on one or k counterfactuals per query.
    threshold : float, default=0.5
        An attribute is present when its probability exceeds it.

    Returns
    -------
    mnac : float

    Examples
    --------
    >>> import numpy as np
    >>> q = np.array([[0.9, 0.1, 0.2]])
    >>> mnac(q, np.array([[0.1, 0.1, 0.8]]))
    2.0
    """
    changed = _attribute_changes(oracle_query, oracle_cf, threshold)
    return float(np.abs(changed).sum(axis=1).mean())


def correlation_difference(
    dataset_labels, query_attribute, oracle_query, oracle_cf, *, threshold=0.5,
    return_correlations=False,
):
    r"""Correlation Difference (CD) between data and counterfactual changes.

    For each attribute a, :math:`c_a` is the Pearson correlation between the
    dataset labels of the query attribute q and of a; :math:`c^M_a` is the
    Pearson correlation, over all counterfactuals, between the oracle's
    changes :math:`\delta_q` and :math:`\delta_a`, where
    :math:`\delta = [o(x') > t] - [o(x) > t] \in \{-1, 0, 1\}^A` (binarised
    as in DiME's code). Then

    .. math:: \mathrm{CD} = \sum_{a=1}^{A} | c_a - c^M_a |

    Low CD means the explainer changes attributes together as often as they
    co-occur in the data (e.g. smiling with mouth slightly open).

    Undefined correlations are handled explicitly: an attribute whose
    dataset labels are constant, or that never changes between queries
    and counterfactuals, has no measurable correlation, so its :math:`c_a`
    or :math:`c^M_a` is taken as 0. If the query attribute's own labels are
    constant, or its change :math:`\delta_q` is the same for every
    counterfactual (e.g. all queries from one class and all flipped), no
    correlation is defined at all and a ValueError is raised: explain
    queries of both classes, as DiME does.

    Parameters
    ----------
    dataset_labels : array-like of shape (n_samples, n_attributes)
        Attribute labels of a reference dataset (0/1, booleans or -1/1:
        Pearson correlation ignores affine rescaling).
    query_attribute : int
        Column of the attribute the counterfactuals were asked to change.
    oracle_query : array-like of shape (n, n_attributes)
        Oracle probabilities on the queries.
    oracle_cf : array-like of shape (n, n_attributes) or (n, k, n_attributes)
        Oracle probabilities on the counterfactuals.
    threshold : float, default=0.5
        Binarisation threshold for the oracle probabilities.
    return_correlations : bool, default=False
        Also return both correlation vectors.

    Returns
    -------
    cd : float
        Returned alone unless `return_correlations`.
    details : dict
        Only with `return_correlations`: ``"cd"``, ``"dataset"`` (the
        :math:`c_a`) and ``"counterfactual"`` (the :math:`c^M_a`), with the
        zeros substituted as above.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    >>> q = np.array([[0.9, 0.9], [0.1, 0.1]])
    >>> cf = np.array([[0.1, 0.9], [0.9, 0.1]])
    >>> correlation_difference(labels, 0, q, cf)
    1.0
    """
    labels = check_numeric(dataset_labels, "dataset_labels", min_ndim=2, max_ndim=2, min_samples=2)
    check_scalar(query_attribute, "query_attribute", kind=numbers.Integral,
                 low=0, high=labels.shape[1] - 1)
    delta = _attribute_changes(oracle_query, oracle_cf, threshold)
    if delta.shape[1] != labels.shape[1]:
        raise ValueError(
            f"dataset_labels has {labels.shape[1]} attributes but the oracle outputs "
            f"{delta.shape[1]}."
        )
    c_data = _correlations_with(labels, query_attribute, "dataset_labels")
    c_cf = _correlations_with(
        delta, query_attribute, "the oracle's changes (oracle_cf - oracle_query)"
    )
    cd = float(np.abs(c_data - c_cf).sum())
    if return_correlations:
        return {"cd": cd, "dataset": c_data, "counterfactual": c_cf}
    return cd


def _attribute_changes(oracle_query, oracle_cf, threshold):
    """Binarised oracle changes, shape (n * k, n_attributes), in {-1, 0, 1}."""
    check_scalar(threshold, "threshold", low=0.0, high=1.0)
    query = check_probabilities(oracle_query, "oracle_query", min_ndim=2, max_ndim=2)
    cf = check_probabilities(oracle_cf, "oracle_cf", min_ndim=2, max_ndim=3)
    query, cf = pair_with_queries(query, cf, ("oracle_query", "oracle_cf"))
    delta = (cf > threshold).astype(np.float64) - (query > threshold)
    return delta.reshape(-1, delta.shape[-1])


def _correlations_with(values, column, name):
    """Pearson correlation of every column with `column`; undefined -> 0."""
    if np.ptp(values[:, column]) == 0:
        raise ValueError(
            f"The query attribute (column {column}) is constant in {name}, so no "
            "correlation with it is defined."
        )
    return np.nan_to_num(pearson_columns(values, values[:, column]), nan=0.0)
