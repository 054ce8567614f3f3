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
    "sample_guided",
    "clip_grad_norm",
    "CountingDenoiser",
    "LatentGuidedDenoiser",
    "guidance_bounds",
    "NFECounter",
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

def sample_ddim(eps_model, x_T, schedule, *, extra_args=None, eta=0.0, generator=None,
                start_index=None, clip_x0=True, callback=None, disable=True, requires_grad=False):
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
    requires_grad : bool, default=False
        Keep the autograd graph through the steps (differentiable decoding); by default the
        sampler runs under ``torch.no_grad()``.

    Returns
    -------
    x_0 : torch.Tensor
    """
    with torch.set_grad_enabled(requires_grad):
        return _ddim_loop(eps_model, x_T, schedule, extra_args=extra_args, eta=eta, generator=generator,
                          start_index=start_index, clip_x0=clip_x0, callback=callback, disable=disable)


def _ddim_loop(eps_model, x_T, schedule, *, extra_args, eta, generator, start_index, clip_x0, callback,
               disable):
    """The DDIM loop of :func:`sample_ddim` (gradient mode set by the caller)."""
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
def invert_ddim(eps_model, x_0, schedule, *, extra_args=None, clip_x0=True, callback=None, disable=True,
                stop_index=None):
    """Deterministic DDIM inversion: the stochastic encoding x_T of ``x_0``.

    Runs :func:`ddim_step` in ascending t towards ``ab_next`` (0 after the
    last step, so x_T is the last eps), as in Diffusion Autoencoders. With ``stop_index`` it
    stops part-way: after steps ``0 .. stop_index - 1`` it returns x at noise level
    ``alpha_bar[stop_index]``, the start point of :func:`sample_ddim` with
    ``start_index=stop_index`` on the same schedule.

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
    stop_index : int or None, default=None
        Number of inversion steps, in ``[1, len(schedule)]`` (None: all of them).

    Returns
    -------
    x_T : torch.Tensor
        Or x at ``alpha_bar[stop_index]`` when ``stop_index < len(schedule)``.
    """
    _check_schedule(schedule)
    extra_args = {} if extra_args is None else extra_args
    stop = len(schedule) if stop_index is None else int(stop_index)
    if not 1 <= stop <= len(schedule):
        raise ValueError(f"stop_index must be in [1, {len(schedule)}], got {stop_index!r}.")
    ab, ab_next = schedule.alpha_bar, schedule.alpha_bar_next
    x = x_0
    for i in tqdm(range(stop), disable=disable, desc="DDIM invert"):
        t = _t_batch(schedule, i, x)
        eps = eps_model(x, t, **extra_args)
        x, x0 = ddim_step(x, eps, float(ab[i]), float(ab_next[i]), clip_x0=clip_x0)
        if callback is not None:
            callback({"x": x, "i": i, "t": int(schedule.timesteps[i]), "x0": x0, "eps": eps})
    return x


def clip_grad_norm(grad, max_norm):
    """Scale each sample's gradient down to an L2 norm of at most ``max_norm``."""
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (max_norm / norms).clamp(max=1.0)
    return grad * factor.view(-1, *([1] * (grad.ndim - 1)))


_CLEAN_ESTIMATES = ("one_step", "rollout")


