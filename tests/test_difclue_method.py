"""DifCluE's step search, checked against closed forms on a stand-in diffusion autoencoder.

The stand-in "decodes" a latent exactly into the first pixels of the image (the rest comes from
the inverted noise, which is the image itself), and the classifier reads the first pixel only, so
the step at which each counterfactual must flip is known in closed form.
"""

import math

import numpy as np
import pytest
import torch

from skcfx.classifiers import as_proba_model
from skcfx.diffusion import NFECounter
from skcfx.methods import DifCluE, ExplainContext
from skcfx.methods.difclue import _means_of_nearest
from skcfx.modes import ModalDirectionFinder

LATENT_DIM = 2
SLOPE, THRESHOLD = 20.0, -0.3  # classifier: p(positive) = sigmoid(SLOPE * (pixel0 - THRESHOLD))


class _ExactModel:
    """A DiffAE stand-in whose decode writes ``z`` into the first pixels: edits act exactly."""

    T = 1000
    has_null_latent = False

    def encode(self, x_0, *, requires_grad=False):
        return x_0.flatten(1)[:, :LATENT_DIM].clone()

    def invert(self, x_0, z, n_steps, *, counter=None, stop_index=None):
        if counter is not None:  # as if one denoiser call per inversion step
            counter.add(x_0.shape[0] * (n_steps if stop_index is None else stop_index))
        return x_0.clone()

    def decode(self, z, x_T, n_steps, *, guidance_scale=0.0, counter=None, start_index=None, **_):
        if counter is not None:  # steps start_index .. 0 from part-way down the chain
            counter.add(z.shape[0] * (n_steps if start_index is None else start_index + 1))
        out = x_T.clone().flatten(1)
        out[:, :LATENT_DIM] = z
        return out.reshape(x_T.shape).clamp(-1, 1)


class _FirstPixel(torch.nn.Module):
    def forward(self, x):
        logit = SLOPE * (x[:, 0, 0, 0] - THRESHOLD)
        return torch.stack([-logit / 2, logit / 2], dim=1)


def _latents(n, center, rng):
    return center + 0.05 * rng.standard_normal((n, LATENT_DIM))


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(0)
    # negatives around (-0.5, 0); the positive class has two modes, (0.5, 0.5) and (0.5, -0.5)
    Z = np.concatenate([_latents(60, [-0.5, 0.0], rng), _latents(30, [0.5, 0.5], rng),
                        _latents(30, [0.5, -0.5], rng)])
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    finder = ModalDirectionFinder(n_modes=2, random_state=0).fit(Z, y)
    proba = as_proba_model(_FirstPixel(), image_shape=(4, 4, 1))
    context = ExplainContext(model=_ExactModel(), encode_steps=5, decode_steps=3, direction_finder=finder,
                             proba_model=proba, device=torch.device("cpu"),
                             generator=torch.Generator().manual_seed(0), class_of_index=np.array([0, 1]))
    queries_z = _latents(6, [-0.5, 0.0], rng)
    x = torch.zeros(6, 1, 4, 4)
    x.view(6, -1)[:, :LATENT_DIM] = torch.as_tensor(queries_z, dtype=torch.float32)
    return context, Z, y, x


def _fit(method, setting):
    context, Z, y, _ = setting
    return method.fit(context, Z, y)  # the classifier predicts the labels exactly here


def _flip_step(setting, confidence):
    """Closed form: the step along each query's direction at which p(positive) = confidence."""
    context, _, _, x = setting
    finder = context.direction_finder
    z0 = x.view(len(x), -1)[:, 0].numpy().astype(np.float64)
    needed = THRESHOLD + math.log(confidence / (1 - confidence)) / SLOPE  # pixel0 at that confidence
    steps = []
    for m in finder.modes_for_class(1):
        w = finder.directions_standardized_[m]
        # raw z0 moves by scale_0 * alpha * sqrt(d) * w_0 per unit of alpha
        steps.append((needed - z0) / (finder.scale_[0] * math.sqrt(LATENT_DIM) * w[0]))
    return np.stack(steps, axis=1)  # (n, 2), mode order of modes_for_class


