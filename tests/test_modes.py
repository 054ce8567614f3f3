"""Tests for skcfx.modes.ModalDirectionFinder."""

import pickle

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from skcfx.modes import ModalDirectionFinder


@pytest.fixture(autouse=True)
def _one_thread():
    # K-means and BLAS on tiny arrays are many times slower with oversubscribed threads when
    # other jobs share the 2 cores; one thread keeps this file fast and its timings stable.
    with threadpool_limits(1):
        yield


def _two_mode_data(seed=0, n=60, d=5, separation=10.0):
    """Class 0: one blob at the origin; class 1: two blobs, on either side of class 0.

    Returns Z, y and the true sub-blob (0 or 1) of each class-1 point (-1 for class 0).
    """
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, d))
    centres[0, 0], centres[1, 1] = separation, separation
    z0 = rng.standard_normal((n, d))
    sub = np.repeat([0, 1], [n, n // 2])  # unequal sizes so that mode order is defined
    z1 = centres[sub] + rng.standard_normal((len(sub), d))
    Z = np.vstack([z0, z1])
    y = np.r_[np.zeros(n, dtype=int), np.ones(len(sub), dtype=int)]
    return Z, y, np.r_[np.full(n, -1), sub]


@parametrize_with_checks(
    [ModalDirectionFinder(random_state=0), ModalDirectionFinder(n_modes="auto", random_state=0),
     ModalDirectionFinder(clustering="gmm", random_state=0)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_recovers_two_modes_and_directions_point_to_them():
    Z, y, sub = _two_mode_data()
    finder = ModalDirectionFinder(n_modes=2, random_state=0).fit(Z, y)

    modes = finder.modes_for_class(1)
    assert len(modes) == 2
    in_class1 = y == 1
    assert adjusted_rand_score(sub[in_class1], finder.labels_[in_class1]) == 1.0
    # predict looks at the modes of all classes; standardising shrinks the gaps between classes.
    assert np.mean(finder.predict(Z) == finder.labels_) > 0.9

    np.testing.assert_allclose(np.linalg.norm(finder.directions_, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(finder.directions_standardized_, axis=1), 1.0)
    other_mean = Z[y == 0].mean(axis=0)
    for m in modes:
        true_centre = Z[finder.labels_ == m].mean(axis=0)
        np.testing.assert_allclose(finder.cluster_centers_[m], true_centre, atol=1e-8)
        towards = finder.cluster_centers_[m] - other_mean
        cosine = finder.directions_[m] @ towards / np.linalg.norm(towards)
        assert cosine > 0.5
    # The largest mode comes first and the description matches the arrays.
    assert finder.mode_size_[modes[0]] == 60 and finder.mode_size_[modes[1]] == 30
    assert [d["size"] for d in finder.modes_] == finder.mode_size_.tolist()
    assert [d["class"] for d in finder.modes_] == finder.mode_class_.tolist()
    assert finder.n_modes_per_class_ == {0: 2, 1: 2}


def _side_by_side_modes(seed=0, n=200):
    """Class 1: two long parallel blobs 4 apart across, spread 10 along; class 0 further away."""
    rng = np.random.default_rng(seed)
    sub = rng.integers(0, 2, n)
    z1 = np.c_[10 * rng.standard_normal(n), 4.0 * sub + 0.5 * rng.standard_normal(n)]
    z0 = np.c_[10 * rng.standard_normal(n), -20 + 0.5 * rng.standard_normal(n)]
    return np.vstack([z0, z1]), np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)], sub


def test_gmm_clustering_follows_elongated_modes_that_kmeans_cuts_across():
    Z, y, sub = _side_by_side_modes()
    scores = {}
    for clustering in ("kmeans", "gmm"):
        finder = ModalDirectionFinder(n_modes=2, clustering=clustering, random_state=0).fit(Z, y)
        scores[clustering] = adjusted_rand_score(sub, finder.labels_[y == 1])
        # Same contract either way: centres are the modes' means, largest mode first.
        for m in finder.modes_for_class(1):
            np.testing.assert_allclose(finder.cluster_centers_[m], Z[finder.labels_ == m].mean(axis=0), atol=1e-8)
        assert finder.mode_size_[0] >= finder.mode_size_[1]
    assert scores["gmm"] > 0.95 and scores["kmeans"] < 0.2, scores


def test_gmm_clustering_is_reproducible_and_auto_still_chooses_the_count():
    Z, y, _ = _two_mode_data()
    a = ModalDirectionFinder(n_modes=2, clustering="gmm", random_state=3).fit(Z, y)
    b = ModalDirectionFinder(n_modes=2, clustering="gmm", random_state=3).fit(Z, y)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    auto = ModalDirectionFinder(n_modes="auto", clustering="gmm", random_state=0).fit(Z, y)
    assert auto.n_modes_per_class_ == {0: 1, 1: 2}


def test_directions_live_in_raw_space():
    Z, y, _ = _two_mode_data()
    Z = Z * np.array([1.0, 10.0, 0.1, 1.0, 3.0])  # unequal scales make the spaces differ
    finder = ModalDirectionFinder(random_state=0).fit(Z, y)
    expected = finder.directions_standardized_ / finder.scale_
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(finder.directions_, expected)
    assert not np.allclose(finder.directions_, finder.directions_standardized_)
    # A step of alpha along direction k moves projection k by exactly alpha.
    step = Z[:3] + 2.5 * finder.directions_[1]
    np.testing.assert_allclose(finder.transform(step)[:, 1] - finder.transform(Z[:3])[:, 1], 2.5)


def test_mode_logits_separate_each_mode_from_other_classes():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(random_state=0).fit(Z, y)
    logits = finder.mode_logits(Z)
    for m in finder.modes_for_class(1):
        assert np.all(logits[finder.labels_ == m, m] > 0)
        assert np.all(logits[y == 0, m] < 0)
        # Moving along the direction raises the logit.
        moved = finder.mode_logits(Z[y == 0] + finder.directions_[m])[:, m]
        assert np.all(moved > logits[y == 0, m])


def test_auto_picks_two_modes_on_two_blobs_and_one_on_one_blob():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(n_modes="auto", random_state=0).fit(Z, y)
    assert finder.n_modes_per_class_ == {0: 1, 1: 2}
    report = finder.auto_scores_[1]
    assert report["n_modes"] == 2 and report["candidates"] == [2, 3, 4, 5]
    assert max(report["silhouette"]) > report["null_silhouette"][0]


def test_auto_respects_max_modes():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(n_modes="auto", max_modes=1, random_state=0).fit(Z, y)
    assert finder.n_modes_per_class_ == {0: 1, 1: 1}


def test_classes_restricts_which_classes_get_modes():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(classes=[1], random_state=0).fit(Z, y)
    assert finder.n_modes_per_class_ == {0: 0, 1: 2}
    assert finder.modes_for_class(0).size == 0
    assert np.all(finder.labels_[y == 0] == -1)
    assert finder.transform(Z).shape == (len(Z), 2)
    assert set(finder.predict(Z)) <= {0, 1}
    with pytest.raises(ValueError, match="classes must be a non-empty subset"):
        ModalDirectionFinder(classes=[7]).fit(Z, y)
    with pytest.raises(ValueError, match="class_label must be one of"):
        finder.modes_for_class(7)


def test_n_modes_is_capped_by_class_size():
    Z = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [6.0, 5.0], [5.0, 6.0]])
    y = np.array([0, 0, 1, 1, 1])
    with pytest.warns(UserWarning) as record:
        finder = ModalDirectionFinder(n_modes=4, random_state=0).fit(Z, y)
    assert [str(w.message) for w in record] == [
        "class 0 has only 2 distinct latent(s), so it gets 2 mode(s) instead of n_modes=4.",
        "class 1 has only 3 distinct latent(s), so it gets 3 mode(s) instead of n_modes=4.",
    ]
    assert record[0].filename == __file__  # the warning points at the caller's fit
    assert finder.n_modes_per_class_ == {0: 2, 1: 3}
    assert finder.mode_size_.sum() == len(Z)
    # duplicated latents count once
    with pytest.warns(UserWarning, match="class 1 has only 1 distinct"):
        ModalDirectionFinder(n_modes=2, random_state=0).fit(np.r_[Z[:2], [[5.0, 5.0]] * 3], y)
    # no warning when every class has enough distinct latents
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ModalDirectionFinder(n_modes=2, random_state=0).fit(Z, y)


def test_without_standardization_spaces_coincide():
    Z, y, _ = _two_mode_data()
    # K-means partitions are exactly the nearest-centre cells, so predict reproduces labels_ on
    # every point, even where a one-blob class is split in two.
    finder = ModalDirectionFinder(standardize=False, clustering="kmeans", random_state=0).fit(Z, y)
    np.testing.assert_array_equal(finder.mean_, 0.0)
    np.testing.assert_array_equal(finder.scale_, 1.0)
    np.testing.assert_allclose(finder.directions_, finder.directions_standardized_)
    np.testing.assert_array_equal(finder.predict(Z), finder.labels_)
    # A mixture's boundary is not the centres' bisector: where a class really has two modes (blobs
    # 10 noise standard deviations apart) the nearest centre is still the own mode.
    gmm = ModalDirectionFinder(standardize=False, clustering="gmm", random_state=0).fit(Z, y)
    np.testing.assert_array_equal(gmm.predict(Z)[y == 1], gmm.labels_[y == 1])


def test_string_labels_and_feature_names():
    Z, y, _ = _two_mode_data()
    labels = np.array(["cat", "dog"])[y]
    finder = ModalDirectionFinder(random_state=0).fit(Z, labels)
    assert finder.classes_.tolist() == ["cat", "dog"]
    assert finder.mode_class_.tolist() == ["cat", "cat", "dog", "dog"]
    names = finder.get_feature_names_out()
    assert names.tolist() == ["mode_cat_0", "mode_cat_1", "mode_dog_0", "mode_dog_1"]


def test_float32_input_gives_float32_projections():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(random_state=0).fit(Z.astype(np.float32), y)
    assert finder.transform(Z.astype(np.float32)).dtype == np.float32
    assert finder.transform(Z).dtype == np.float64
    assert finder.predict(Z.astype(np.float32)).dtype == np.int64


def test_same_random_state_gives_same_fit():
    Z, y, _ = _two_mode_data()
    a = ModalDirectionFinder(n_modes=3, random_state=3).fit(Z, y)
    b = ModalDirectionFinder(n_modes=3, random_state=3).fit(Z, y)
    np.testing.assert_array_equal(a.directions_, b.directions_)
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_clone_get_params_and_pickle():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(n_modes=3, C=0.5, classes=[1], random_state=1)
    params = finder.get_params()
    assert params["n_modes"] == 3 and params["C"] == 0.5 and params["classes"] == [1]
    assert clone(finder).get_params() == params
    finder.fit(Z, y)
    assert not hasattr(clone(finder), "directions_")
    restored = pickle.loads(pickle.dumps(finder))
    np.testing.assert_array_equal(restored.transform(Z), finder.transform(Z))
    np.testing.assert_array_equal(restored.predict(Z), finder.predict(Z))


def _snapshot(estimator):
    return {k: pickle.dumps(v) for k, v in vars(estimator).items()}


@pytest.mark.parametrize(
    "make_bad, match",
    [
        (lambda Z, y: (np.where(np.eye(*Z.shape, dtype=bool), np.nan, Z), y), "NaN"),
        (lambda Z, y: (Z, np.zeros_like(y)), "1 class"),
        (lambda Z, y: (Z, np.linspace(0, 1, len(y))), "Unknown label type"),
        (lambda Z, y: (Z, None), "requires y to be passed"),
        (lambda Z, y: (Z[:, :0], y), "0 feature"),
    ],
)
def test_bad_fit_input_raises_and_leaves_fitted_estimator_unchanged(make_bad, match):
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(random_state=0).fit(Z, y)
    before = _snapshot(finder)
    with pytest.raises(ValueError, match=match):
        finder.fit(*make_bad(Z, y))
    assert _snapshot(finder) == before


def test_bad_parameters_raise_naming_them():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(random_state=0).fit(Z, y)
    before = _snapshot(finder)
    for params, name in [({"n_modes": 0}, "n_modes"), ({"n_modes": "many"}, "n_modes"),
                         ({"C": -1.0}, "C"), ({"max_modes": 0}, "max_modes"),
                         ({"clustering": "dbscan"}, "clustering")]:
        finder.set_params(**params)
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            finder.fit(Z, y)
        finder.set_params(n_modes=2, C=1e-3, max_modes=5, clustering="gmm")
    assert _snapshot(finder) == before


def test_wrong_width_after_fit_raises():
    Z, y, _ = _two_mode_data()
    finder = ModalDirectionFinder(random_state=0).fit(Z, y)
    for method in (finder.transform, finder.predict, finder.mode_logits):
        with pytest.raises(ValueError, match="5 features"):
            method(Z[:, :3])


# ----------------------------------------------------------------------------- describe_modes


def test_describe_modes_names_each_mode_after_its_fine_labels():
    rng = np.random.RandomState(0)
    centres = {1: (8.0, 0.0), 7: (-8.0, 0.0), 0: (0.0, 8.0)}
    digit = np.repeat([1, 7, 0], [60, 40, 50])
    Z = np.array([centres[d] for d in digit]) + rng.normal(size=(len(digit), 2))
    y = np.isin(digit, [1, 7]).astype(int)
    finder = ModalDirectionFinder(n_modes=2, classes=[1], random_state=0).fit(Z, y)
    summary = finder.describe_modes(digit, names={1: "digit 1", 7: "digit 7"})
    assert [m["letter"] for m in summary] == ["A", "B"]
    # mode 0 is the larger one: the 60 ones
    assert summary[0]["name"] == "mode A: mostly digit 1 (100%)"
    assert summary[1]["name"] == "mode B: mostly digit 7 (100%)"
    assert summary[0]["size"] == 60 and summary[0]["share_of_class"] == pytest.approx(0.6)
    assert str(summary).splitlines()[1] == "mode B (class 1, 40 latents, 40% of the class): mostly digit 7 (100%)"
    # without fine labels: class and share only; with attributes: the most frequent one
    assert finder.describe_modes()[1]["name"] == "mode B: class 1, 40% of it"
    assert finder.describe_modes(class_names={1: "1 or 7"})[1]["name"] == "mode B: class 1 or 7, 40% of it"
    attrs = {"wide": digit == 1, "tall": digit != 0}
    assert finder.describe_modes(attrs)[1]["content"] == [("tall", 1.0), ("wide", 0.0)]
    with pytest.raises(ValueError, match="fine_labels"):
        finder.describe_modes(digit[:-1])
