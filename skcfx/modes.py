"""Modes of each class in latent space and a direction towards each mode (DifCluE).

DifCluE explains a classifier with several counterfactuals per query, one per *mode* of the
target class: the latents of every class are clustered (K-means in the paper; here by default a
tied-covariance Gaussian mixture, which measured better) and, for every cluster, a
linear classifier separating that cluster from the other classes gives a direction. Moving a
query's latent along a mode's direction and decoding it shows what would have to change for the
query to look like that mode of the target class.

:class:`ModalDirectionFinder` is the scikit-learn estimator that does the clustering and fits the
directions. It only needs latents and class labels, so the number of modes can be changed without
retraining the autoencoder.
"""

import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from ._mode_summary import ModeSummary, summarise_modes

__all__ = ["ModalDirectionFinder", "ModeSummary"]

# 'auto' accepts K > 1 modes only when the best silhouette beats the best silhouettes that K-means
# reaches on single Gaussians with the class's own mean and covariance by this relative margin AND
# by this many of their standard deviations (see Notes; both set from measurements on blobs).
_AUTO_MIN_GAIN = 0.3
_AUTO_MIN_Z = 5.0
# Silhouettes cost O(n^2 d): 'auto' chooses K on at most this many points per class.
_AUTO_MAX_SAMPLES = 1000
# Number of Gaussian reference draws for the null silhouette.
_AUTO_N_NULL = 8
# K-means initialisations while choosing K (the final clustering uses n_init).
_AUTO_N_INIT = 3
_SEED_MAX = np.iinfo(np.int32).max


# -------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------


@contextmanager
def _restore_state_on_error(estimator):
    """Undo every attribute change made inside the block if it raises.

    A failed ``fit`` must leave a fitted estimator exactly as it was (skcfx API), but
    ``validate_data`` already sets ``n_features_in_`` before later checks can fail.
    """
    saved = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(saved)
        raise


def _n_distinct_rows(X):
    """Number of distinct rows of ``X`` (K-means cannot find more clusters than that)."""
    return len(np.unique(X, axis=0))


def _kmeans(X, n_clusters, n_init, seed):
    """K-means of ``X`` with modes ordered by decreasing size.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Mode index of every row, 0 for the largest mode.
    centers : ndarray of shape (n_clusters, n_features)
    """
    if n_clusters == 1:
        return np.zeros(len(X), dtype=np.intp), X.mean(axis=0, keepdims=True)
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(X)
    labels, order = _by_size(km.labels_, n_clusters)
    return labels, km.cluster_centers_[order]