def test_search_finds_the_smallest_accepted_step(setting):
    context, _, _, x = setting
    method = _fit(DifCluE(search="bracket", max_decodes=8, require_mode=False, contrast="rest"), setting)
    out = method.generate(context, x, np.ones((len(x), 1), dtype=int))
    expected = _flip_step(setting, method.target_confidence)
    order = np.argsort(out.mode_ids, axis=1)  # slots in mode order
    found = np.take_along_axis(out.alphas, order, axis=1)
    assert (expected > 0).all()
    # every step is accepted, and lies within the search's 10% bracket above the exact step
    assert out.info["accepted_rate"] == 1.0
    assert np.all(found >= expected - 1e-6)
    assert np.all(found <= expected / 0.9 + 1e-6)
    # the classifier agrees on the images
    p = context.proba_model.torch_proba(out.counterfactuals.flatten(0, 1)).numpy()[:, 1]
    assert np.all(p >= method.target_confidence - 1e-6)


def test_a_step_too_small_never_flips_and_the_search_does(setting):
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    small = float(_flip_step(setting, 0.5).min()) / 4
    fixed = _fit(DifCluE(alpha=small, contrast="rest"), setting).generate(context, x, targets)
    p_fixed = context.proba_model.torch_proba(fixed.counterfactuals.flatten(0, 1)).numpy()[:, 1]
    assert np.all(p_fixed < 0.5)  # a quarter of the smallest flipping step: nothing flips
    np.testing.assert_allclose(fixed.alphas, small)
    auto = _fit(DifCluE(contrast="rest"), setting).generate(context, x, targets)
    p_auto = context.proba_model.torch_proba(auto.counterfactuals.flatten(0, 1)).numpy()[:, 1]
    assert np.all(p_auto > 0.5) and np.all(auto.alphas > small)


def test_search_cost_is_counted_and_bounded(setting):
    context, _, _, x = setting
    method = _fit(DifCluE(max_decodes=4, require_mode=False), setting)
    out = method.generate(context, x, np.ones((len(x), 1), dtype=int))
    n_cf, steps = len(x) * 2, method.decode_steps
    # inversion (5 steps per query, shared by its modes) plus 1 to max_decodes decodes per counterfactual
    assert len(x) * 5 + n_cf * steps <= out.n_function_evals <= len(x) * 5 + n_cf * 4 * steps
    assert out.n_function_evals == pytest.approx(len(x) * 5 + n_cf * steps * out.info["mean_decodes"])
    # without decode_steps of its own, the method decodes with the encoder's
    method = _fit(DifCluE(max_decodes=4, require_mode=False, decode_steps=None), setting)
    out = method.generate(context, x, np.ones((len(x), 1), dtype=int))
    assert out.n_function_evals == pytest.approx(len(x) * 5 + n_cf * context.decode_steps * out.info["mean_decodes"])


def test_edit_depth_inverts_and_decodes_part_of_the_chain(setting):
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    full = _fit(DifCluE(max_decodes=4, require_mode=False, decode_steps=4), setting).generate(context, x, targets)
    half = _fit(DifCluE(max_decodes=4, require_mode=False, decode_steps=4, edit_depth=0.5), setting)
    out = half.generate(context, x, targets)
    n_cf = len(x) * 2
    # 2 of the 4 decode steps inverted (not the encoder's 5), 3 calls (steps 2, 1, 0) per decode
    assert out.n_function_evals == pytest.approx(len(x) * 2 + n_cf * 3 * out.info["mean_decodes"])
    # the stand-in's edit does not depend on the depth, so the search lands on the same steps
    np.testing.assert_allclose(out.alphas, full.alphas)
    # a depth that rounds to the whole chain is the published edit
    same = _fit(DifCluE(max_decodes=4, require_mode=False, decode_steps=4, edit_depth=0.9), setting)
    assert same.generate(context, x, targets).n_function_evals == full.n_function_evals
    with pytest.raises(ValueError, match="edit_depth"):
        _fit(DifCluE(edit_depth=0.0), setting)


