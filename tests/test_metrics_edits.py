"""Tests for skcfx.metrics.independent_validity and edit_specificity (hand-computed answers)."""

import doctest
import math

import numpy as np
import pytest
import torch

from skcfx import metrics
from skcfx.metrics import edits


def test_doctests_and_exports():
    assert doctest.testmod(edits, verbose=False).failed == 0
    assert "independent_validity" in metrics.__all__ and "edit_specificity" in metrics.__all__


# --------------------------------------------------------------------------- independent validity


def test_independent_validity_counts_only_flipped():
    pred = np.array([[1, 0], [0, 1], [1, 1]])
    flipped = np.array([[True, True], [False, False], [True, False]])
    # flipped: (0,0) ok, (0,1) no, (2,0) ok -> 2 / 3
    assert metrics.independent_validity(pred, 1, flipped) == pytest.approx(2 / 3)


def test_independent_validity_without_mask_is_the_flip_rate():
    pred = np.array([[2, 2, 0], [1, 0, 1]])
    target = np.array([2, 0])
    assert metrics.independent_validity(pred, target) == metrics.flip_rate(pred, target)


def test_independent_validity_from_scores_and_per_cf_targets():
    proba = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.6, 0.4]]])
    target = np.array([[0, 1], [1, 1]])
    assert metrics.independent_validity(proba, target) == pytest.approx(3 / 4)
    assert metrics.independent_validity(torch.tensor(proba), target) == pytest.approx(3 / 4)


def test_independent_validity_nothing_flipped_is_nan():
    pred = np.array([1, 1])
    assert math.isnan(metrics.independent_validity(pred, 1, np.array([False, False])))


def test_independent_validity_mask_per_query_broadcasts():
    pred = np.array([[1, 0], [0, 0]])
    assert metrics.independent_validity(pred, 1, np.array([True, False])) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(independent_pred=np.array([1, 0]), target_class=1, flipped=np.array([1, 0])), TypeError, "flipped"),
    (dict(independent_pred=np.array([1, 0]), target_class=1, flipped=np.array([True])), ValueError, "flipped"),
    (dict(independent_pred=np.array([1, 0]), target_class=[1, 1, 1]), ValueError, "target_class"),
    (dict(independent_pred=np.array([[0.2, 0.8]]), target_class=2), ValueError, "target_class"),
    (dict(independent_pred=np.array([[np.nan, 0.8]]), target_class=1), ValueError, "independent_pred"),
    (dict(independent_pred=np.zeros((2, 2, 2, 2), dtype=int), target_class=1), ValueError, "independent_pred"),
])
def test_independent_validity_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        metrics.independent_validity(**kwargs)


# --------------------------------------------------------------------------- edit specificity


def _queries(n=6, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 4, 4, 1))


def test_template_scores_zero_and_edit_scores_one():
    q = _queries()
    template = np.broadcast_to(np.full((1, 1, 4, 4, 1), 0.5), (6, 2, 4, 4, 1))
    res = metrics.edit_specificity(q, template)
    assert res["spread_ratio"] == 0.0 and res["closer_to_query"] == 0.0
    shifted = np.stack([np.clip(q + 0.01, 0, 1), q], axis=1)
    res = metrics.edit_specificity(q, shifted)
    assert res["closer_to_query"] == 1.0
    assert res["per_mode"][1]["spread_ratio"] == pytest.approx(1.0)


def test_spread_ratio_hand_computed_and_l2():
    q = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])  # L1 (per element): 1, 2, 3 -> 2
    cf = (0.5 * q)[:, None]                               # half the spread
    res = metrics.edit_specificity(q, cf)
    assert res["spread_ratio"] == pytest.approx(0.5)
    assert res["per_mode"][0]["query_spread"] == pytest.approx(2.0)
    assert metrics.edit_specificity(q, cf, metric="l2")["spread_ratio"] == pytest.approx(0.5)


def test_mode_ids_group_and_skip_slots():
    q = np.array([[0.0], [1.0], [3.0]])
    cf = np.array([[[0.0], [9.0]], [[9.0], [1.0]], [[3.0], [3.0]]])
    # mode 7: (0,0)=0, (1,1)=1, (2,0)=3 ; mode 8: (0,1)=9, (1,0)=9 ; (2,1) skipped
    modes = np.array([[7, 8], [8, 7], [7, -1]])
    res = metrics.edit_specificity(q, cf, modes)
    assert set(res["per_mode"]) == {7, 8}
    assert res["per_mode"][7]["spread_ratio"] == pytest.approx(1.0)
    assert res["per_mode"][8]["spread_ratio"] == pytest.approx(0.0)  # queries 0, 1 -> both 9
    assert res["per_mode"][7]["n"] == 3 and res["per_mode"][8]["n"] == 2
    assert res["spread_ratio"] == pytest.approx(0.5)


def test_single_cf_mode_has_nan_spread_but_counts_for_closer():
    q = np.array([[0.0], [1.0]])
    cf = np.array([[[0.0]], [[1.0]]])
    res = metrics.edit_specificity(q, cf, np.array([[0], [1]]))
    assert math.isnan(res["spread_ratio"])
    assert res["closer_to_query"] == 0.0  # each CF equals its mode's mean: not strictly nearer


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((np.zeros((3, 2)), np.zeros((3, 2))), {}, ValueError, "counterfactuals"),
    ((np.zeros((3, 2)), np.zeros((4, 1, 2))), {}, ValueError, "counterfactuals"),
    ((np.zeros((3, 2)), np.zeros((3, 1, 2))), {"metric": "lpips"}, ValueError, "metric"),
    ((np.zeros((3, 2)), np.zeros((3, 1, 2)), np.zeros((3, 1))), {}, TypeError, "mode_ids"),
    ((np.zeros((3, 2)), np.zeros((3, 1, 2)), np.zeros((2, 1), dtype=int)), {}, ValueError, "mode_ids"),
    ((np.zeros((3, 2)), np.zeros((3, 1, 2)), np.full((3, 1), -1)), {}, ValueError, "mode_ids"),
    ((np.full((3, 2), np.nan), np.zeros((3, 1, 2))), {}, ValueError, "queries"),
])
def test_edit_specificity_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        metrics.edit_specificity(*args, **kwargs)