def _by_size(labels, n_clusters):
    """Relabel clusters by decreasing size; returns the new labels and the old id of each new one.

    A stable sort keeps the clustering's order among equal sizes, so results are reproducible.
    """
    order = np.argsort(-np.bincount(labels, minlength=n_clusters), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(n_clusters)
    return rank[labels], order


def _tied_gmm(X, n_clusters, n_init, seed):
    """Gaussian mixture with one covariance shared by the modes, ordered like :func:`_kmeans`.

    K-means assumes round clusters of equal spread; latent classes are elongated along the
    directions the class varies in, so two elongated modes lying side by side are often cut
    across. A tied covariance learns that shared shape (a Mahalanobis K-means) and stays stable
    with few points per mode, where full covariances overfit. EM started from K-means inherits
    its cut, so it is also started from K-means on the whitened class (where an elongated
    direction no longer dominates), and the fit with the higher likelihood is kept.
    """
    if n_clusters == 1:
        return _kmeans(X, 1, n_init, seed)
    centred = X - X.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    keep = singular > singular[0] * 1e-6
    whitened = centred @ vt[keep].T / singular[keep] * np.sqrt(len(X))
    best = None
    for start in (X, whitened):
        start_labels, _ = _kmeans(start, n_clusters, n_init, seed)
        if np.bincount(start_labels, minlength=n_clusters).min() < 2:
            continue
        means = np.stack([X[start_labels == j].mean(axis=0) for j in range(n_clusters)])
        gmm = GaussianMixture(n_components=n_clusters, covariance_type="tied", means_init=means,
                              reg_covar=1e-4, random_state=seed).fit(X)
        if best is None or gmm.lower_bound_ > best.lower_bound_:
            best = gmm
    labels = None if best is None else best.predict(X)
    if labels is None or np.bincount(labels, minlength=n_clusters).min() == 0:
        return _kmeans(X, n_clusters, n_init, seed)  # degenerate mixture: K-means' partition
    labels, _ = _by_size(labels, n_clusters)
    # Centres are the modes' means (what predict and the step search measure distances to).
    return labels, np.stack([X[labels == j].mean(axis=0) for j in range(n_clusters)])


_CLUSTERINGS = {"kmeans": _kmeans, "gmm": _tied_gmm}


def _silhouette(X, labels):
    """Silhouette score, or -1 when it is undefined (one cluster, or one point per cluster)."""
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(X):
        return -1.0
    return float(silhouette_score(X, labels))


def _gaussian_null(X, rng):
    """Draw a sample with exactly the sample covariance of ``X`` but no modes.

    For Gaussian data, the left singular vectors of the centred sample are uniformly (Haar)
    distributed and independent of the singular values and right vectors. Replacing them with a
    random orthonormal basis (orthogonal to the constant vector, so the result stays centred) thus
    draws from the distribution of a Gaussian sample given its mean and covariance. Unlike drawing
    from ``N(mean, cov)``, it does not exaggerate the spread of the spectrum when there are about
    as many rows as columns, which would bias the reference silhouette upwards.
    """
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    keep = s > s[0] * 1e-10 if len(s) and s[0] > 0 else np.zeros(len(s), dtype=bool)
    basis = rng.standard_normal((len(X), int(keep.sum())))
    basis -= basis.mean(axis=0)
    q, _ = np.linalg.qr(basis)
    return mean + (q * s[keep]) @ vt[keep]


def _silhouettes(X, candidates, n_init, rng):
    """Silhouette of K-means for every number of clusters in ``candidates``."""
    return [_silhouette(X, _kmeans(X, k, n_init, rng.randint(_SEED_MAX))[0]) for k in candidates]


def _null_silhouettes(X, candidates, n_init, rng):
    """Best silhouette over ``candidates`` on each of several Gaussian draws that mimic ``X``.

    Taking the best over the same candidates as for the data makes the reference pay the same
    "best of several tries" bonus, so that picking the best ``K`` does not by itself beat it.
    """
    return np.asarray(
        [max(_silhouettes(_gaussian_null(X, rng), candidates, n_init, rng))
         for _ in range(_AUTO_N_NULL)]
    )


def _beats_null(score, null_scores):
    """Whether a silhouette is clearly above the reference silhouettes of a single Gaussian."""
    mean, std = null_scores.mean(), null_scores.std()
    return score > 0 and score > mean + max(_AUTO_MIN_GAIN * abs(mean), _AUTO_MIN_Z * std)


def _select_n_modes(X, max_modes, n_init, rng):
    """Choose the number of modes of one class's standardised latents ('auto').

    Works on at most ``_AUTO_MAX_SAMPLES`` random rows with at most ``_AUTO_N_INIT`` K-means
    initialisations; the caller then clusters all rows with the full ``n_init``.

    Returns
    -------
    report : dict
        ``candidates`` (numbers of modes tried), ``silhouette`` (one score per candidate),
        ``null_silhouette`` (mean and standard deviation of the reference scores) and
        ``n_modes`` (the choice).
    """
    sample = X[rng.permutation(len(X))[:_AUTO_MAX_SAMPLES]]
    n_init = min(n_init, _AUTO_N_INIT)
    candidates = list(range(2, min(max_modes, _n_distinct_rows(sample) - 1) + 1))
    report = {"candidates": candidates, "silhouette": [], "null_silhouette": (np.nan, np.nan),
              "n_modes": 1}
    if not candidates:
        return report
    report["silhouette"] = _silhouettes(sample, candidates, n_init, rng)
    null_scores = _null_silhouettes(sample, candidates, n_init, rng)
    report["null_silhouette"] = (float(null_scores.mean()), float(null_scores.std()))
    if _beats_null(max(report["silhouette"]), null_scores):
        report["n_modes"] = candidates[int(np.argmax(report["silhouette"]))]
    return report


def _fit_direction(X, in_mode, C):
    """Fit a logistic regression separating one mode (``in_mode``) from the rows of other classes.

    Returns the weight vector and the intercept; classes are balanced because a mode is often much
    smaller than the union of the other classes.
    """
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=1000)
    clf.fit(X, in_mode.astype(np.intp))
    return clf.coef_[0], float(clf.intercept_[0])