def test_mode_check_rejects_steps_that_do_not_reach_the_mode(setting):
    # With the mode check, a step is accepted only once the edited latent is nearest to the
    # mode's centre, which lies further along than the classifier's flip.
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    loose = _fit(DifCluE(max_decodes=8, require_mode=False, contrast="rest"), setting).generate(context, x, targets)
    strict = _fit(DifCluE(max_decodes=8, require_mode=True, contrast="rest"), setting).generate(context, x, targets)
    finder = context.direction_finder
    z_cf = strict.counterfactuals.flatten(0, 1).flatten(1)[:, :LATENT_DIM].numpy().astype(np.float64)
    np.testing.assert_array_equal(finder.predict(z_cf), strict.mode_ids.ravel())
    assert np.all(strict.alphas >= loose.alphas - 1e-9) and np.any(strict.alphas > loose.alphas * 1.2)


def test_mode_bound_keeps_far_edits_inside_the_modes_box(setting):
    context, Z, _, x = setting
    finder = context.direction_finder
    targets = np.ones((len(x), 1), dtype=int)
    free = _fit(DifCluE(alpha=3.0, contrast="rest"), setting).generate(context, x, targets)
    bounded_method = _fit(DifCluE(alpha=3.0, contrast="rest", mode_bound=0.0), setting)
    bounded = bounded_method.generate(context, x, targets)
    zq = x.view(len(x), -1)[:, :LATENT_DIM].numpy().astype(np.float64)
    members = finder.predict(Z)
    for out, inside in ((bounded, True), (free, False)):
        z_cf = out.counterfactuals.flatten(2)[..., :LATENT_DIM].numpy().astype(np.float64)
        ok = []
        for j in range(z_cf.shape[1]):
            m = out.mode_ids[:, j]
            box_lo = np.stack([Z[members == k].min(axis=0) for k in m])
            box_hi = np.stack([Z[members == k].max(axis=0) for k in m])
            lo, hi = np.minimum(box_lo, zq) - 1e-5, np.maximum(box_hi, zq) + 1e-5
            ok.append((z_cf[:, j] >= lo) & (z_cf[:, j] <= hi))
        assert np.all(ok) == inside
    assert set(bounded_method.mode_box_) == set(range(len(finder.mode_class_)))
    # the box is in standardised units and holds the mode's latents
    lo, hi = bounded_method.mode_box_[0]
    Zs = (Z[members == 0] - finder.mean_) / finder.scale_
    assert np.all(Zs >= lo - 1e-12) and np.all(Zs <= hi + 1e-12)


def test_mode_bound_is_validated(setting):
    with pytest.raises(ValueError, match="mode_bound"):
        _fit(DifCluE(mode_bound=0.5), setting)


def test_scan_search_finds_an_accepted_step_within_its_budget(setting):
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    method = _fit(DifCluE(search="scan", max_decodes=4, require_mode=False, contrast="rest"), setting)
    out = method.generate(context, x, targets)
    p = context.proba_model.torch_proba(out.counterfactuals.flatten(0, 1)).numpy()[:, 1]
    # a pair stops at its first accepted rung: fewer than the 4 rungs on average, counted exactly
    assert 1.0 <= out.info["mean_decodes"] < 4.0
    assert out.n_function_evals == pytest.approx(len(x) * 5 + len(x) * 2 * out.info["mean_decodes"]
                                                 * method.decode_steps)
    # every kept step is accepted, and it is the smallest accepted one of the ladder
    assert out.info["accepted_rate"] == 1.0 and np.all(p >= method.target_confidence - 1e-6)
    expected = _flip_step(setting, method.target_confidence)
    order = np.argsort(out.mode_ids, axis=1)
    found = np.take_along_axis(out.alphas, order, axis=1)
    assert np.all(found >= expected - 1e-6) and np.all(found / 2 ** (2 / 3) < expected + 1e-6)


def test_scan_search_falls_back_to_the_most_probable_step(setting):
    # a budget of one decode at a step too small: nothing flips, the one step tried is kept
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    method = _fit(DifCluE(search="scan", max_decodes=1, alpha_max=1e-3, require_mode=False, fallback=None), setting)
    out = method.generate(context, x, targets)
    assert out.info["accepted_rate"] == 0.0
    np.testing.assert_allclose(out.alphas, 1e-3)


