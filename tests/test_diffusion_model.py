"""The torch-level DiffAE model object (skcfx.diffusion.DiffAE) that every method works with."""

import numpy as np
import pytest
import torch

from skcfx._images import to_numpy, to_tensor
from skcfx.diffusion import DiffAE, DiffAEConfig, DiffAENet, NFECounter


def _net(T=1000, null_latent=True, seed=0):
    cfg = DiffAEConfig(image_size=8, in_channels=1, model_channels=8, channel_mult=(1, 2),
                       attention_resolutions=(4,), embed_channels=16, latent_dim=4, T=T,
                       null_latent=null_latent)
    torch.manual_seed(seed)
    net = DiffAENet(cfg)
    # Published init zeroes the output convs; perturb every weight so each layer matters.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _images(n=3, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_model_matches_the_estimator(fitted_tiny_encoder, digits8):
    X = digits8[0][:5]
    model = fitted_tiny_encoder.model_
    x = to_tensor(X)
    z = model.encode(x)
    x_T = model.invert(x, z, fitted_tiny_encoder.encode_steps)
    recon = model.decode(z, x_T, fitted_tiny_encoder.decode_steps)
    np.testing.assert_allclose(z.numpy(), fitted_tiny_encoder.transform(X), atol=1e-6)
    noise = fitted_tiny_encoder.encode_stochastic(X)
    np.testing.assert_allclose(x_T.permute(0, 2, 3, 1).numpy(), noise, atol=1e-5)
    np.testing.assert_allclose(to_numpy(recon), fitted_tiny_encoder.reconstruct(X), atol=1e-5)
    assert model.net is fitted_tiny_encoder.net_
    assert model.image_shape == (1, 8, 8) and model.latent_dim == 8


def test_counts_denoiser_evaluations_exactly():
    model = DiffAE(_net())
    x = _images(3)
    counter = NFECounter()
    z = model.encode(x)
    assert counter.n_samples == 0  # the semantic encoder is not a denoiser call
    x_T = model.invert(x, z, 5, counter=counter)
    assert (counter.n_calls, counter.n_samples) == (5, 15)
    model.decode(z, x_T, 4, counter=counter)
    assert (counter.n_calls, counter.n_samples) == (9, 27)
    model.decode(z, x_T, 4, counter=counter, guidance_scale=1.0)  # both branches in one call
    assert (counter.n_calls, counter.n_samples) == (13, 51)
    model.decode(z, x_T, 4, counter=counter, guidance_scale=1.0, guidance_steps=1)  # 1 of 4 steps guided
    assert (counter.n_calls, counter.n_samples) == (17, 66)


def _edit_of_two_images():
    """A model, the inverted noise of two images (4 steps) and their latents moved by 0.5."""
    model = DiffAE(_net())
    x = _images(2)
    z = model.encode(x)
    return model, model.invert(x, z, 4), z + 0.5


def test_guidance_steps_guide_the_noisy_start_of_the_chain_only():
    model, x_T, z_edit = _edit_of_two_images()
    plain = model.decode(z_edit, x_T, 4)
    full = model.decode(z_edit, x_T, 4, guidance_scale=2.0)
    assert torch.equal(model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_steps=4), full)
    assert torch.equal(model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_steps=0), plain)
    seen = []
    hook = model.net.register_forward_pre_hook(lambda module, args, kwargs: seen.append(
        (int(args[1].max()), len(args[0]))), with_kwargs=True)
    half = model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_steps=2)
    hook.remove()
    # the two noisiest steps see the doubled (guided) batch, the last two the plain one
    assert [n for _, n in seen] == [4, 4, 2, 2] and seen[0][0] > seen[-1][0]
    assert not torch.allclose(half, plain) and not torch.allclose(half, full)
    with pytest.raises(ValueError, match="guidance_steps"):
        model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_steps=5)


