"""Mode recovery: do the discovered modes match known sub-classes?"""

from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ._common import check_labels

__all__ = ["mode_recovery"]


def mode_recovery(modes, true_subclasses):
    r"""Agreement between discovered modes and known sub-classes.

    Reports the adjusted Rand index (Hubert & Arabie, 1985) and the
    normalised mutual information (arithmetic normalisation, as in
    scikit-learn) between the two partitions. Both are invariant to
    renaming the modes, so a permutation of the true labels scores 1.
    DifCluE evaluates its modes this way on classes made by mixing known
    sub-classes (e.g. two CelebA attributes, or two digits).

    .. math:: \mathrm{ARI} = \frac{RI - E[RI]}{\max RI - E[RI]}, \qquad
              \mathrm{NMI} = \frac{I(M; S)}{(H(M) + H(S)) / 2}

    Parameters
    ----------
    modes : array-like of shape (n,)
        Mode id of every sample, e.g. ``ModalDirectionFinder.predict(Z)``.
    true_subclasses : array-like of shape (n,)
        Known sub-class of every sample.

    Returns
    -------
    result : dict
        ``"ari"`` (float, 1 for identical partitions, about 0 for random
        ones, can be negative) and ``"nmi"`` (float in [0, 1]).

    Examples
    --------
    >>> res = mode_recovery([0, 0, 1, 1], ["b", "b", "a", "a"])
    >>> res["ari"], res["nmi"]
    (1.0, 1.0)
    """
    modes = check_labels(modes, "modes")
    true_subclasses = check_labels(true_subclasses, "true_subclasses")
    if modes.shape != true_subclasses.shape:
        raise ValueError(
            f"modes and true_subclasses must have the same length, got "
            f"{modes.shape[0]} and {true_subclasses.shape[0]}."
        )
    return {
        "ari": float(adjusted_rand_score(true_subclasses, modes)),
        "nmi": float(normalized_mutual_info_score(true_subclasses, modes)),
    }
