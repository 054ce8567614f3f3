"""Schedules and samplers, checked against closed forms with fake denoisers."""

import math

import pytest
import torch

from skcfx.diffusion.sampling import (
    CountingDenoiser,
    LatentGuidedDenoiser,
    NFECounter,
    ddim_step,
    invert_ddim,
    predict_eps,
    predict_x0,
    q_sample,
    sample_ddim,
    sample_ddpm,
    sample_guided,
)
from skcfx.diffusion.schedule import Schedule, alpha_bar, linear_betas, respace_timesteps


def _gaussian_denoiser(data_std):
    """Exact eps-prediction for data x_0 ~ N(0, data_std^2 I) under the full linear schedule.

    E[eps | x_t] = sqrt(1 - ab) x_t / (ab s^2 + 1 - ab), so the probability-flow ODE is
    exact and DDIM errors come only from discretisation.
    """
    full = alpha_bar(linear_betas())

    def eps_model(x_t, t):
        ab = full[t].to(x_t.dtype).reshape(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x_t / (ab * data_std ** 2 + 1 - ab)

    return eps_model


def _constant_denoiser(eps):
    return lambda x_t, t: eps.expand_as(x_t)


# ---------------------------------------------------------------------------
# Schedules

def test_linear_betas_and_alpha_bar():
    betas = linear_betas()
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    ab = alpha_bar(betas)
    assert torch.allclose(ab[:3], torch.cumprod(1 - betas[:3], 0))
    assert bool((ab.diff() < 0).all())
    # Known value of the published schedule: alpha_bar_999 is about 4.04e-5.
    assert ab[-1].item() == pytest.approx(4.04e-5, rel=1e-2)


@pytest.mark.parametrize("n_steps", [1, 5, 10, 20, 50, 250, 1000])
def test_respacing_divisors_uses_stride_T_over_n(n_steps):
    steps = respace_timesteps(1000, n_steps)
    assert steps.dtype == torch.long and len(steps) == n_steps
    assert steps[0] == 0
    assert torch.equal(steps.diff(), torch.full((n_steps - 1,), 1000 // n_steps))


def test_respacing_non_divisor_follows_published_rule():
    # Published space_timesteps("ddim3") takes the first stride with exactly 3 steps: 334.
    assert respace_timesteps(1000, 3).tolist() == [0, 334, 668]
    assert respace_timesteps(1000, 30)[-1] <= 999
    with pytest.raises(ValueError, match="n_steps"):
        respace_timesteps(1000, 600)  # no constant stride gives exactly 600 steps
    with pytest.raises(ValueError, match="n_steps"):
        respace_timesteps(1000, 0)


def test_schedule_respaced_keeps_alpha_bar_and_recomputes_betas():
    full = Schedule.linear(1000)
    s = Schedule.linear(1000, n_steps=10)
    assert len(full) == 1000 and len(s) == 10
    assert torch.equal(s.alpha_bar, full.alpha_bar[s.timesteps])
    # The respaced betas define the same alpha_bar through their cumulative product.
    assert torch.allclose(torch.cumprod(1 - s.betas, 0), s.alpha_bar, rtol=1e-12)
    assert s.betas.max() < 1 and s.betas.min() > 0
    expected = s.betas[1:] * (1 - s.alpha_bar[:-1]) / (1 - s.alpha_bar[1:])
    assert torch.allclose(s.posterior_variance[1:], expected)
    assert s.posterior_variance[0] == 0
    assert s.alpha_bar_next[-1] == 0 and s.alpha_bar_prev[0] == 1


def test_schedule_validates():
    with pytest.raises(ValueError, match="ascending"):
        Schedule(timesteps=torch.tensor([0, 20, 10]), alpha_bar=torch.tensor([0.9, 0.8, 0.7]), T=100)
    with pytest.raises(ValueError, match="alpha_bar"):
        Schedule(timesteps=torch.tensor([0, 10]), alpha_bar=torch.tensor([0.5, 0.9]), T=100)
    with pytest.raises(ValueError, match="T"):
        Schedule.linear(T=0)


# ---------------------------------------------------------------------------
# Closed forms

def test_q_sample_and_predict_x0_are_inverse():
    s = Schedule.linear(1000, 10)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    x_t = q_sample(x0, 7, s, noise)
    ab = s.alpha_bar[7].item()
    assert torch.allclose(x_t, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise, atol=1e-6)
    assert torch.allclose(predict_x0(x_t, noise, ab), x0, atol=1e-5)
    assert torch.allclose(predict_eps(x_t, x0, ab), noise, atol=1e-4)
    # Per-sample indices.
    idx = torch.tensor([0, 5, 9])
    per_sample = q_sample(x0, idx, s, noise)
    for k in range(3):
        assert torch.allclose(per_sample[k], q_sample(x0[k:k + 1], int(idx[k]), s, noise[k:k + 1])[0])


def test_ddim_step_clips_and_rederives_eps():
    x_t = torch.full((1, 1, 2, 2), 3.0)
    eps = torch.zeros_like(x_t)
    ab_t, ab_next = 0.5, 0.9
    x_next, x0 = ddim_step(x_t, eps, ab_t, ab_next)
    assert torch.all(x0 == 1.0)  # 3 / sqrt(0.5) clipped to 1
    eps_used = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)  # re-derived from the clipped x0
    expected = math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next) * eps_used
    assert torch.allclose(x_next, expected, atol=1e-6)
    unclipped, x0_raw = ddim_step(x_t, eps, ab_t, ab_next, clip_x0=False)
    assert torch.allclose(x0_raw, x_t / math.sqrt(ab_t))
    assert not torch.allclose(unclipped, x_next)


def test_eta_one_step_is_the_ddpm_posterior():
    s = Schedule.linear(1000, 20)
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 3, 4, 4, generator=gen)
    eps = 0.3 * torch.randn(x_t.shape, generator=gen)
    noise = torch.randn(x_t.shape, generator=gen)
    i = 12
    ab_t, ab_prev = s.alpha_bar[i].item(), s.alpha_bar_prev[i].item()
    beta = s.betas[i].item()
    x_next, x0 = ddim_step(x_t, eps, ab_t, ab_prev, eta=1.0, noise=noise, clip_x0=False)
    # Ho et al. (2020) eq. 7: posterior mean and variance with the respaced beta.
    coef_x0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
    coef_xt = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t)
    mean = coef_x0 * x0 + coef_xt * x_t
    std = math.sqrt(s.posterior_variance[i].item())
    assert torch.allclose(x_next, mean + std * noise, atol=1e-5)


