"""Tests for skcfx.metrics: hand-computed answers on tiny arrays."""

import doctest
import importlib
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from skcfx import metrics


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- package


@pytest.mark.parametrize(
    "module",
    ["__init__", "validity", "modes", "proximity", "realism", "attributes", "diversity", "dissect"],
)
def test_docstring_examples_run(module):
    name = "skcfx.metrics" if module == "__init__" else f"skcfx.metrics.{module}"
    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.failed == 0


def test_docstring_table_lists_every_metric():
    for name in metrics.__all__:
        assert f":func:`{name}`" in metrics.__doc__


def test_every_metric_cites_a_source():
    papers = ("Jeanneret", "Ghandeharioun", "Heusel", "DifCluE", "DISSECT", "DiME", "Hubert")
    for name in metrics.__all__:
        if name == "extract_features":
            continue
        doc = getattr(metrics, name).__doc__
        assert any(p in doc for p in papers), name


# --------------------------------------------------------------------------- flip rate


def test_flip_rate_from_labels_with_scalar_target():
    assert metrics.flip_rate(np.array([1, 0, 1, 1, 0]), 1) == pytest.approx(3 / 5)


def test_flip_rate_broadcasts_targets_over_k():
    pred = np.array([[2, 2, 0], [1, 0, 1]])
    # query 0 targets 2 (2 of 3 hits), query 1 targets 0 (1 of 3 hits)
    assert metrics.flip_rate(pred, np.array([2, 0])) == pytest.approx(3 / 6)


def test_flip_rate_from_probabilities_uses_argmax():
    proba = np.array([
        [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]],
        [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]],
    ])
    assert metrics.flip_rate(proba, [1, 2]) == pytest.approx(3 / 4)
    assert metrics.flip_rate(proba[:, 0], [1, 2]) == pytest.approx(1.0)


def test_flip_rate_accepts_string_labels():
    assert metrics.flip_rate(np.array(["cat", "dog", "dog"]), "dog") == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "pred, target, exc, match",
    [
        (np.array([0.2, 0.8]), 1, ValueError, "cf_pred_or_proba"),
        (np.array([[0.2, 0.8]]), 2, ValueError, "target_class"),
        (np.array([[0.2, 0.8], [0.3, 0.7]]), [1], ValueError, "target_class"),
        (np.array([[np.nan, 0.8]]), 1, ValueError, "cf_pred_or_proba"),
        (np.array([[[[0, 1]]]]), 1, ValueError, "cf_pred_or_proba"),
        (np.array([0, 1]), 1.5, TypeError, "target_class"),
    ],
)
def test_flip_rate_rejects_bad_input(pred, target, exc, match):
    with pytest.raises(exc, match=match):
        metrics.flip_rate(pred, target)


# --------------------------------------------------------------------------- percent conversion


def test_percent_conversion_with_oracle_labels():
    pred = np.array([[0, 1], [0, 0], [1, 1], [2, 1]])
    res = metrics.percent_conversion(pred, [0, 1])
    np.testing.assert_allclose(res["per_mode"], [2 / 4, 3 / 4])
    assert res["mean"] == pytest.approx(5 / 8)


def test_percent_conversion_with_per_counterfactual_expectations():
    pred = np.array([[0, 1], [1, 0]])
    expected = np.array([[0, 1], [0, 1]])
    np.testing.assert_allclose(metrics.percent_conversion(pred, expected)["per_mode"], [0.5, 0.5])


def test_percent_conversion_with_attribute_probabilities():
    # (n=2, k=2, n_attributes=3): mode 0 should show attribute 2, mode 1 attribute 0.
    proba = np.array([
        [[0.1, 0.2, 0.9], [0.7, 0.1, 0.1]],
        [[0.9, 0.2, 0.4], [0.2, 0.6, 0.1]],
    ])
    res = metrics.percent_conversion(proba, [2, 0])
    np.testing.assert_allclose(res["per_mode"], [0.5, 0.5])
    strict = metrics.percent_conversion(proba, [2, 0], threshold=0.8)
    np.testing.assert_allclose(strict["per_mode"], [0.5, 0.0])


