"""DDIM / DDPM samplers as small pure functions over a denoiser callable.

A denoiser is any callable ``eps_model(x_t, t, **extra_args) -> eps`` where
``t`` is a LongTensor ``(n,)`` of ORIGINAL timesteps. Every sampler here is
built on one step function, :func:`ddim_step`, so decoding, stochastic
encoding (inversion), ancestral DDPM sampling and guided samplers (DiME) all
share the same arithmetic.

References
----------
Song, Meng and Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12 and 16.
Ho, Jain and Abbeel (2020), "Denoising Diffusion Probabilistic Models", eq. 7.
Preechakul et al. (2022), "Diffusion Autoencoders", sec. 3.2 (stochastic encoder).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .schedule import Schedule

__all__ = [
    "predict_x0",
    "predict_eps",
    "ddim_sigma",
    "ddim_step",
    "q_sample",
    "sample_ddim",
    "sample_ddpm",
    "invert_ddim",
    "CountingDenoiser",
    "LatentGuidedDenoiser",
]


# ---------------------------------------------------------------------------
# Small helpers

def _coef(value, x):
    """Broadcast a schedule coefficient (float or tensor) against ``x``.

    Coefficients are computed in float64 and cast to ``x``'s dtype only here,
    which is what the published implementation does.
    """
    if isinstance(value, torch.Tensor):
        value = value.to(device=x.device, dtype=x.dtype)
        return value.reshape(value.shape + (1,) * (x.ndim - value.ndim)) if value.ndim else value
    return float(value)


def _sqrt(value):
    return value.sqrt() if isinstance(value, torch.Tensor) else math.sqrt(value)


def _as_f64(value):
    return value.to(torch.float64) if isinstance(value, torch.Tensor) else float(value)


def _step_index(schedule, index, name):
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(schedule):
        raise ValueError(f"{name} must be an int in [0, {len(schedule)}), got {index!r}.")
    return index


def _t_batch(schedule, i, x):
    return torch.full((x.shape[0],), int(schedule.timesteps[i]), dtype=torch.long, device=x.device)


def _check_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a skcfx.diffusion.Schedule, got {type(schedule).__name__}.")


# ---------------------------------------------------------------------------
# Closed-form relations between x_t, x_0 and eps

def predict_x0(x_t, eps, ab_t, *, clip=False):
    """Clean image implied by ``x_t`` and the predicted noise.

    ``x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)``, computed as
    ``sqrt(1/ab_t) x_t - sqrt(1/ab_t - 1) eps`` like the published code.

    Parameters
    ----------
    x_t, eps : torch.Tensor of shape (n, C, H, W)
    ab_t : float or torch.Tensor
        alpha_bar at the current step (scalar or one per sample).
    clip : bool, default=False
        Clamp the result to [-1, 1].

    Returns
    -------
    x0 : torch.Tensor
    """
    ab_t = _as_f64(ab_t)
    x0 = _coef(_sqrt(1.0 / ab_t), x_t) * x_t - _coef(_sqrt(1.0 / ab_t - 1.0), x_t) * eps
    return x0.clamp(-1.0, 1.0) if clip else x0


def predict_eps(x_t, x0, ab_t):
    """Noise implied by ``x_t`` and a clean estimate ``x0`` (inverse of :func:`predict_x0`)."""
    ab_t = _as_f64(ab_t)
    return (_coef(_sqrt(1.0 / ab_t), x_t) * x_t - x0) / _coef(_sqrt(1.0 / ab_t - 1.0), x_t)


def ddim_sigma(ab_t, ab_next, eta):
    """Standard deviation of the DDIM step noise (Song et al. 2021, eq. 16).

    ``sigma = eta sqrt((1 - ab_next) / (1 - ab_t)) sqrt(1 - ab_t / ab_next)``;
    ``eta = 1`` gives the DDPM posterior standard deviation.
    """
    if eta == 0:
        return 0.0
    ab_t, ab_next = _as_f64(ab_t), _as_f64(ab_next)
    return eta * _sqrt((1.0 - ab_next) / (1.0 - ab_t)) * _sqrt(1.0 - ab_t / ab_next)


def q_sample(x_0, t_index, schedule, noise):
    """Diffuse clean images to step ``t_index`` of ``schedule`` (Ho et al. 2020, eq. 4).

    Parameters
    ----------
    x_0 : torch.Tensor of shape (n, C, H, W)
    t_index : int or torch.LongTensor of shape (n,)
        Index into ``schedule.timesteps`` (not the original timestep).
    schedule : Schedule
    noise : torch.Tensor like ``x_0``
        Standard normal noise (passed in so the caller owns the randomness).

    Returns
    -------
    x_t : torch.Tensor
    """
    _check_schedule(schedule)
    if noise.shape != x_0.shape:
        raise ValueError(f"noise must have shape {tuple(x_0.shape)}, got {tuple(noise.shape)}.")
    if isinstance(t_index, torch.Tensor):
        ab = schedule.alpha_bar[t_index.cpu()]
    else:
        ab = float(schedule.alpha_bar[_step_index(schedule, t_index, "t_index")])
    return _coef(_sqrt(ab), x_0) * x_0 + _coef(_sqrt(1.0 - ab), x_0) * noise


# ---------------------------------------------------------------------------
# The one step function

def ddim_step(x_t, eps, ab_t, ab_next, *, eta=0.0, noise=None, clip_x0=True, mean_shift=None):
    """One generalised DDIM step from alpha_bar ``ab_t`` to ``ab_next``.

    ``x0 = clip((x_t - sqrt(1-ab_t) eps) / sqrt(ab_t), -1, 1)``; eps is
    re-derived from the clipped x0; then
    ``x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next - sigma^2) eps + sigma noise``
    (Song et al. 2021, eq. 12). Decoding moves to a larger ``ab_next``
    (``1`` after the last step returns x0); inversion moves to a smaller one
    (``0`` after the last step, so the result is the last eps).

    Parameters
    ----------
    x_t : torch.Tensor of shape (n, C, H, W)
    eps : torch.Tensor like ``x_t``
        The denoiser's noise prediction at ``x_t``.
    ab_t, ab_next : float or torch.Tensor
        alpha_bar at the current and the target step.
    eta : float in [0, 1], default=0.0
        0 is deterministic DDIM; 1 is the DDPM ancestral step with the
        respaced betas (posterior variance).
    noise : torch.Tensor or None, default=None
        Standard normal noise, required when the step is stochastic.
    clip_x0 : bool, default=True
        Clamp the clean estimate to [-1, 1] (published default).
    mean_shift : torch.Tensor or None, default=None
        Added to the mean before the noise, e.g. ``-Sigma * grad`` for
        classifier guidance (DiME), with ``Sigma = schedule.posterior_variance[i]``
        for the eta = 1 step from index ``i``.

    Returns
    -------
    x_next : torch.Tensor
    x0_hat : torch.Tensor
        The (clipped) clean estimate.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}.")
    if eta > 0 and bool(torch.as_tensor(ab_next).le(0).any()):
        raise ValueError("eta > 0 needs ab_next > 0 (inversion is deterministic).")
    eps = eps.to(x_t.dtype)
    x0_hat = predict_x0(x_t, eps, ab_t, clip=clip_x0)
    eps = predict_eps(x_t, x0_hat, ab_t)
    sigma = ddim_sigma(ab_t, ab_next, eta)
    ab_next = _as_f64(ab_next)
    x_next = _coef(_sqrt(ab_next), x_t) * x0_hat + _coef(_sqrt(1.0 - ab_next - sigma ** 2), x_t) * eps
    if mean_shift is not None:
        x_next = x_next + mean_shift
    if bool(torch.as_tensor(sigma).gt(0).any()):
        if noise is None:
            raise ValueError("noise is required when eta > 0.")
        x_next = x_next + _coef(sigma, x_t) * noise
    return x_next, x0_hat