@pytest.mark.parametrize("fallback", ["nearest", "centre", "local"])
def test_fallback_walks_failed_counterfactuals_into_their_mode(setting, fallback):
    # A search that cannot reach the flip (alpha_max far too small) fails everywhere; the fallback
    # then walks each latent towards its mode and lands there, for 2 extra decodes per slot.
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    failing = dict(search="scan", max_decodes=1, alpha_max=1e-3, contrast="rest")
    plain = _fit(DifCluE(**failing, fallback=None), setting).generate(context, x, targets)
    method = _fit(DifCluE(**failing, fallback=fallback, fallback_decodes=2), setting)
    out = method.generate(context, x, targets)
    assert plain.info["accepted_rate"] == 0.0 and plain.info["fallback_rate"] == 0.0
    assert out.info["accepted_rate"] == 1.0 and out.info["fallback_rate"] == 1.0
    n_slots = len(x) * 2
    # inversion + one ladder decode per slot + at most two fallback decodes per slot
    per_decode = method.decode_steps
    assert len(x) * 5 + n_slots * per_decode < out.n_function_evals <= len(x) * 5 + n_slots * per_decode * 3
    assert out.n_function_evals == pytest.approx(len(x) * 5 + n_slots * per_decode * out.info["mean_decodes"])
    # each counterfactual's latent (the stand-in decodes z exactly) is re-encoded into its own mode
    finder = context.direction_finder
    z_cf = out.counterfactuals.flatten(0, 1).flatten(1)[:, :LATENT_DIM].numpy().astype(np.float64)
    assert np.array_equal(finder.predict(z_cf), out.mode_ids.reshape(-1))
    # the reported step is the edit's length in step units, larger than the failed search's
    assert np.all(out.alphas > 1e-3)
    if fallback == "centre":
        assert all(points.shape[0] == 1 for points in method.mode_points_.values())
    else:  # every training member of the mode is kept
        assert sum(points.shape[0] for points in method.mode_points_.values()) == len(setting[1])


def test_local_fallback_targets_grow_from_the_query_neighbours_to_the_centre(setting, monkeypatch):
    context, Z, y, _ = setting
    method = _fit(DifCluE(fallback="local", fallback_decodes=3, fallback_share=0.25), setting)
    finder = context.direction_finder
    zs = (Z[:5] - finder.mean_) / finder.scale_
    dirs = np.zeros(5, dtype=np.int64)
    points = method.mode_points_[0].astype(np.float64)
    rungs = method._fallback_rungs(zs, dirs)
    assert [t for _, t in rungs] == [1.0, 1.0, 1.0]  # each decode goes all the way to its target
    # shares 0.25, 0.5, 1: the mean of the nearest quarter, half, then all members (the centre)
    dist = ((zs[:, None, :] - points[None]) ** 2).sum(-1)
    for (targets, _), share in zip(rungs, (0.25, 0.5, 1.0)):
        k = int(np.ceil(share * len(points)))
        expected = np.stack([points[np.argsort(row)[:k]].mean(axis=0) for row in dist])
        np.testing.assert_allclose(targets, expected, atol=1e-6)
    np.testing.assert_allclose(rungs[-1][0], np.broadcast_to(points.mean(axis=0), zs.shape), atol=1e-6)
    # a large mode keeps at most MAX_MODE_POINTS members, spread through the training order
    import skcfx.methods.difclue as difclue_module
    with monkeypatch.context() as patch:
        patch.setattr(difclue_module, "MAX_MODE_POINTS", 8)
        capped = _fit(DifCluE(fallback="local"), setting)
    sizes = {m: len(p) for m, p in capped.mode_points_.items()}
    assert all(n == 8 for n in sizes.values()), sizes
    assert np.isin(capped.mode_points_[0], points).all(axis=1).all()  # members, not new points
    # the helper behind it, in blocks smaller than the data (the memory bound for large modes)
    rng = np.random.default_rng(1)
    queries, members = rng.normal(size=(37, 4)), rng.normal(size=(101, 4))
    d2 = ((queries[:, None, :] - members[None]) ** 2).sum(-1)
    ks = (1, 7, 50, 101, 500)
    means = _means_of_nearest(queries, members, ks, block_elements=300)
    assert means.shape == (len(ks),) + queries.shape
    for k, got in zip(ks, means):
        expected = np.stack([members[np.argsort(row)[:k]].mean(axis=0) for row in d2])
        np.testing.assert_allclose(got, expected, atol=1e-12)
    # 'nearest' walks t = 1/2, 1 towards the single nearest member
    nearest = _fit(DifCluE(fallback="nearest", fallback_decodes=2), setting)._fallback_rungs(zs, dirs)
    assert [t for _, t in nearest] == [0.5, 1.0]
    np.testing.assert_allclose(nearest[0][0], points[dist.argmin(axis=1)], atol=1e-6)