def test_ddim_step_mean_shift_and_argument_checks():
    x_t, eps = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    base, _ = ddim_step(x_t, eps, 0.5, 0.9)
    shift = torch.full_like(x_t, 0.25)
    shifted, _ = ddim_step(x_t, eps, 0.5, 0.9, mean_shift=shift)
    assert torch.allclose(shifted - base, shift)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x_t, eps, 0.5, 0.9, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(x_t, eps, 0.5, 0.9, eta=-0.1)
    with pytest.raises(ValueError, match="ab_next"):
        ddim_step(x_t, eps, 0.5, 0.0, eta=1.0, noise=eps)


# ---------------------------------------------------------------------------
# Samplers

def _oracle_denoiser(schedule_T=1000):
    """Denoiser that knows the clean image through ``cond`` (like DiffAE's z_sem, taken to the limit)."""
    full = alpha_bar(linear_betas(schedule_T))

    def eps_model(x_t, t, cond):
        ab = full[t].to(x_t.dtype).reshape(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * cond) / (1 - ab).sqrt()

    return eps_model


def test_inversion_ends_on_the_last_eps():
    # ab_next = 0 after the last inversion step, so x_T is the last eps prediction.
    s = Schedule.linear(1000, 10)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 3, 4, 4, generator=gen) * 1.6 - 0.8
    eps = 0.5 * torch.randn(1, 3, 4, 4, generator=gen)
    x_T = invert_ddim(_constant_denoiser(eps), x0, s)
    assert torch.allclose(x_T, eps.expand_as(x0), atol=1e-5)