# ---------------------------------------------------------------------------
# Samplers

@torch.no_grad()
def sample_ddim(eps_model, x_T, schedule, *, extra_args=None, eta=0.0, generator=None,
                start_index=None, clip_x0=True, callback=None, disable=True):
    """Decode noise to images with DDIM (Song et al. 2021, eq. 12).

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t, **extra_args) -> eps``.
    x_T : torch.Tensor of shape (n, C, H, W)
        Start point: x at step ``start_index`` of ``schedule``.
    schedule : Schedule
    extra_args : dict or None, default=None
        Keyword arguments for ``eps_model`` (e.g. ``{"cond": z_sem}``).
    eta : float, default=0.0
        Stochasticity (0: DDIM, 1: DDPM ancestral).
    generator : torch.Generator or None, default=None
        Source of the step noise; required when ``eta > 0``.
    start_index : int or None, default=None
        Schedule index to start from (None: the last, i.e. pure noise).
    clip_x0 : bool, default=True
    callback : callable or None, default=None
        Called after every step with a dict ``{'x', 'i', 't', 'x0', 'eps'}``.
    disable : bool, default=True
        Hide the progress bar.

    Returns
    -------
    x_0 : torch.Tensor
    """
    _check_schedule(schedule)
    if eta > 0 and generator is None:
        raise ValueError("generator is required when eta > 0 (randomness is always explicit).")
    extra_args = {} if extra_args is None else extra_args
    start = len(schedule) - 1 if start_index is None else _step_index(schedule, start_index, "start_index")
    ab, ab_prev = schedule.alpha_bar, schedule.alpha_bar_prev
    x = x_T
    for i in tqdm(range(start, -1, -1), disable=disable, desc="DDIM decode"):
        t = _t_batch(schedule, i, x)
        eps = eps_model(x, t, **extra_args)
        noise = None
        if eta > 0 and i > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x, x0 = ddim_step(x, eps, float(ab[i]), float(ab_prev[i]), eta=eta, noise=noise, clip_x0=clip_x0)
        if callback is not None:
            callback({"x": x, "i": i, "t": int(schedule.timesteps[i]), "x0": x0, "eps": eps})
    return x