def test_fallback_leaves_accepted_counterfactuals_alone(setting):
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=4, require_mode=False, contrast="rest")
    plain = _fit(DifCluE(**kwargs, fallback=None), setting).generate(context, x, targets)
    out = _fit(DifCluE(**kwargs, fallback="nearest"), setting).generate(context, x, targets)
    assert plain.info["accepted_rate"] == 1.0 and out.info["fallback_rate"] == 0.0
    assert out.n_function_evals == plain.n_function_evals
    np.testing.assert_allclose(out.alphas, plain.alphas)
    with pytest.raises(ValueError, match="fallback"):
        _fit(DifCluE(fallback="far"), setting)


def test_scan_extension_doubles_past_a_short_ladder_until_accepted(setting):
    # A proposal far too short (0.01): the one-rung ladder fails; each extension decode doubles the
    # step, so the step kept is the first 0.01 * 2**j at or above the closed-form accepted step.
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=1, require_mode=False, contrast="rest", fallback=None)
    short = _fit(DifCluE(**kwargs), setting)
    short._propose = lambda zs, w, tgt, dirs=None: np.full(len(w), 0.01)
    assert short.generate(context, x, targets).info["accepted_rate"] == 0.0
    method = _fit(DifCluE(**kwargs, extend_decodes=12), setting)
    method._propose = short._propose
    out = method.generate(context, x, targets)
    assert out.info["accepted_rate"] == 1.0
    expected = _flip_step(setting, method.target_confidence)
    doublings = np.ceil(np.log2(expected / 0.01))
    order = np.argsort(out.mode_ids, axis=1)
    np.testing.assert_allclose(np.take_along_axis(out.alphas, order, axis=1), 0.01 * 2 ** doublings)
    # one ladder decode, then one per doubling, for each slot (no more once accepted)
    assert out.info["mean_decodes"] == pytest.approx(1 + doublings.mean())
    # the budget caps it: two doublings are not enough here, and cost exactly two decodes more
    capped = _fit(DifCluE(**kwargs, extend_decodes=2), setting)
    capped._propose = short._propose
    out = capped.generate(context, x, targets)
    assert doublings.min() > 2 and out.info["accepted_rate"] == 0.0 and out.info["mean_decodes"] == 3.0
    with pytest.raises(ValueError, match="extend_decodes"):
        _fit(DifCluE(extend_decodes=-1), setting)