@torch.no_grad()
def sample_guided(eps_model, x_start, schedule, start_index, *, grad_fn, generator,
                  clean_estimate="one_step", x_hat=None, scale_by_alpha=False, z_grad_fn=None,
                  clip_grad=None, eta=1.0, mask_fn=None, reference=None, callback=None, disable=True):
    """Classifier-guided ancestral sampling with the gradient taken on a clean estimate.

    From ``x_start`` at schedule index ``start_index`` down to a clean image, every step makes
    one denoiser call, forms a clean estimate ``x_hat`` of the current ``z_i``, and shifts the
    mean of the ancestral step by the step variance times the guidance gradient::

        eps     = eps_model(z_i, t_i)
        g       = grad_fn(x_hat) / (sqrt(alpha_bar_i) if scale_by_alpha else 1) + z_grad_fn(z_i)
        z_{i-1} = mean(z_i, eps) - Sigma_i * g + sqrt(Sigma_i) * noise

    which is DiME's guided step (Jeanneret et al., ACCV 2022, Algorithm 1: the gradient on the
    clean estimate, divided by sqrt(alpha_bar)) and FastDiME's (Weng et al., 2023: the one-step
    estimate, no scaling, optional mask).

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t) -> eps`` (an unconditional denoiser for DiME).
    x_start : torch.Tensor of shape (n, C, H, W)
        The noised start ``z`` at index ``start_index``.
    schedule : Schedule
    start_index : int
        Schedule index of ``x_start``; ``start_index + 1`` guided steps are run.
    grad_fn : callable
        ``grad_fn(x_hat) -> d loss / d x_hat`` (same shape), e.g. minus a target logit.
    generator : torch.Generator
        Source of the step noise (and of the roll-outs' noise).
    clean_estimate : {'one_step', 'rollout'}, default='one_step'
        ``'one_step'``: ``x0(z_i, eps)`` from the same call (FastDiME). ``'rollout'``: the result
        of the unguided chain from ``z_i`` to 0 (DiME; ``i`` extra calls per step, no gradient
        through them), computed after each step for the next one.
    x_hat : torch.Tensor or None, default=None
        The clean estimate of the first ``'rollout'`` step (DiME uses the query itself).
    scale_by_alpha : bool, default=False
        Divide the gradient on ``x_hat`` by ``sqrt(alpha_bar_i)`` (DiME).
    z_grad_fn : callable or None, default=None
        ``z_grad_fn(z_i) -> gradient`` of a term on the noisy ``z_i`` itself (DiME's L1), added
        after the scaling.
    clip_grad : float or None, default=None
        Largest L2 norm of each image's total gradient.
    eta : float in (0, 1], default=1.0
        Stochasticity of the steps (1: the DDPM ancestral step).
    mask_fn : callable or None, default=None
        ``mask_fn(x_hat, step) -> mask or None`` with ``step`` counted from 0; where the mask is
        1, ``x_hat`` and the next ``z`` are replaced by ``reference`` (noised to the level of the
        next ``z``; the reference itself after the last step): FastDiME's self-made mask.
    reference : torch.Tensor or None, default=None
        The image the mask keeps (the query).
    callback : callable or None, default=None
        Called after every step with ``{'x', 'i', 't', 'x0', 'grad', 'mask'}``.
    disable : bool, default=True
        Hide the progress bar.

    Returns
    -------
    x_0 : torch.Tensor
        Clamped to [-1, 1].
    """
    _check_schedule(schedule)
    start = _step_index(schedule, start_index, "start_index")
    if clean_estimate not in _CLEAN_ESTIMATES:
        raise ValueError(f"clean_estimate must be one of {_CLEAN_ESTIMATES}, got {clean_estimate!r}.")
    if clean_estimate == "rollout" and x_hat is None:
        raise ValueError("clean_estimate='rollout' needs x_hat, the clean estimate of the first step.")
    if mask_fn is not None and reference is None:
        raise ValueError("mask_fn needs the reference image it keeps.")
    ab, ab_prev = schedule.alpha_bar, schedule.alpha_bar_prev
    z = x_start
    for step, i in enumerate(tqdm(range(start, -1, -1), disable=disable, desc="guided sampling")):
        eps = eps_model(z, _t_batch(schedule, i, z))
        if clean_estimate == "one_step":
            x_hat = predict_x0(z, eps, float(ab[i]), clip=True)
        mask = None if mask_fn is None else mask_fn(x_hat, step)
        if mask is not None:
            x_hat = x_hat * (1 - mask) + mask * reference
        with torch.enable_grad():
            grad = grad_fn(x_hat).to(z.dtype)
        if scale_by_alpha:
            grad = grad / math.sqrt(float(ab[i]))
        if z_grad_fn is not None:
            grad = grad + z_grad_fn(z)
        if clip_grad is not None:
            grad = clip_grad_norm(grad, float(clip_grad))
        variance = ddim_sigma(float(ab[i]), float(ab_prev[i]), eta) ** 2
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) if i > 0 else None
        z, _ = ddim_step(z, eps, float(ab[i]), float(ab_prev[i]), eta=eta, noise=noise, mean_shift=-variance * grad)
        if mask is not None:
            # The new z sits at index i - 1: keep the masked pixels at the reference noised to
            # that level (the reference itself once the chain is clean).
            kept = reference if i == 0 else q_sample(
                reference, i - 1, schedule,
                torch.randn(reference.shape, generator=generator, device=reference.device, dtype=reference.dtype))
            z = z * (1 - mask) + mask * kept
        if clean_estimate == "rollout" and i > 0:
            x_hat = sample_ddim(eps_model, z, schedule, eta=eta, generator=generator, start_index=i - 1)
        if callback is not None:
            callback({"x": z, "i": i, "t": int(schedule.timesteps[i]), "x0": x_hat, "grad": grad, "mask": mask})
    return z.clamp(-1.0, 1.0)