def _unit_rows(W):
    """Divide every row by its Euclidean norm; rows of zeros stay zero."""
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)


# -------------------------------------------------------------------------------------------------
# estimator
# -------------------------------------------------------------------------------------------------


class ModalDirectionFinder(TransformerMixin, BaseEstimator):
    """Find the modes of each class in latent space and a unit direction towards each mode.

    For every class, its standardised latents are clustered into modes (``clustering``); for every
    mode a logistic regression separates that mode's points from the points of all *other*
    classes, and its weight vector, normalised, is the mode's direction (DifCluE). A
    counterfactual towards mode ``k`` is then ``z + alpha * directions_[k]``, decoded with the
    query's own stochastic code.

    Parameters
    ----------
    n_modes : int or 'auto', default=2
        Number of modes per class. An int is capped by the number of distinct latents of the
        class, with a ``UserWarning`` saying so.
        ``'auto'`` chooses between 1 and ``max_modes`` modes per class (see Notes).
    max_modes : int, default=5
        Largest number of modes ``'auto'`` may choose. Ignored when ``n_modes`` is an int.
    standardize : bool, default=True
        Standardise each latent dimension (zero mean, unit variance over the training latents)
        before clustering and fitting the directions, as the published DiffAE attribute
        manipulation does. If False, latents are used as they are.
    C : float, default=1e-3
        Inverse regularisation strength of each mode's logistic regression. Strong regularisation
        (small C) turns the weight towards the mode-versus-rest mean difference, a direction that
        stays on the data rather than one that exploits a few latent dimensions.
    classes : array-like or None, default=None
        Classes that get modes (the possible targets of counterfactuals). None means every class
        seen in ``fit``. Points of the other classes still serve as negatives.
    n_init : int, default=10
        Number of K-means initialisations; the run with the lowest inertia is kept.
    clustering : {'gmm', 'kmeans'}, default='gmm'
        How a class's standardised latents are split into modes. ``'kmeans'`` is the paper's
        K-means. ``'gmm'`` (the default since it was measured) is a Gaussian mixture whose modes
        share one covariance, started from K-means on the standardised and on the whitened
        latents (the likelier fit is kept): a class's latents are elongated, and K-means cuts two
        elongated modes lying side by side across. Over all 45 pairs of digits (one class made of
        two digits, the shipped DiffAE, ``benchmarks/modes_digits_pairs.py``) it recovers the
        digits with mean ARI 0.90 against K-means' 0.86 (0.89 vs 0.85 with the earlier 5000-step
        DiffAE); DifCluE on the same pairs (``benchmarks/difclue_digits.py``) converts 0.959 vs
        0.951 at flip rate 0.996 vs 0.999. Neither separates the hardest pairs (3/9, 8/9).
        ``n_modes='auto'`` chooses the number of modes with K-means either way.
    random_state : int, RandomState instance or None, default=None
        Seeds K-means and the Gaussian reference draws of ``'auto'``. Pass an int for
        reproducible results.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen in ``fit``, sorted.
    n_features_in_ : int
        Number of latent dimensions seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the latent dimensions, only when ``Z`` was a DataFrame with string column names.
    mean_ : ndarray of shape (n_features_in_,)
        Per-dimension mean used for standardisation (zeros when ``standardize=False``).
    scale_ : ndarray of shape (n_features_in_,)
        Per-dimension standard deviation used for standardisation (ones when
        ``standardize=False``; constant dimensions get 1, as in ``StandardScaler``).
    directions_ : ndarray of shape (n_directions, n_features_in_)
        Unit direction towards each mode, in RAW latent units: the normal of the mode's decision
        boundary, ``coef_ / scale_`` normalised. ``z + alpha * directions_[k]`` raises the mode's
        logit fastest per unit of raw distance. A row is zero only if the mode cannot be separated
        from the other classes at all (e.g. all latents equal).
    directions_standardized_ : ndarray of shape (n_directions, n_features_in_)
        The same directions in standardised units (``coef_`` normalised); a step along it is
        ``mean_ + scale_ * ((z - mean_) / scale_ + alpha * directions_standardized_[k])``, the
        recipe of the published DiffAE manipulation (there with ``alpha * sqrt(n_features_in_)``).
    coef_ : ndarray of shape (n_directions, n_features_in_)
        Weights of each mode's logistic regression on standardised latents.
    intercept_ : ndarray of shape (n_directions,)
        Intercepts of each mode's logistic regression.
    cluster_centers_ : ndarray of shape (n_directions, n_features_in_)
        Centre of each mode in raw latent units.
    mode_class_ : ndarray of shape (n_directions,)
        Class of each mode (an element of ``classes_``).
    mode_index_ : ndarray of shape (n_directions,)
        Index of each mode within its class; 0 is the class's largest mode.
    mode_size_ : ndarray of shape (n_directions,)
        Number of training latents in each mode.
    modes_ : list of dict
        One dict per mode with keys ``'mode'`` (row in ``directions_``), ``'class'``, ``'index'``
        and ``'size'``.
    n_modes_per_class_ : dict
        Number of modes of every class in ``classes_`` (0 for classes left out by ``classes``).
    labels_ : ndarray of shape (n_samples,)
        Mode of each training latent (its cluster), -1 for classes without modes.
    auto_scores_ : dict
        Only filled when ``n_modes='auto'``: per class, the report of the selection with keys
        ``'candidates'``, ``'silhouette'``, ``'null_silhouette'`` and ``'n_modes'``.

    See Also
    --------
    skcfx.DiffAEEncoder : Produces the semantic latents this estimator works on.
    sklearn.mixture.GaussianMixture : The default clustering of the modes (tied covariance).
    sklearn.cluster.KMeans : The paper's clustering (``clustering='kmeans'``).

    Notes
    -----
    Modes are numbered class by class in the order of ``classes_``, largest mode first, so
    ``directions_[modes_for_class(c)]`` are the directions of class ``c``.

    ``predict`` returns the mode whose centre is nearest in standardised space among ALL modes,
    whatever the class, so it needs no classifier; ``labels_`` instead keeps the clustering's
    assignment within each sample's own class (with ``clustering='gmm'`` the mixture's boundary
    between two modes is not the bisector of their centres, so the two can differ near it).
    ``transform`` returns the centred raw projections
    ``(Z - mean_) @ directions_.T``, so moving ``z`` by ``alpha * directions_[k]`` raises column
    ``k`` by exactly ``alpha``.

    ``n_modes='auto'`` chooses, per class, the number of modes ``K`` in ``[2, max_modes]`` with
    the highest silhouette (Rousseeuw, 1987) and keeps it only if that silhouette beats a null
    reference; otherwise the class has one mode. The reference repeats the same search (best
    silhouette over the same candidates) on 8 draws that have exactly the class's mean and
    covariance but no modes (Gaussian samples conditioned on the sample covariance, a null in the
    spirit of the gap statistic, Tibshirani et al., 2001). ``K`` is kept when the data's best
    silhouette exceeds the reference mean by 30% and by 5 reference standard deviations. A fixed
    silhouette threshold cannot work: silhouettes shrink as the dimension grows (about 0.6 for two
    clear blobs in 2-d, 0.02 in 512-d), and the reference shrinks with them. ``K`` is chosen on
    at most 1000 random points per class with at most 3 K-means initialisations, then all points
    are clustered with ``n_init``; this costs about ``9 * (max_modes - 1)`` extra K-means fits
    per class (about 2.5 s per class of 1000 latents of dimension 512 on one CPU core).

    Measured by ``benchmarks/modes_auto_blobs.py`` (5 seeds each, 2, 16, 64 and 512 dimensions,
    blob centres 6 noise standard deviations apart): a single blob, isotropic or anisotropic,
    got 1 mode in 79 of 80 fits with 60 or 300 points (the miss: 300 anisotropic points in 512
    dimensions); with 300 points, 2 and 3 isotropic blobs got the right ``K`` in 40 of 40 fits;
    with 60 points in 2 to 64 dimensions, 27 of 30 (the misses were reported as one mode). In a
    further 288 single-mode classes (Gaussian, correlated Gaussian and uniform; 40 or 150
    points; 2 to 512 dimensions; 12 seeds) 3 got 2 modes, two of them with 40 points in 512
    dimensions, where silhouettes are mostly noise. The rule prefers too few modes to too many.

    References
    ----------
    Jain, Sangroya and Vig, "DifCluE: Generating Counterfactual Explanations with Diffusion
    Autoencoders and modal clustering", arXiv:2502.11509, 2025.

    Preechakul et al., "Diffusion Autoencoders: Toward a Meaningful and Decodable
    Representation", CVPR 2022.

    Rousseeuw, "Silhouettes: a graphical aid to the interpretation and validation of cluster
    analysis", J. Comput. Appl. Math. 20, 1987.

    Tibshirani, Walther and Hastie, "Estimating the number of clusters in a data set via the gap
    statistic", J. R. Stat. Soc. B 63, 2001.

    Examples
    --------
    >>> import numpy as np
    >>> from skcfx.modes import ModalDirectionFinder
    >>> Z = np.array([[0., 0.], [0., 1.], [5., 5.], [5., 6.], [-5., 5.], [-5., 6.]])
    >>> y = np.array([0, 0, 1, 1, 1, 1])
    >>> finder = ModalDirectionFinder(n_modes=2, classes=[1], random_state=0).fit(Z, y)
    >>> finder.directions_.shape
    (2, 2)
    >>> sorted(finder.predict([[5., 5.5], [-5., 5.5]]).tolist())
    [0, 1]
    """

    _parameter_constraints: dict = {
        "n_modes": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_modes": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "C": [Interval(Real, 0, None, closed="neither")],
        "classes": ["array-like", None],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "clustering": [StrOptions(set(_CLUSTERINGS))],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_modes=2,
        *,
        max_modes=5,
        standardize=True,
        C=1e-3,
        classes=None,
        n_init=10,
        clustering="gmm",
        random_state=None,
    ):
        self.n_modes = n_modes
        self.max_modes = max_modes
        self.standardize = standardize
        self.C = C
        self.classes = classes
        self.n_init = n_init
        self.clustering = clustering
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Z, y):
        """Find the modes of every class and the direction towards each mode.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_features)
            Latents, e.g. ``DiffAEEncoder.transform(X)``.
        y : array-like of shape (n_samples,)
            Class labels; at least two classes.

        Returns
        -------
        self : ModalDirectionFinder
            The fitted estimator.
        """
        with _restore_state_on_error(self):
            try:
                Z, y = validate_data(self, Z, y, dtype=[np.float64, np.float32])
            except ValueError as exc:
                raise ValueError(f"Z, y: {exc}") from exc
            y_index, mode_classes = self._check_targets(y)
            self._fit(Z.astype(np.float64), y_index, mode_classes)
        return self

    def _check_targets(self, y):
        """Set ``classes_`` and return integer labels and the indices of the classes with modes."""
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise ValueError(f"y: {exc}") from exc
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                "ModalDirectionFinder needs at least 2 classes in y (the directions separate a "
                f"class's modes from the other classes); got 1 class: {classes[0]!r}."
            )
        if self.classes is None:
            mode_classes = np.arange(len(classes))
        else:
            # Plain Python equality, so that 1 matches 1.0 and strings are never truncated.
            wanted, seen = set(np.asarray(self.classes, dtype=object).ravel()), classes.tolist()
            if not wanted or not wanted <= set(seen):
                raise ValueError(
                    f"classes must be a non-empty subset of the classes in y {seen}; "
                    f"got {np.asarray(self.classes, dtype=object).tolist()!r}."
                )
            mode_classes = np.array([i for i, c in enumerate(seen) if c in wanted], dtype=np.intp)
        self.classes_ = classes
        return y_index, mode_classes

    def _fit(self, Z, y_index, mode_classes):
        """Standardise, cluster each class and fit one direction per mode (no input validation)."""
        if self.standardize:
            scaler = StandardScaler().fit(Z)
            mean, scale = scaler.mean_, scaler.scale_
        else:
            mean, scale = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
        Z_std = (Z - mean) / scale
        rng = check_random_state(self.random_state)
        labels = np.full(len(Z), -1, dtype=np.intp)
        rows, self.auto_scores_ = [], {}
        for class_index in mode_classes:
            in_class = y_index == class_index
            mode_labels, centers = self._cluster_class(Z_std[in_class], class_index, rng)
            labels[in_class] = len(rows) + mode_labels
            for j, center in enumerate(centers):
                in_mode = np.zeros(len(Z), dtype=bool)
                in_mode[np.flatnonzero(in_class)[mode_labels == j]] = True
                coef, intercept = _fit_direction(Z_std, in_mode, self.C)
                rows.append((class_index, j, int(in_mode.sum()), center, coef, intercept))
        self._set_mode_attributes(rows, mean, scale, labels)

    def _cluster_class(self, X, class_index, rng):
        """Cluster one class's standardised latents; returns mode labels and centres."""
        if self.n_modes == "auto":
            report = _select_n_modes(X, self.max_modes, self.n_init, rng)
            self.auto_scores_[self.classes_.tolist()[class_index]] = report
            n_modes = report["n_modes"]
        else:
            n_modes = min(self.n_modes, _n_distinct_rows(X))
            if n_modes < self.n_modes:
                # K-means cannot find more clusters than distinct points; say so rather than
                # silently handing back fewer modes than asked (KMeans itself would raise).
                warnings.warn(
                    f"class {self.classes_.tolist()[class_index]!r} has only {n_modes} distinct "
                    f"latent(s), so it gets {n_modes} mode(s) instead of n_modes={self.n_modes}.",
                    UserWarning, stacklevel=5,  # the caller of fit
                )
        return _CLUSTERINGS[self.clustering](X, n_modes, self.n_init, rng.randint(_SEED_MAX))

    def _set_mode_attributes(self, rows, mean, scale, labels):
        """Store the fitted arrays from one ``(class, index, size, centre, coef, b)`` per mode."""
        class_index, index, size, centers, coef, intercept = (np.asarray(c) for c in zip(*rows))
        self.mean_, self.scale_, self.labels_ = mean, scale, labels
        self.coef_, self.intercept_ = coef, intercept.astype(np.float64)
        self.directions_standardized_ = _unit_rows(coef)
        self.directions_ = _unit_rows(coef / scale)
        self.cluster_centers_ = centers * scale + mean
        self.mode_class_ = self.classes_[class_index]
        self.mode_index_ = index.astype(np.intp)
        self.mode_size_ = size.astype(np.intp)
        mode_class = self.mode_class_.tolist()  # plain Python scalars read better in dicts
        self.modes_ = [
            {"mode": m, "class": mode_class[m], "index": int(index[m]), "size": int(size[m])}
            for m in range(len(rows))
        ]
        self.n_modes_per_class_ = {c: mode_class.count(c) for c in self.classes_.tolist()}
        self._n_features_out = len(rows)

    # ------------------------------------------------------------ inference

    def _check_Z(self, Z):
        """Validate latents for inference against the fitted width (and feature names)."""
        check_is_fitted(self)
        try:
            return validate_data(self, Z, reset=False, dtype=[np.float64, np.float32])
        except ValueError as exc:
            raise ValueError(f"Z: {exc}") from exc

    def predict(self, Z):
        """Return the mode nearest to each latent, among the modes of all classes.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_features_in_)
            Latents.

        Returns
        -------
        modes : ndarray of shape (n_samples,)
            Row of ``directions_`` (mode id) whose centre is nearest in standardised space.
        """
        Z = self._check_Z(Z).astype(np.float64)
        centers = (self.cluster_centers_ - self.mean_) / self.scale_
        Z_std = (Z - self.mean_) / self.scale_
        # |a - b|^2 = |a|^2 - 2 a.b + |b|^2; the |a|^2 term is the same for every centre.
        distances = -2.0 * Z_std @ centers.T + np.sum(centers**2, axis=1)
        return np.argmin(distances, axis=1).astype(np.int64)

    def transform(self, Z):
        """Project centred latents onto the mode directions.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_features_in_)
            Latents.

        Returns
        -------
        projections : ndarray of shape (n_samples, n_directions)
            ``(Z - mean_) @ directions_.T`` in raw latent units, with the dtype of ``Z``
            (float32 or float64).
        """
        Z = self._check_Z(Z)
        return ((Z - self.mean_) @ self.directions_.T).astype(Z.dtype, copy=False)

    def mode_logits(self, Z):
        """Logit of each mode's logistic regression (mode versus the other classes).

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_features_in_)
            Latents.

        Returns
        -------
        logits : ndarray of shape (n_samples, n_directions)
            Positive where the linear classifier of mode ``k`` places the latent on the mode's side.
        """
        Z = self._check_Z(Z).astype(np.float64)
        return ((Z - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def modes_for_class(self, class_label):
        """Return the mode ids (rows of ``directions_``) of one class.

        Parameters
        ----------
        class_label : object
            An element of ``classes_``.

        Returns
        -------
        modes : ndarray of shape (n_modes_of_class,)
            Empty for a class left out by the ``classes`` parameter.
        """
        check_is_fitted(self)
        if class_label not in self.classes_.tolist():
            raise ValueError(
                f"class_label must be one of {self.classes_.tolist()}, got {class_label!r}."
            )
        return np.flatnonzero(self.mode_class_ == class_label)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns of ``transform``: ``mode_<class>_<index>``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the names seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        names = [f"mode_{c}_{j}" for c, j in zip(self.mode_class_, self.mode_index_)]
        return np.asarray(names, dtype=object)

    def describe_modes(self, fine_labels=None, names=None, class_names=None):
        """Name every mode after what it holds: its class, size and, given finer labels, content.

        Parameters
        ----------
        fine_labels : array-like of shape (n_samples,) or dict of str -> array-like, default=None
            What is known about each training latent (in the order given to :meth:`fit`) beyond its
            class: one label each (e.g. the digit, when the class is "1 or 7"), or named binary
            attributes (``{'color_is_red': bool array, ...}``). A mode is then named after its most
            common label, or its most frequent attribute, with that share.
        names : dict or callable, default=None
            Display name of a fine label or attribute (a dict lookup or a function, e.g.
            ``lambda d: f"digit {d}"``); default ``str(label)``.
        class_names : dict or callable, default=None
            Display name of a class label, the same way; default ``str(label)``.

        Returns
        -------
        ModeSummary
            A list with one dict per mode (``'mode'``, ``'letter'``, ``'name'``, ``'summary'``,
            ``'class'``, ``'index'``, ``'size'``, ``'share_of_class'``, ``'content'``: (label,
            share) pairs, most common first); ``print`` shows one line per mode, e.g.
            ``mode A (class 1, 613 latents, 51% of the class): mostly digit 1 (94%), digit 7 (6%)``.
            A mode is "mostly" its top label when that holds at least half of it, else "mixed".

        Examples
        --------
        >>> import numpy as np
        >>> Z = np.array([[0., 0.], [0., 1.], [5., 5.], [5., 6.], [-5., 5.], [-5., 6.]])
        >>> finder = ModalDirectionFinder(n_modes=2, classes=[1], random_state=0).fit(Z, [0, 0, 1, 1, 1, 1])
        >>> digit = np.array([0, 0, 4, 4, 9, 9])
        >>> sorted(m["name"] for m in finder.describe_modes(digit, names=lambda d: f"digit {d}"))
        ['mode A: mostly digit 4 (100%)', 'mode B: mostly digit 9 (100%)']
        """
        check_is_fitted(self)
        return summarise_modes(self.modes_, self.labels_, fine_labels, names, class_names)