@pytest.mark.parametrize(
    "pred, expected, match",
    [
        (np.array([[0, 1]]), [0, 1, 2], "mode_labels_expected"),
        (np.zeros((2, 2, 3)), [0, 3], "mode_labels_expected"),
        (np.full((2, 2, 3), 1.5), [0, 1], "oracle_pred"),
        (np.array([0, 1]), [0, 1], "oracle_pred"),
    ],
)
def test_percent_conversion_rejects_bad_input(pred, expected, match):
    with pytest.raises(ValueError, match=match):
        metrics.percent_conversion(pred, expected)


# --------------------------------------------------------------------------- mode recovery


def test_mode_recovery_of_a_permutation_is_perfect():
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    modes = np.array([5, 5, 3, 3, 0, 0, 0])
    res = metrics.mode_recovery(modes, true)
    assert res["ari"] == pytest.approx(1.0)
    assert res["nmi"] == pytest.approx(1.0)


def test_mode_recovery_hand_computed_ari():
    # Contingency [[2, 1], [0, 3]]: sum C(n_ij, 2) = 4, rows 6, cols 7, C(6, 2) = 15
    # ARI = (4 - 6 * 7 / 15) / ((6 + 7) / 2 - 6 * 7 / 15) = 1.2 / 3.7
    res = metrics.mode_recovery([0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1])
    assert res["ari"] == pytest.approx(1.2 / 3.7)


def test_mode_recovery_single_mode_carries_no_information():
    res = metrics.mode_recovery([0, 0, 0, 0], [0, 0, 1, 1])
    assert res["ari"] == pytest.approx(0.0)
    assert res["nmi"] == pytest.approx(0.0)


def test_mode_recovery_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        metrics.mode_recovery([0, 1, 1], [0, 1])
    with pytest.raises(TypeError, match="modes"):
        metrics.mode_recovery([0.5, 1.0], [0, 1])


# --------------------------------------------------------------------------- proximity, stability


def test_proximity_l1_and_l2_on_one_changed_pixel():
    x = np.zeros((3, 2, 2, 1))
    cf = x.copy()
    cf[:, 0, 0, 0] = 1.0  # one of D = 4 elements changes by 1
    assert metrics.proximity(x, cf, norm="l1") == pytest.approx(1 / 4)
    assert metrics.proximity(x, cf, norm="l2") == pytest.approx(math.sqrt(1 / 4))


def test_proximity_broadcasts_over_k_counterfactuals():
    x = _rng().random((2, 3, 3, 1))
    cf = np.stack([x + 0.1, x - 0.3, x], axis=1)
    per = metrics.proximity(x, cf, per_sample=True)
    np.testing.assert_allclose(per, [[0.1, 0.3, 0.0]] * 2)
    assert metrics.proximity(x, cf) == pytest.approx(0.4 / 3)
    assert metrics.proximity(x, cf[:, 0], per_sample=True).shape == (2,)


@pytest.mark.parametrize(
    "cf_shape, norm, match",
    [((2, 4, 4, 1), "l3", "norm"), ((2, 4, 3, 1), "l1", "counterfactuals"),
     ((3, 2, 4, 4, 1), "l1", "counterfactuals")],
)
def test_proximity_rejects_bad_input(cf_shape, norm, match):
    with pytest.raises(ValueError, match=match):
        metrics.proximity(np.zeros((2, 4, 4, 1)), np.zeros(cf_shape), norm=norm)


def test_stability_mae_and_mse():
    a = np.zeros((2, 2, 2, 1))
    b = a.copy()
    b[0] = 0.2
    b[1, 0, 0, 0] = -0.4
    res = metrics.stability(a, b)
    assert res["mae"] == pytest.approx((4 * 0.2 + 0.4) / 8)
    assert res["mse"] == pytest.approx((4 * 0.04 + 0.16) / 8)


def test_stability_rejects_shape_mismatch_and_nan():
    with pytest.raises(ValueError, match="same shape"):
        metrics.stability(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="cf_b"):
        metrics.stability(np.zeros((1, 2)), np.array([[0.0, np.inf]]))