def guidance_bounds(interval, T):
    """Original-timestep bounds ``(min_t, max_t)`` of a guidance interval given as fractions of ``T``.

    Parameters
    ----------
    interval : (float, float)
        ``(low, high)`` with ``0 <= low <= high <= 1``: the steps whose timestep ``t`` has
        ``low <= t / T <= high`` are guided.
    T : int
        Diffusion steps of the training schedule.

    Returns
    -------
    (int, int)
        Inclusive bounds on ``t`` for :class:`LatentGuidedDenoiser` (``min_t``, ``max_t``).

    Examples
    --------
    >>> guidance_bounds((0.1, 0.6), 1000)
    (100, 600)
    """
    try:
        low, high = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"a guidance interval is a pair (low, high) of fractions of T, got {interval!r}.") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"a guidance interval (low, high) needs 0 <= low <= high <= 1, got {interval!r}.")
    # the tolerance keeps e.g. 0.6 * 1000 = 600.0000000000001 from dropping the step t = 600
    return int(math.ceil(low * T - 1e-6)), int(math.floor(high * T + 1e-6))


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
    min_t, max_t : int or None, default=0, None
        Guide only the calls whose (original) timesteps all lie in ``[min_t, max_t]`` (None: no
        upper bound): guidance in a limited interval (Kynkaenniemi et al., NeurIPS 2024, who
        found guidance at the highest noise levels costs diversity, and at the lowest does
        little). The other calls are plain conditional ones and cost ``n``, not ``2n``.
    """

    def __init__(self, eps_model, null_cond, scale, min_t=0, max_t=None):
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}.")
        self.eps_model = eps_model
        self.null_cond = null_cond
        self.scale = float(scale)
        self.min_t = int(min_t)
        self.max_t = None if max_t is None else int(max_t)

    def _guided(self, t):
        # (no bounds, every step guided, skips the check: it would sync a GPU on every call)
        if self.min_t <= 0 and self.max_t is None:
            return True
        # one host read for both bounds (each read of a GPU tensor waits for the device)
        low, high = torch.stack(torch.aminmax(torch.as_tensor(t))).tolist()
        return low >= self.min_t and (self.max_t is None or high <= self.max_t)

    def __call__(self, x_t, t, cond):
        if self.scale == 0 or not self._guided(t):
            return self.eps_model(x_t, t, cond=cond)
        n = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        t2 = torch.cat([t, t]) if t.ndim == 1 else t
        both = self.eps_model(torch.cat([x_t, x_t]), t2, cond=torch.cat([cond, self.null_cond(n).to(cond)]))
        eps_cond, eps_null = both[:n], both[n:]
        return eps_cond + self.scale * (eps_cond - eps_null)


class NFECounter:
    """Running count of denoiser evaluations (NFE), shared by the denoisers that report to it.

    Attributes
    ----------
    n_calls : int
        Network calls (one batched evaluation each).
    n_samples : int
        Images evaluated (sum of batch sizes): the NFE summed over images.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        """Set both counts to zero."""
        self.n_calls = 0
        self.n_samples = 0

    def add(self, n_images):
        """Record one network call on ``n_images`` images."""
        self.n_calls += 1
        self.n_samples += int(n_images)

    def __repr__(self):
        return f"NFECounter(n_calls={self.n_calls}, n_samples={self.n_samples})"


class CountingDenoiser:
    """Wrap a denoiser and count its evaluations (NFE).

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t, **extra_args) -> eps``.
    counter : NFECounter or None, default=None
        Where the counts go (shared between several denoisers if wanted); None makes a new one.

    Attributes
    ----------
    counter : NFECounter
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

    def __init__(self, eps_model, counter=None):
        if not callable(eps_model):
            raise TypeError("eps_model must be callable.")
        if counter is not None and not isinstance(counter, NFECounter):
            raise TypeError(f"counter must be an NFECounter or None, got {type(counter).__name__}.")
        self.eps_model = eps_model
        self.counter = NFECounter() if counter is None else counter

    @property
    def n_calls(self):
        return self.counter.n_calls

    @property
    def n_samples(self):
        return self.counter.n_samples

    def reset(self):
        """Set both counters to zero."""
        self.counter.reset()

    def __call__(self, x_t, t, **extra_args):
        self.counter.add(x_t.shape[0])
        return self.eps_model(x_t, t, **extra_args)