def test_scan_decodes_each_rung_only_for_pairs_not_yet_accepted(setting, monkeypatch):
    # Stopping a pair at its first accepted rung returns what the whole ladder would (the smallest
    # accepted step); every rung is one batched decode of the pairs still searching.
    context, _, _, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=4, require_mode=False, contrast="rest", fallback=None,
                  extend_decodes=0)
    method = _fit(DifCluE(**kwargs), setting)
    finder = context.direction_finder
    needed = THRESHOLD + math.log(method.target_confidence / (1 - method.target_confidence)) / SLOPE

    def propose(zs, w, tgt, dirs=None):
        # each slot's exact accepted step (see _flip_step), times 0.51 for every other slot (its
        # fourth rung, 1.02x, is the first accepted) and 1.01 for the rest (third rung, 1.27x)
        z0 = finder.mean_[0] + finder.scale_[0] * zs[:, 0]
        exact = (needed - z0) / (finder.scale_[0] * math.sqrt(LATENT_DIM) * w[:, 0])
        return np.where(np.arange(len(w)) % 2 == 0, 0.51, 1.01) * exact

    monkeypatch.setattr(method, "_propose", propose)
    sizes = []
    decode = context.model.decode
    monkeypatch.setattr(context.model, "decode", lambda z, *a, **k: sizes.append(len(z)) or decode(z, *a, **k),
                        raising=False)
    out = method.generate(context, x, targets)
    n = out.alphas.size
    assert out.info["accepted_rate"] == 1.0
    assert sizes == [n, n, n, n // 2]
    order = np.argsort(out.mode_ids, axis=1)
    ratio = np.take_along_axis(out.alphas, order, axis=1) / _flip_step(setting, method.target_confidence)
    np.testing.assert_allclose(np.sort(ratio.ravel()), np.r_[np.full(n // 2, 1.02), np.full(n // 2, 1.01 * 2 ** (1 / 3))])
    assert out.info["mean_decodes"] == pytest.approx(3.5)


class _WeakLatentModel(_ExactModel):
    """Unguided decodes carry only 40% of the edit (the inverted noise pulls back); guided ones,
    at any scale > 0, the whole edit. Guided steps cost two denoiser calls."""

    has_null_latent = True

    def decode(self, z, x_T, n_steps, *, guidance_scale=0.0, counter=None, start_index=None, **_):
        if counter is not None:
            counter.add(z.shape[0] * n_steps * (2 if guidance_scale > 0 else 1))
        out = x_T.clone().flatten(1)
        out[:, :LATENT_DIM] = z if guidance_scale > 0 else x_T.flatten(1)[:, :LATENT_DIM] + 0.4 * (
            z - x_T.flatten(1)[:, :LATENT_DIM])
        return out.reshape(x_T.shape).clamp(-1, 1)


def test_retry_guidance_searches_the_failures_again_with_guided_decodes(setting):
    context, Z, y, x = setting
    weak = ExplainContext(**{**context.__dict__, "model": _WeakLatentModel()})
    targets = np.ones((len(x), 1), dtype=int)
    # an unguided search (guidance_scale=0), so that only the retry is guided
    kwargs = dict(search="scan", max_decodes=2, extend_decodes=0, require_mode=False, contrast="rest",
                  fallback=None, alpha_max=1.0, retry_search=True, guidance_scale=0.0)
    plain = DifCluE(**kwargs, retry_guidance=0.0).fit(weak, Z, y).generate(weak, x, targets)
    assert plain.info["accepted_rate"] == 0.0 and plain.info["retry_rate"] == 0.0
    method = DifCluE(**kwargs).fit(weak, Z, y)  # retry_guidance='auto'
    out = method.generate(weak, x, targets)
    assert out.info["retry_rate"] == 1.0 and out.info["accepted_rate"] == 1.0
    n_slots = out.alphas.size
    # inversion, the 2 unguided rungs for every slot, then guided rungs (2 calls per step) until accepted
    guided_decodes = out.info["mean_decodes"] - 2
    assert 1 <= guided_decodes <= 2 and out.info["mean_guided_decodes"] == pytest.approx(guided_decodes)
    assert out.n_function_evals == pytest.approx(len(x) * 5 + n_slots * method.decode_steps * (2 + 2 * guided_decodes))
    # the guided retry lands where the exact model would: the smallest accepted rung
    expected = _flip_step(setting, 0.9)
    order = np.argsort(out.mode_ids, axis=1)
    assert np.all(np.take_along_axis(out.alphas, order, axis=1) >= expected - 1e-6)


def test_retry_without_search_walks_the_failures_with_guided_fallback_decodes(setting):
    # The weak stand-in cannot reach the flip unguided, and its unguided fallback stops short of the
    # mode (the mode check fails); the guided fallback alone lands in the mode.
    context, Z, y, x = setting
    weak = ExplainContext(**{**context.__dict__, "model": _WeakLatentModel()})
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=2, extend_decodes=0, require_mode=True, contrast="rest",
                  fallback="centre", fallback_decodes=2, alpha_max=1.0, guidance_scale=0.0)
    plain = DifCluE(**kwargs, retry_guidance=0.0).fit(weak, Z, y).generate(weak, x, targets)
    assert plain.info["accepted_rate"] == 0.0
    method = DifCluE(**kwargs, retry_search=False, unguided_rescue=True).fit(weak, Z, y)
    out = method.generate(weak, x, targets)
    assert out.info["retry_rate"] == 1.0 and out.info["accepted_rate"] == 1.0
    # 2 rungs and 2 unguided fallback decodes for every slot, then 1 or 2 guided fallback decodes
    assert 1.0 <= out.info["mean_guided_decodes"] <= 2.0
    assert out.info["mean_decodes"] == pytest.approx(4.0 + out.info["mean_guided_decodes"])
    n_slots = out.alphas.size
    decodes = out.info["mean_decodes"] + out.info["mean_guided_decodes"]  # a guided decode costs two
    assert out.n_function_evals == pytest.approx(len(x) * 5 + n_slots * method.decode_steps * decodes)
    finder = context.direction_finder
    z_cf = out.counterfactuals.flatten(0, 1).flatten(1)[:, :LATENT_DIM].numpy().astype(np.float64)
    assert np.array_equal(finder.predict(z_cf), out.mode_ids.reshape(-1))


def test_without_unguided_rescue_the_failures_go_straight_to_the_guided_fallback(setting):
    # Same weak stand-in: the unguided fallback cannot help, so skipping it saves its 2 decodes per
    # slot and the guided fallback lands every counterfactual in its mode all the same; the
    # unguided extension past the ladder is skipped too.
    context, Z, y, x = setting
    weak = ExplainContext(**{**context.__dict__, "model": _WeakLatentModel()})
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=2, extend_decodes=0, require_mode=True, contrast="rest",
                  fallback="centre", fallback_decodes=2, alpha_max=1.0, retry_search=False, guidance_scale=0.0)
    both = DifCluE(**kwargs, unguided_rescue=True).fit(weak, Z, y).generate(weak, x, targets)
    direct = DifCluE(**kwargs, unguided_rescue=False).fit(weak, Z, y).generate(weak, x, targets)
    extended = dict(kwargs, extend_decodes=2, unguided_rescue=False)
    direct_ext = DifCluE(**extended).fit(weak, Z, y).generate(weak, x, targets)
    assert direct_ext.n_function_evals == direct.n_function_evals
    assert direct.info["accepted_rate"] == 1.0 and direct.info["retry_rate"] == 1.0
    assert direct.info["mean_decodes"] == pytest.approx(2.0 + direct.info["mean_guided_decodes"])
    assert direct.info["mean_guided_decodes"] == pytest.approx(both.info["mean_guided_decodes"])
    np.testing.assert_allclose(direct.counterfactuals.numpy(), both.counterfactuals.numpy(), atol=1e-6)
    # the 2 unguided fallback decodes (decode_steps=10 calls each) per slot are what it saves
    assert direct.n_function_evals == pytest.approx(both.n_function_evals - 2 * both.alphas.size * 10)
    # without a guided retry the fallback runs unguided whatever unguided_rescue says
    off = dict(kwargs, retry_guidance=0.0)
    a = DifCluE(**off, unguided_rescue=True).fit(weak, Z, y).generate(weak, x, targets)
    b = DifCluE(**off, unguided_rescue=False).fit(weak, Z, y).generate(weak, x, targets)
    assert a.n_function_evals == b.n_function_evals and a.info["mean_decodes"] == 4.0


def test_retry_search_last_searches_only_what_the_guided_fallback_left(setting):
    context, Z, y, x = setting
    weak = ExplainContext(**{**context.__dict__, "model": _WeakLatentModel()})
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=2, extend_decodes=0, require_mode=True, contrast="rest",
                  alpha_max=1.0, guidance_scale=0.0)
    # Without a fallback, 'last' is the guided search of every failure, as retry_search=True.
    no_fb = dict(kwargs, fallback=None)
    before = DifCluE(**no_fb, retry_search=True).fit(weak, Z, y).generate(weak, x, targets)
    after = DifCluE(**no_fb, retry_search="last").fit(weak, Z, y).generate(weak, x, targets)
    none = DifCluE(**no_fb).fit(weak, Z, y).generate(weak, x, targets)
    assert none.info["accepted_rate"] == 0.0 and none.info["mean_guided_decodes"] == 0.0
    assert after.info["accepted_rate"] == before.info["accepted_rate"] > 0
    assert after.n_function_evals == before.n_function_evals > none.n_function_evals
    np.testing.assert_allclose(after.counterfactuals.numpy(), before.counterfactuals.numpy())
    numpy_true = DifCluE(**no_fb, retry_search=np.True_).fit(weak, Z, y).generate(weak, x, targets)
    assert numpy_true.n_function_evals == before.n_function_evals  # a numpy bool is a bool here
    # Where the guided fallback gets everything accepted (the stand-in's guided decodes are exact),
    # 'last' has nothing left to search: the same counterfactuals for the same calls.
    plain = DifCluE(**kwargs, fallback="centre").fit(weak, Z, y).generate(weak, x, targets)
    last = DifCluE(**kwargs, fallback="centre", retry_search="last").fit(weak, Z, y).generate(weak, x, targets)
    assert plain.info["accepted_rate"] == 1.0
    assert last.n_function_evals == plain.n_function_evals
    np.testing.assert_allclose(last.counterfactuals.numpy(), plain.counterfactuals.numpy())
    with pytest.raises(ValueError, match="retry_search"):
        DifCluE(retry_search="first").fit(weak, Z, y)


class _RecordingWeakModel(_WeakLatentModel):
    """The weak stand-in, recording the guidance keywords of every decode."""

    def __init__(self):
        self.calls = []

    def decode(self, z, x_T, n_steps, *, guidance_scale=0.0, counter=None, start_index=None, **kwargs):
        self.calls.append((guidance_scale, kwargs))
        return super().decode(z, x_T, n_steps, guidance_scale=guidance_scale, counter=counter,
                              start_index=start_index)


def test_auto_guidance_guides_every_decode_in_its_interval_when_the_encoder_has_a_null_latent(setting):
    context, Z, y, x = setting
    targets = np.ones((len(x), 1), dtype=int)
    kwargs = dict(search="scan", max_decodes=2, extend_decodes=0, require_mode=False, contrast="rest",
                  fallback=None, alpha_max=1.0)
    model = _RecordingWeakModel()
    weak = ExplainContext(**{**context.__dict__, "model": model})
    method = DifCluE(**kwargs).fit(weak, Z, y)  # guidance_scale='auto', guidance_interval=(0.1, 0.6)
    assert method.resolved_guidance_scale(model) == 2.0
    out = method.generate(weak, x, targets)
    # the ladder's decodes are guided (the weak stand-in's guided decodes are exact): no retry needed
    assert out.info["accepted_rate"] == 1.0 and out.info["retry_rate"] == 0.0
    assert out.info["mean_guided_decodes"] == out.info["mean_decodes"]
    assert model.calls and all(scale == 2.0 and kw == {"guidance_interval": (0.1, 0.6)} for scale, kw in model.calls)
    # a float interval is the share of steps guided, the noisiest first (DifCluE decodes in 10 steps)
    model.calls.clear()
    DifCluE(**kwargs, guidance_interval=0.5).fit(weak, Z, y).generate(weak, x, targets)
    assert model.calls and all(kw == {"guidance_steps": 5} for _, kw in model.calls)
    # without a null latent 'auto' is no guidance, and the unguided search fails as before
    exact = DifCluE(**kwargs).fit(context, Z, y)
    assert exact.resolved_guidance_scale(context.model) == 0.0
    unguided = DifCluE(**kwargs, guidance_scale=0.0, retry_guidance=0.0).fit(weak, Z, y).generate(weak, x, targets)
    assert unguided.info["accepted_rate"] == 0.0 and unguided.info["mean_guided_decodes"] == 0.0


@pytest.mark.parametrize("interval", [(0.6, 0.1), (0.1, 1.5), (-0.1, 0.5), (0.1,), ("a", "b")])
def test_a_malformed_guidance_interval_fails_at_fit(setting, interval):
    with pytest.raises(ValueError, match="guidance interval"):
        _fit(DifCluE(guidance_interval=interval), setting)