# --------------------------------------------------------------------------- Frechet distance


def _reference_frechet(a, b):
    """Textbook formula with a general matrix square root, for comparison."""
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return mu @ mu + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)


def test_frechet_distance_identical_sets_is_zero():
    a = _rng(1).normal(size=(50, 6))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_mean_shift_is_squared_shift():
    a = _rng(2).normal(size=(40, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    expected = float(shift @ shift)
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_one_dimensional_by_hand():
    # var(a) = 2, var(b) = 8 (unbiased): d = 2 + 8 - 2 * sqrt(16) = 2
    a = np.array([[-1.0], [1.0]])
    b = np.array([[-2.0], [2.0]])
    assert metrics.frechet_distance(a, b) == pytest.approx(2.0)


def test_frechet_distance_matches_textbook_formula_and_is_symmetric():
    rng = _rng(3)
    a = rng.normal(size=(60, 4))
    b = rng.normal(size=(45, 4)) @ rng.normal(size=(4, 4)) + 0.7
    d = metrics.frechet_distance(a, b)
    assert d == pytest.approx(_reference_frechet(a, b), rel=1e-6)
    assert d == pytest.approx(metrics.frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_with_fewer_samples_than_features_is_finite():
    rng = _rng(4)
    a, b = rng.normal(size=(5, 20)), rng.normal(size=(6, 20)) + 1.0
    d = metrics.frechet_distance(a, b)
    assert np.isfinite(d) and d >= 20.0 * 0.5  # mean shift of 1 per feature dominates


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), "same number of features"),
        (np.zeros((1, 3)), np.zeros((4, 3)), "features_a"),
        (np.zeros(4), np.zeros((4, 1)), "features_a"),
        (np.zeros((4, 3)), np.full((4, 3), np.nan), "features_b"),
    ],
)
def test_frechet_distance_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        metrics.frechet_distance(a, b)


# --------------------------------------------------------------------------- feature extraction