def test_guidance_interval_guides_the_steps_whose_timestep_lies_in_it():
    model, x_T, z_edit = _edit_of_two_images()
    full = model.decode(z_edit, x_T, 4, guidance_scale=2.0)
    assert torch.equal(model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_interval=(0.0, 1.0)), full)
    seen = []
    hook = model.net.register_forward_pre_hook(lambda module, args, kwargs: seen.append(
        (int(args[1].max()), len(args[0]))), with_kwargs=True)
    counter = NFECounter()
    model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_interval=(0.2, 0.6), counter=counter)
    hook.remove()
    # 4 steps of T=1000 sit at t = 750, 500, 250, 0: only 500 and 250 lie in [200, 600]
    assert [t for t, _ in seen] == [750, 500, 250, 0]
    assert [n for _, n in seen] == [2, 4, 4, 2] and counter.n_samples == 12
    with pytest.raises(ValueError, match="not both"):
        model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_steps=2, guidance_interval=(0.2, 0.6))
    with pytest.raises(ValueError, match="low <= high"):
        model.decode(z_edit, x_T, 4, guidance_scale=2.0, guidance_interval=(0.6, 0.2))


def test_schedule_follows_the_configured_T():
    model = DiffAE(_net(T=500))
    assert model.T == 500
    schedule = model.schedule(10)
    assert schedule.T == 500 and int(schedule.timesteps[-1]) == 450
    seen = []
    model.net.register_forward_pre_hook(lambda module, args, kwargs: seen.append(int(args[1].max())),
                                        with_kwargs=True)
    model.invert(_images(1), model.encode(_images(1)), 10)
    assert max(seen) == 450  # the network only ever sees timesteps of its own chain


def test_decode_is_differentiable_and_checkpointing_changes_nothing_but_memory():
    model = DiffAE(_net())
    x = _images(2)
    with torch.no_grad():
        z0 = model.encode(x)
        x_T = model.invert(x, z0, 4)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))  # a generic scalar loss
    grads, counts = [], []
    for checkpoint in (False, True):
        z = z0.clone().requires_grad_(True)
        counter = NFECounter()
        out = model.decode(z, x_T, 4, requires_grad=True, checkpoint=checkpoint, counter=counter)
        (out * weights).sum().backward()
        grads.append(z.grad.clone())
        counts.append(counter.n_samples)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
    assert counts == [8, 8]  # recomputation in the backward pass is not counted
    # the gradient is the real one: a central finite difference along a random direction
    # (small h: the decode clips its clean estimates, so the map is only piecewise smooth)
    direction = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    h = 1e-3
    with torch.no_grad():
        plus = (model.decode(z0 + h * direction, x_T, 4) * weights).sum()
        minus = (model.decode(z0 - h * direction, x_T, 4) * weights).sum()
    numeric = float(plus - minus) / (2 * h)
    analytic = float((grads[0] * direction).sum())
    assert abs(analytic - numeric) < 0.03 * abs(numeric)
    # without requires_grad nothing is tracked
    assert not model.decode(z0.clone().requires_grad_(True), x_T, 4).requires_grad
    assert not model.encode(x.requires_grad_(True)).requires_grad
    assert model.encode(x, requires_grad=True).requires_grad


def test_unconditional_denoiser_uses_the_null_latent():
    model = DiffAE(_net())
    x, t = _images(2), torch.tensor([10, 500])
    eps = model.denoiser(unconditional=True)(x, t, cond=torch.zeros(2, 4))
    expected = model.net(x, t, cond=model.net.null_cond(2))
    torch.testing.assert_close(eps, expected)
    without = DiffAE(_net(null_latent=False))
    assert not without.has_null_latent
    with pytest.raises(ValueError, match="latent_dropout"):
        without.denoiser(unconditional=True)
    with pytest.raises(ValueError, match="latent_dropout"):
        without.decode(torch.zeros(1, 4), _images(1), 2, guidance_scale=1.0)


def test_precision_is_validated_and_bf16_stays_close():
    with pytest.raises(ValueError, match="precision"):
        DiffAE(_net(), precision="int8")
    with pytest.raises(TypeError, match="DiffAENet"):
        DiffAE(torch.nn.Linear(2, 2))
    x = _images(2)
    full = DiffAE(_net())
    half = DiffAE(_net(), precision="bf16")
    z_full, z_half = full.encode(x), half.encode(x)
    assert z_half.dtype == torch.float32  # outputs are float32 whatever the autocast dtype
    assert not torch.equal(z_full, z_half)  # bf16 really ran
    torch.testing.assert_close(z_half, z_full, atol=0.05, rtol=0.05)
    assert "precision='bf16'" in repr(half)