def test_inversion_then_decode_round_trips_with_a_conditioned_denoiser():
    s = Schedule.linear(1000, 10)
    x0 = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    model = CountingDenoiser(_oracle_denoiser())
    x_T = invert_ddim(model, x0, s, extra_args={"cond": x0})
    ab0 = s.alpha_bar[0].item()
    # The oracle's eps is constant along the chain: (1 - sqrt(ab_0)) / sqrt(1 - ab_0) * x_0.
    assert torch.allclose(x_T, (1 - math.sqrt(ab0)) / math.sqrt(1 - ab0) * x0, atol=1e-5)
    recon = sample_ddim(model, x_T, s, extra_args={"cond": x0})
    assert torch.allclose(recon, x0, atol=1e-5)
    assert model.n_calls == 2 * len(s)


def test_exact_gaussian_denoiser_maps_noise_to_data_and_back():
    # For x_0 ~ N(0, 0.5^2) the DDIM ODE with the exact denoiser is an exact transport:
    # decoding standard normal noise gives std 0.5 and inverting data gives std 1, up to a
    # discretisation error that shrinks as the number of steps grows.
    model = _gaussian_denoiser(data_std=0.5)
    noise = torch.randn(500, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    data = 0.5 * torch.randn(500, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    decode_err, invert_err = [], []
    for n_steps in (10, 50, 200):
        s = Schedule.linear(1000, n_steps)
        decode_err.append(abs(sample_ddim(model, noise, s, clip_x0=False).std().item() - 0.5))
        invert_err.append(abs(invert_ddim(model, data, s, clip_x0=False).std().item() - 1.0))
    assert decode_err[0] > decode_err[1] > decode_err[2] and decode_err[2] < 0.015
    assert invert_err[0] > invert_err[1] > invert_err[2] and invert_err[2] < 0.03
    # Clipping the clean estimate (the default) keeps the samples in [-1, 1].
    clipped = sample_ddim(model, 3 * noise, Schedule.linear(1000, 10))
    assert clipped.abs().max() <= 1.0 + 1e-6


def test_counting_and_callback():
    s = Schedule.linear(1000, 8)
    calls = []
    model = CountingDenoiser(_gaussian_denoiser(0.5))
    x = torch.zeros(3, 1, 4, 4)
    sample_ddim(model, x, s, callback=calls.append)
    assert model.n_calls == 8 and model.n_samples == 24
    assert [c["t"] for c in calls] == s.timesteps.flip(0).tolist()
    assert set(calls[0]) == {"x", "i", "t", "x0", "eps"}
    model.reset()
    invert_ddim(model, x, s)
    assert model.n_calls == 8
    model.reset()
    sample_ddim(model, x, s, start_index=3)
    assert model.n_calls == 4
    model.reset()
    invert_ddim(model, x, s, stop_index=3)  # part-way: steps 0, 1, 2
    assert model.n_calls == 3
    for bad in (0, 9):
        with pytest.raises(ValueError, match="stop_index"):
            invert_ddim(model, x, s, stop_index=bad)


def test_denoiser_receives_original_timesteps_and_extra_args():
    s = Schedule.linear(1000, 5)
    seen = []

    def model(x_t, t, cond):
        seen.append((t.clone(), cond))
        return torch.zeros_like(x_t)

    invert_ddim(model, torch.zeros(2, 1, 2, 2), s, extra_args={"cond": "z"})
    assert [t.tolist() for t, _ in seen] == [[k, k] for k in (0, 200, 400, 600, 800)]
    assert all(t.dtype == torch.long for t, _ in seen) and {c for _, c in seen} == {"z"}


def test_stochastic_sampling_is_reproducible_and_needs_a_generator():
    s = Schedule.linear(1000, 10)
    model = _gaussian_denoiser(0.5)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    a = sample_ddpm(model, x_T, s, generator=torch.Generator().manual_seed(5))
    b = sample_ddim(model, x_T, s, eta=1.0, generator=torch.Generator().manual_seed(5))
    c = sample_ddpm(model, x_T, s, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, sample_ddim(model, x_T, s))
    with pytest.raises(ValueError, match="generator"):
        sample_ddim(model, x_T, s, eta=0.5)
    with pytest.raises(ValueError, match="start_index"):
        sample_ddim(model, x_T, s, start_index=10)
    with pytest.raises(TypeError, match="schedule"):
        sample_ddim(model, x_T, [0.5, 0.4])


def test_plain_samplers_build_no_graph():
    weight = torch.nn.Parameter(torch.tensor(0.1))
    s = Schedule.linear(1000, 4)
    out = sample_ddim(lambda x, t: weight * x, torch.ones(1, 1, 2, 2), s)
    assert not out.requires_grad
    assert not invert_ddim(lambda x, t: weight * x, torch.ones(1, 1, 2, 2), s).requires_grad


def test_guided_loop_can_reuse_ddim_step_with_gradients():
    # A DiME-like loop: gradients taken on the clean estimate, outside the samplers.
    s = Schedule.linear(1000, 10)
    model = _gaussian_denoiser(0.5)
    target = torch.full((1, 1, 4, 4), 0.5)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    for i in range(len(s) - 1, -1, -1):
        t = torch.full((1,), int(s.timesteps[i]))
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = predict_x0(x_in, model(x_in, t), s.alpha_bar[i].item())
            grad, = torch.autograd.grad(((x0 - target) ** 2).sum(), x_in)
        with torch.no_grad():
            eps = model(x, t)
            ab_t = s.alpha_bar[i].item()
            x, _ = ddim_step(x, eps, ab_t, s.alpha_bar_prev[i].item(), mean_shift=-0.2 * ab_t * grad)
    unguided = sample_ddim(model, torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(7)), s)
    assert (x - target).abs().mean() < (unguided - target).abs().mean()


def test_latent_guidance_extrapolates_from_the_null_latent_in_one_call():
    # eps = the first latent coordinate everywhere, so guidance is checkable by hand.
    def model(x_t, t, cond):
        return torch.zeros_like(x_t) + cond[:, :1, None, None]

    counting = CountingDenoiser(model)
    guided = LatentGuidedDenoiser(counting, lambda n: torch.full((n, 2), -1.0), scale=2.0)
    x = torch.zeros(3, 1, 2, 2)
    cond = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    eps = guided(x, torch.full((3,), 7), cond=cond)
    expected = cond[:, 0] + 2.0 * (cond[:, 0] + 1.0)  # eps_z + s (eps_z - eps_null)
    assert torch.allclose(eps[:, 0, 0, 0], expected)
    assert counting.n_calls == 1 and counting.n_samples == 6  # one batched call, 2n samples
    # scale 0 is the plain conditional denoiser at the plain cost
    counting.reset()
    plain = LatentGuidedDenoiser(counting, lambda n: torch.full((n, 2), -1.0), scale=0.0)
    assert torch.allclose(plain(x, torch.full((3,), 7), cond=cond)[:, 0, 0, 0], cond[:, 0])
    assert counting.n_samples == 3
    with pytest.raises(ValueError, match="scale"):
        LatentGuidedDenoiser(model, lambda n: None, scale=-1.0)


def test_latent_guidance_only_at_timesteps_from_min_t():
    def model(x_t, t, cond):
        return torch.zeros_like(x_t) + cond[:, :1, None, None]

    counting = CountingDenoiser(model)
    guided = LatentGuidedDenoiser(counting, lambda n: torch.full((n, 2), -1.0), scale=2.0, min_t=500)
    x, cond = torch.zeros(2, 1, 2, 2), torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    noisy = guided(x, torch.full((2,), 700), cond=cond)  # guided: 2n samples
    assert torch.allclose(noisy[:, 0, 0, 0], cond[:, 0] + 2.0 * (cond[:, 0] + 1.0)) and counting.n_samples == 4
    clean = guided(x, torch.full((2,), 100), cond=cond)  # below min_t: the plain conditional call
    assert torch.allclose(clean[:, 0, 0, 0], cond[:, 0]) and counting.n_samples == 6


# ---------------------------------------------------------------------------
# The guided sampler (DiME / FastDiME)

def _posterior_mean(x0, x_t, s, i):
    """Textbook DDPM posterior mean (Ho et al. 2020, eq. 7), written independently of ddim_step."""
    ab, ab_prev = s.alpha_bar[i].item(), s.alpha_bar_prev[i].item()
    beta = 1 - ab / ab_prev
    return (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x_t


@pytest.mark.parametrize("scale_by_alpha", [True, False])
def test_one_guided_step_follows_the_published_formula(scale_by_alpha):
    # z_{i-1} = mu(z_i) - Sigma_i * g / sqrt(alpha_bar_i) + sqrt(Sigma_i) * noise   (DiME, Alg. 1)
    s = Schedule.linear(1000, 20)
    i = 9
    x_t = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = 0.3 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    g = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    steps = []
    sample_guided(_constant_denoiser(eps), x_t, s, i, grad_fn=lambda x_hat: g,
                  generator=torch.Generator().manual_seed(5), scale_by_alpha=scale_by_alpha,
                  callback=lambda info: steps.append(info["x"].clone()))
    ab = s.alpha_bar[i].item()
    x0 = ((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
    variance = s.posterior_variance[i].item()
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
    shift = variance * g / (math.sqrt(ab) if scale_by_alpha else 1.0)
    expected = _posterior_mean(x0, x_t, s, i) - shift + math.sqrt(variance) * noise
    torch.testing.assert_close(steps[0], expected, rtol=1e-5, atol=1e-5)
    assert len(steps) == i + 1
    # the guidance moved the step, by exactly the shift
    unguided = _posterior_mean(x0, x_t, s, i) + math.sqrt(variance) * noise
    assert (steps[0] - unguided).abs().max() > 1e-3


def test_guided_sampler_clean_estimates_and_their_cost():
    s = Schedule.linear(1000, 20)
    x = torch.zeros(1, 1, 2, 2)
    seen = []

    def grad_fn(x_hat):
        seen.append(x_hat.clone())
        return torch.zeros_like(x_hat)

    one_step = CountingDenoiser(lambda x_t, t: 0.1 * x_t)
    sample_guided(one_step, x, s, 5, grad_fn=grad_fn, generator=torch.Generator().manual_seed(0))
    assert one_step.n_calls == 6  # one call per step
    rollout = CountingDenoiser(lambda x_t, t: 0.1 * x_t)
    query = torch.full((1, 1, 2, 2), 0.25)
    seen.clear()
    sample_guided(rollout, x, s, 5, grad_fn=grad_fn, clean_estimate="rollout", x_hat=query,
                  generator=torch.Generator().manual_seed(0))
    assert rollout.n_calls == 6 + (5 + 4 + 3 + 2 + 1)  # DiME: tau (tau + 1) / 2 with tau = 6
    torch.testing.assert_close(seen[0], query)  # the first estimate is the one given
    with pytest.raises(ValueError, match="x_hat"):
        sample_guided(rollout, x, s, 5, grad_fn=grad_fn, clean_estimate="rollout",
                      generator=torch.Generator())
    with pytest.raises(ValueError, match="clean_estimate"):
        sample_guided(rollout, x, s, 5, grad_fn=grad_fn, clean_estimate="exact", generator=torch.Generator())


def test_guided_sampler_mask_keeps_the_reference_and_gradients_reach_it():
    s = Schedule.linear(1000, 10)
    reference = torch.linspace(-0.5, 0.5, 16).reshape(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1  # keep the left half
    g = torch.ones(1, 1, 4, 4)
    out = sample_guided(_constant_denoiser(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4), s, 4,
                        grad_fn=lambda x_hat: g, generator=torch.Generator().manual_seed(0),
                        mask_fn=lambda x_hat, step: mask if step >= 2 else None, reference=reference)
    torch.testing.assert_close(out[..., :2], reference[..., :2])  # kept: the reference itself
    assert (out[..., 2:] - reference[..., 2:]).abs().max() > 1e-2  # the rest was free to move
    with pytest.raises(ValueError, match="reference"):
        sample_guided(_constant_denoiser(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4), s, 4,
                      grad_fn=lambda x_hat: g, generator=torch.Generator(), mask_fn=lambda x_hat, step: mask)


def test_nfe_counter_is_shared_by_denoisers():
    counter = NFECounter()
    a = CountingDenoiser(lambda x, t: x, counter=counter)
    b = CountingDenoiser(lambda x, t: x, counter=counter)
    a(torch.zeros(3, 1, 1, 1), None)
    b(torch.zeros(2, 1, 1, 1), None)
    assert (counter.n_calls, counter.n_samples) == (2, 5)
    assert a.n_samples == b.n_samples == 5
    with pytest.raises(TypeError, match="counter"):
        CountingDenoiser(lambda x, t: x, counter=object())