def sample_ddpm(eps_model, x_T, schedule, *, generator, **kwargs):
    """Ancestral DDPM sampling on a (respaced) schedule: :func:`sample_ddim` with ``eta=1``.

    Uses the posterior variance ``Schedule.posterior_variance`` (Ho et al. 2020, eq. 7).
    """
    return sample_ddim(eps_model, x_T, schedule, eta=1.0, generator=generator, **kwargs)


@torch.no_grad()
def invert_ddim(eps_model, x_0, schedule, *, extra_args=None, clip_x0=True, callback=None, disable=True):
    """Deterministic DDIM inversion: the stochastic encoding x_T of ``x_0``.

    Runs :func:`ddim_step` in ascending t towards ``ab_next`` (0 after the
    last step, so x_T is the last eps), as in Diffusion Autoencoders.

    Parameters
    ----------
    eps_model : callable
    x_0 : torch.Tensor of shape (n, C, H, W)
        Images in [-1, 1].
    schedule : Schedule
    extra_args : dict or None, default=None
    clip_x0 : bool, default=True
    callback : callable or None, default=None
        Called after every step with ``{'x', 'i', 't', 'x0', 'eps'}``.
    disable : bool, default=True

    Returns
    -------
    x_T : torch.Tensor
    """
    _check_schedule(schedule)
    extra_args = {} if extra_args is None else extra_args
    ab, ab_next = schedule.alpha_bar, schedule.alpha_bar_next
    x = x_0
    for i in tqdm(range(len(schedule)), disable=disable, desc="DDIM invert"):
        t = _t_batch(schedule, i, x)
        eps = eps_model(x, t, **extra_args)
        x, x0 = ddim_step(x, eps, float(ab[i]), float(ab_next[i]), clip_x0=clip_x0)
        if callback is not None:
            callback({"x": x, "i": i, "t": int(schedule.timesteps[i]), "x0": x0, "eps": eps})
    return x


class LatentGuidedDenoiser:
    """Classifier-free guidance on the semantic latent (Ho & Salimans 2022).

    ``eps = eps(x_t, z) + scale * (eps(x_t, z) - eps(x_t, null))`` where ``null`` is the learned
    null latent of a network trained with latent dropout. Scale 0 is the plain conditional
    denoiser; larger scales make the decode follow ``z`` more and the inverted noise less.
    Both terms come from one network call on a batch of ``2n`` (so a counting wrapper around
    ``eps_model`` sees ``2n`` samples per step: guidance doubles the NFE).

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t, cond=z) -> eps``.
    null_cond : callable
        ``null_cond(n) -> (n, latent_dim)`` null latents (e.g. ``DiffAENet.null_cond``).
    scale : float
        Guidance scale (>= 0).
    """

    def __init__(self, eps_model, null_cond, scale):
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}.")
        self.eps_model = eps_model
        self.null_cond = null_cond
        self.scale = float(scale)

    def __call__(self, x_t, t, cond):
        if self.scale == 0:
            return self.eps_model(x_t, t, cond=cond)
        n = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        t2 = torch.cat([t, t]) if t.ndim == 1 else t
        both = self.eps_model(torch.cat([x_t, x_t]), t2, cond=torch.cat([cond, self.null_cond(n).to(cond)]))
        eps_cond, eps_null = both[:n], both[n:]
        return eps_cond + self.scale * (eps_cond - eps_null)


class CountingDenoiser:
    """Wrap a denoiser and count its evaluations (NFE).

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t, **extra_args) -> eps``.

    Attributes
    ----------
    n_calls : int
        Number of calls (one batched network evaluation each).
    n_samples : int
        Number of images evaluated (sum of batch sizes).

    Examples
    --------
    >>> model = CountingDenoiser(lambda x, t: 0 * x)
    >>> _ = model(torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    >>> model.n_calls, model.n_samples
    (1, 3)
    """

    def __init__(self, eps_model):
        if not callable(eps_model):
            raise TypeError("eps_model must be callable.")
        self.eps_model = eps_model
        self.reset()

    def reset(self):
        """Set both counters to zero."""
        self.n_calls = 0
        self.n_samples = 0

    def __call__(self, x_t, t, **extra_args):
        self.n_calls += 1
        self.n_samples += int(x_t.shape[0])
        return self.eps_model(x_t, t, **extra_args)