class _NoFeatures(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


class _SpatialFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.conv.weight.data[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)

    def forward_features(self, x):
        return self.conv(x)


def test_extract_features_plain_callable_gets_unit_range_batches():
    images = _rng(5).random((7, 4, 4, 3), dtype=np.float32)
    seen = []

    def extractor(batch):
        seen.append(batch.shape[0])
        assert batch.min() >= 0.0 and batch.max() <= 1.0
        return batch.mean(axis=(1, 2))

    feats = metrics.extract_features(images, extractor, batch_size=3)
    assert seen == [3, 3, 1]
    np.testing.assert_allclose(feats, images.mean(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("input_range", [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)])
def test_extract_features_maps_images_to_input_range(input_range):
    images = _rng(6).random((3, 2, 2, 1), dtype=np.float32)
    feats = metrics.extract_features(images, _NoFeatures(), input_range=input_range)
    low, high = input_range
    expected = low + (high - low) * images.reshape(3, -1)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)


def test_extract_features_pools_spatial_forward_features():
    images = _rng(7).random((4, 3, 3), dtype=np.float32)  # grayscale (n, H, W)
    feats = metrics.extract_features(images, _SpatialFeatures(), input_range=(0.0, 1.0))
    mean = images.mean(axis=(1, 2))
    np.testing.assert_allclose(feats, np.stack([mean, -mean], axis=1), rtol=1e-5)


def test_extract_features_uses_timm_pre_logits_and_restores_mode():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    model.train()
    images = _rng(8).random((3, 32, 32, 3), dtype=np.float32)
    feats = metrics.extract_features(images, model, batch_size=2)
    assert model.training
    assert feats.shape == (3, model.num_features) and feats.dtype == np.float32
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_extract_features_rejects_bad_input():
    images = np.zeros((2, 4, 4, 1), dtype=np.float32)
    with pytest.raises(TypeError, match="model"):
        metrics.extract_features(images, "resnet18")
    with pytest.raises(ValueError, match="batch_size"):
        metrics.extract_features(images, _NoFeatures(), batch_size=0)
    with pytest.raises(ValueError, match="images"):
        metrics.extract_features(images + 2.0, _NoFeatures())
    with pytest.raises(ValueError, match="one feature row per image"):
        metrics.extract_features(images, lambda b: np.zeros(5))
    with pytest.raises(ValueError, match="input_range"):
        metrics.extract_features(images, _NoFeatures(), input_range=(1.0, 0.0))


# --------------------------------------------------------------------------- MNAC and CD


def test_mnac_counts_only_the_query_attribute():
    query = np.array([[0.9, 0.2, 0.7], [0.1, 0.3, 0.6]])
    cf = query.copy()
    cf[:, 0] = 1.0 - cf[:, 0]  # flip the query attribute, keep the rest
    cf[:, 1] += 0.1  # moves, but stays on the same side of 0.5
    assert metrics.mnac(query, cf) == pytest.approx(1.0)


def test_mnac_with_k_counterfactuals_and_threshold():
    query = np.array([[0.9, 0.2, 0.7]])
    cf = np.array([[[0.1, 0.2, 0.7], [0.1, 0.8, 0.3]]])  # 1 and 3 changes
    assert metrics.mnac(query, cf) == pytest.approx(2.0)
    # with t = 0.75 the query binarises to [1, 0, 0]: changes are 1 and 2
    assert metrics.mnac(query, cf, threshold=0.75) == pytest.approx(1.5)


def test_mnac_rejects_logits_and_shape_mismatch():
    with pytest.raises(ValueError, match="oracle_cf"):
        metrics.mnac(np.zeros((2, 3)), np.full((2, 3), 3.0))
    with pytest.raises(ValueError, match="oracle_cf"):
        metrics.mnac(np.zeros((2, 3)), np.zeros((2, 4)))


def _cd_example():
    # dataset: c = [1, 0, 1/sqrt(3)] against attribute 0
    labels = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    # oracle changes: delta_0 = [1, 1, -1, -1], delta_1 = [1, 0, -1, 0], delta_2 = 0
    # so c^M = [1, 1/sqrt(2), 0] (attribute 2 never changes: taken as 0)
    query = np.array([[0.2, 0.1, 0.3], [0.3, 0.2, 0.8], [0.8, 0.9, 0.4], [0.7, 0.6, 0.9]])
    cf = np.array([[0.9, 0.8, 0.2], [0.6, 0.4, 0.9], [0.1, 0.3, 0.3], [0.2, 0.7, 0.8]])
    return labels, query, cf


def test_correlation_difference_hand_computed():
    labels, query, cf = _cd_example()
    expected = 1 / math.sqrt(2) + 1 / math.sqrt(3)
    assert metrics.correlation_difference(labels, 0, query, cf) == pytest.approx(expected)
    details = metrics.correlation_difference(labels, 0, query, cf[:, None], return_correlations=True)
    assert details["cd"] == pytest.approx(expected)
    np.testing.assert_allclose(details["dataset"], [1, 0, 1 / math.sqrt(3)], atol=1e-12)
    np.testing.assert_allclose(details["counterfactual"], [1, 1 / math.sqrt(2), 0], atol=1e-12)


def test_correlation_difference_is_invariant_to_label_coding():
    labels, query, cf = _cd_example()
    plus_minus = 2 * labels - 1  # CelebA's -1/1 coding
    assert metrics.correlation_difference(plus_minus, 0, query, cf) == pytest.approx(
        metrics.correlation_difference(labels, 0, query, cf)
    )


def test_correlation_difference_rejects_undefined_query_correlation():
    labels, query, cf = _cd_example()
    with pytest.raises(ValueError, match="query attribute"):
        # every counterfactual flips attribute 0 from 0 to 1: delta_q is constant
        metrics.correlation_difference(labels, 0, query[:2], cf[:2])
    constant = labels.copy()
    constant[:, 0] = 1
    with pytest.raises(ValueError, match="dataset_labels"):
        metrics.correlation_difference(constant, 0, query, cf)


@pytest.mark.parametrize(
    "attribute, labels_cols, exc",
    [(3, 3, ValueError), (True, 3, TypeError), (0, 4, ValueError)],
)
def test_correlation_difference_rejects_bad_attribute(attribute, labels_cols, exc):
    labels, query, cf = _cd_example()
    labels = np.concatenate([labels, labels[:, :1]], axis=1)[:, :labels_cols]
    with pytest.raises(exc):
        metrics.correlation_difference(labels, attribute, query, cf)


# --------------------------------------------------------------------------- diversity


def test_diversity_default_l1_by_hand():
    cf = np.zeros((2, 3, 2, 2, 1))
    cf[:, 1] = 1.0
    cf[:, 2, 0, 0, 0] = 1.0  # pairs: |0-1| = 1, |0-c2| = 1/4, |1-c2| = 3/4
    assert metrics.diversity(cf) == pytest.approx((1 + 0.25 + 0.75) / 3)


def test_diversity_identical_counterfactuals_is_zero():
    one = _rng(9).random((3, 1, 4, 4, 1))
    assert metrics.diversity(np.repeat(one, 4, axis=1)) == pytest.approx(0.0)


def test_diversity_with_a_pluggable_distance():
    cf = np.array([[[0.0, 0.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])

    def euclidean(a, b):
        return np.linalg.norm(a - b, axis=1)

    assert metrics.diversity(cf, distance=euclidean) == pytest.approx((5.0 + 0.0) / 2)


def test_diversity_rejects_bad_input():
    with pytest.raises(ValueError, match="k >= 2"):
        metrics.diversity(np.zeros((3, 1, 4)))
    with pytest.raises(TypeError, match="distance"):
        metrics.diversity(np.zeros((3, 2, 4)), distance="lpips")
    with pytest.raises(ValueError, match="distance must return"):
        metrics.diversity(np.zeros((3, 2, 4)), distance=lambda a, b: np.zeros(2))


# --------------------------------------------------------------------------- DISSECT


def test_importance_of_perfect_agreement():
    p = np.array([0.05, 0.2, 0.5, 0.8, 0.99])
    res = metrics.importance(p, p.copy())
    assert res["R"] == pytest.approx(1.0)
    assert res["rho"] == pytest.approx(1.0)
    assert res["KL"] == pytest.approx(0.0, abs=1e-12)
    assert res["MSE"] == 0.0


def test_importance_kl_and_mse_by_hand():
    # KL(Bern(.5) || Bern(.25)) = KL(Bern(.5) || Bern(.75)) = 0.5 * log(4 / 3)
    res = metrics.importance(np.array([0.5, 0.5]), np.array([0.25, 0.75]))
    assert res["KL"] == pytest.approx(0.5 * math.log(4 / 3))
    assert res["MSE"] == pytest.approx(0.0625)
    assert math.isnan(res["R"]) and math.isnan(res["rho"])  # p is constant


def test_importance_rank_versus_linear_correlation():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    q = np.array([0.1, 0.15, 0.2, 0.95])  # monotone but not linear
    res = metrics.importance(p, q)
    assert res["rho"] == pytest.approx(1.0)
    assert res["R"] < 0.95


def test_importance_clips_certain_probabilities():
    res = metrics.importance(np.array([0.0, 1.0]), np.array([1.0, 0.0]), eps=1e-3)
    assert np.isfinite(res["KL"]) and res["KL"] > 5.0
    assert res["R"] == pytest.approx(-1.0)


def test_importance_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        metrics.importance(np.array([0.1, 0.2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="outputs"):
        metrics.importance(np.array([0.1, 0.2]), np.array([-2.0, 3.0]))


def _concept_edits(n=16, d=6, same_edit=False, seed=10):
    rng = _rng(seed)
    queries = rng.random((n, d))
    cf = np.repeat(queries[:, None], 2, axis=1)
    cf[:, 0, 0] += 0.5 + 0.1 * rng.random(n)  # concept "a" edits feature 0
    cf[:, 1, 0 if same_edit else 1] += 0.5 + 0.1 * rng.random(n)
    if same_edit:
        cf[:, 1] = cf[:, 0]
    return queries, cf


def test_distinctness_of_separable_concepts_is_perfect():
    queries, cf = _concept_edits()
    res = metrics.distinctness(queries, cf, np.array(["a", "b"]), cv=4, random_state=0)
    for key in ("accuracy", "precision_micro", "precision_macro", "recall_micro", "recall_macro"):
        assert res[key] == pytest.approx(1.0), key


def test_distinctness_of_identical_edits_is_chance():
    # Both concepts make the same edit, and both pairs of a query share a fold,
    # so every prediction is right for exactly one of the two: accuracy 1/2.
    queries, cf = _concept_edits(same_edit=True)
    res = metrics.distinctness(queries, cf, [0, 1], cv=4, random_state=0)
    assert res["accuracy"] == pytest.approx(0.5)


def test_distinctness_with_flat_pairs_and_custom_classifier():
    queries, cf = _concept_edits()
    flat_q = np.concatenate([queries, queries])
    flat_cf = np.concatenate([cf[:, 0], cf[:, 1]])
    ids = np.repeat([0, 1], queries.shape[0])
    res = metrics.distinctness(flat_q, flat_cf, ids, classifier=KNeighborsClassifier(1), cv=3,
                               random_state=0)
    assert res["accuracy"] == pytest.approx(1.0)


def test_distinctness_rejects_bad_input():
    queries, cf = _concept_edits()
    with pytest.raises(ValueError, match="concept_ids"):
        metrics.distinctness(queries, cf, [0, 1, 2])
    with pytest.raises(ValueError, match="cv"):
        metrics.distinctness(queries, cf, [0, 1], cv=50)
    with pytest.raises(TypeError, match="classifier"):
        metrics.distinctness(queries, cf, [0, 1], classifier=object())


def _separable(n, seed, flip=False):
    rng = _rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 3)) + 4.0 * y[:, None]
    return X, (1 - y if flip else y)


def test_substitutability_score_and_ratio():
    X_cf, y_cf = _separable(20, seed=11)
    X_test, y_test = _separable(30, seed=12)
    res = metrics.substitutability(X_cf, y_cf, X_test, y_test, LogisticRegression(), 0.8)
    assert res["score"] == pytest.approx(1.0)
    assert res["ratio"] == pytest.approx(1.0 / 0.8)


def test_substitutability_with_factory_and_k_axis():
    X_cf, y_cf = _separable(20, seed=13, flip=True)  # counterfactuals carry the wrong labels
    X_test, y_test = _separable(30, seed=14)
    res = metrics.substitutability(
        X_cf.reshape(10, 2, 3), y_cf.reshape(10, 2), X_test, y_test, LogisticRegression, 0.5
    )
    assert res["score"] == pytest.approx(0.0)
    assert res["ratio"] == pytest.approx(0.0)


def test_substitutability_rejects_bad_input():
    X, y = _separable(10, seed=15)
    with pytest.raises(ValueError, match="original_score"):
        metrics.substitutability(X, y, X, y, LogisticRegression, 0.0)
    with pytest.raises(ValueError, match="same length"):
        metrics.substitutability(X, y, X, y[:5], LogisticRegression, 0.9)
    with pytest.raises(ValueError, match="cf_targets"):
        metrics.substitutability(X, y[:5], X, y, LogisticRegression, 0.9)
    with pytest.raises(TypeError, match="make_classifier"):
        metrics.substitutability(X, y, X, y, "logreg", 0.9)


def test_realism_of_obvious_fakes_is_perfectly_detected():
    rng = _rng(16)
    real = rng.random((20, 4, 4, 1)) * 0.5
    fake = real[::-1] + 0.5
    assert metrics.realism(real, fake, cv=4, random_state=0) == pytest.approx(1.0)


def test_realism_of_same_distribution_is_near_chance():
    rng = _rng(17)
    real, fake = rng.random((60, 4, 4, 1)), rng.random((60, 4, 4, 1))
    assert 0.25 <= metrics.realism(real, fake, cv=3, random_state=0) <= 0.75


def test_realism_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        metrics.realism(np.zeros((10, 4)), np.zeros((10, 5)))
    with pytest.raises(ValueError, match="cv"):
        metrics.realism(np.zeros((3, 4)), np.ones((3, 4)), cv=5)
