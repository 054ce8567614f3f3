"""The diffusion autoencoder as one torch object: network + schedule + encode / invert / decode.

:class:`DiffAE` is what counterfactual methods work with. It holds a :class:`DiffAENet` (the
semantic encoder and the conditional denoiser) and knows the diffusion schedule (its ``T`` comes
from the network's configuration), the device and the numerical precision of network calls. It
never validates user input and never sees numpy: tensors are ``(n, C, H, W)`` float32 in
[-1, 1] on :attr:`DiffAE.device`. The scikit-learn face (validation, numpy in and out, fitting,
persistence) is :class:`skcfx.DiffAEEncoder`, which wraps one of these as ``model_``.

Denoiser evaluations are counted exactly with an optional :class:`NFECounter` passed to
:meth:`DiffAE.invert`, :meth:`DiffAE.decode` or :meth:`DiffAE.denoiser`.
"""

from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint

from .nets import DiffAENet
from .precision import PRECISIONS, autocast, resolve_precision
from .sampling import CountingDenoiser, LatentGuidedDenoiser, NFECounter, guidance_bounds, invert_ddim, sample_ddim
from .schedule import Schedule

__all__ = ["DiffAE", "PRECISIONS"]

class DiffAE:
    """A diffusion autoencoder on tensors (Preechakul et al., CVPR 2022).

    Parameters
    ----------
    net : DiffAENet
        The network (usually the EMA weights). It is put in eval mode and moved to ``device``.
    device : str, torch.device or None, default=None
        Where to run; None keeps the device of the network's parameters.
    precision : {'fp32', 'bf16', 'fp16', 'auto'}, default='fp32'
        Autocast dtype of the network calls (``'auto'``: bfloat16 on CUDA when supported; see
        :mod:`skcfx.diffusion.precision`). The sampler arithmetic (DDIM steps, schedules) always
        stays in float32 / float64.
    compile : bool, default=False
        Run the network through :func:`torch.compile` (compiled on first use, per device; the
        compiled form is not pickled).
    channels_last : bool or None, default=None
        Keep the network and its inputs in ``torch.channels_last`` memory format (faster
        convolutions on tensor cores). None: on CUDA devices only.

    Attributes
    ----------
    net : DiffAENet
    config : DiffAEConfig
    device : torch.device

    Examples
    --------
    >>> import torch
    >>> from skcfx.diffusion import DiffAE, DiffAEConfig, DiffAENet, NFECounter
    >>> cfg = DiffAEConfig(image_size=8, in_channels=1, model_channels=8, channel_mult=(1, 2),
    ...                    attention_resolutions=(4,), embed_channels=16, latent_dim=4)
    >>> model = DiffAE(DiffAENet(cfg))
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> z = model.encode(x)
    >>> counter = NFECounter()
    >>> x_T = model.invert(x, z, n_steps=5, counter=counter)
    >>> model.decode(z, x_T, n_steps=5, counter=counter).shape, counter.n_samples
    (torch.Size([2, 1, 8, 8]), 20)
    """

    def __init__(self, net, *, device=None, precision="fp32", compile=False, channels_last=None):
        if not isinstance(net, DiffAENet):
            raise TypeError(f"net must be a DiffAENet, got {type(net).__name__}.")
        self.net = net.eval()
        self.precision = precision
        self.compile = bool(compile)
        self.channels_last = channels_last
        self.to(next(net.parameters()).device if device is None else device)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_compiled"] = None  # compiled graphs are per process and device
        return state

    def __repr__(self):
        cfg = self.config
        return (f"DiffAE(image_size={cfg.image_size}, in_channels={cfg.in_channels}, "
                f"latent_dim={cfg.latent_dim}, T={cfg.T}, device={self.device}, precision={self.precision!r}"
                f"{', compile=True' if self.compile else ''})")

    # ------------------------------------------------------------------ description
    @property
    def config(self):
        """The network's :class:`~skcfx.diffusion.nets.DiffAEConfig`."""
        return self.net.config

    @property
    def T(self):
        """Length of the diffusion chain the network was trained on."""
        return int(self.config.T)

    @property
    def latent_dim(self):
        return int(self.config.latent_dim)

    @property
    def image_shape(self):
        """``(C, H, W)`` of the images the network takes."""
        cfg = self.config
        return (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def has_null_latent(self):
        """Whether the network has a learned null latent (trained with latent dropout), so that
        it is also an unconditional denoiser (DiME, classifier-free guidance)."""
        return bool(self.config.null_latent)

    def to(self, device):
        """Move the network to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self._dtype = resolve_precision(self.precision, self.device)  # fails early on a bad value
        self._memory_format = torch.contiguous_format
        if self.channels_last or (self.channels_last is None and self.device.type == "cuda"):
            self._memory_format = torch.channels_last
        self.net.to(self.device, memory_format=self._memory_format)
        self._compiled = None
        return self

    def schedule(self, n_steps):
        """The linear schedule of the network's ``T`` respaced to ``n_steps`` ("ddimN")."""
        return Schedule.linear(T=self.T, n_steps=n_steps)

    # ------------------------------------------------------------------ network calls
    def _autocast(self):
        return autocast(self.device, self._dtype)

    def _calls(self):
        """``(forward, encode)`` of the network: compiled once per device when ``compile``."""
        if not self.compile:
            return self.net, self.net.encode
        if self._compiled is None:
            self._compiled = (torch.compile(self.net), torch.compile(self.net.encode))
        return self._compiled

    def _layout(self, x):
        return x.contiguous(memory_format=self._memory_format)

    def eps(self, x_t, t, cond=None):
        """Predicted noise of ``x_t`` at ORIGINAL timesteps ``t``; ``cond=None``: the null latent."""
        forward, _ = self._calls()
        with self._autocast():
            return forward(self._layout(x_t), t, cond=cond).float()

    def _checkpointed_eps(self, x_t, t, cond=None):
        # Below the counter, so that recomputation in the backward pass is not counted.
        return torch.utils.checkpoint.checkpoint(self.eps, x_t, t, cond, use_reentrant=False)

    def denoiser(self, counter=None, *, unconditional=False, guidance_scale=0.0, checkpoint=False, guidance_min_t=0,
                 guidance_max_t=None):
        """An ``eps_model(x_t, t, **extra_args)`` callable for the samplers.

        Parameters
        ----------
        counter : NFECounter or None, default=None
            Receives one count per image evaluated.
        unconditional : bool, default=False
            Ignore ``cond`` and use the learned null latent (needs :attr:`has_null_latent`).
        guidance_scale : float, default=0.0
            Classifier-free guidance on ``cond`` against the null latent
            (:class:`~skcfx.diffusion.sampling.LatentGuidedDenoiser`); doubles the evaluations.
        checkpoint : bool, default=False
            Recompute the network's activations in the backward pass instead of storing them
            (``torch.utils.checkpoint``); recomputations are not counted.
        guidance_min_t, guidance_max_t : int or None, default=0, None
            Guide only at original timesteps in ``[guidance_min_t, guidance_max_t]`` (None: no
            upper bound).
        """
        if (unconditional or guidance_scale > 0) and not self.has_null_latent:
            raise ValueError("this needs a network trained with latent_dropout > 0 (it has no null "
                             "latent to run unconditionally or to guide against).")
        model = CountingDenoiser(self._checkpointed_eps if checkpoint else self.eps, counter=counter)
        if unconditional:
            counted = model
            return lambda x_t, t, **_: counted(x_t, t, cond=None)
        if guidance_scale > 0:
            return LatentGuidedDenoiser(model, self.net.null_cond, guidance_scale, min_t=guidance_min_t,
                                        max_t=guidance_max_t)
        return model

    def encode(self, x_0, *, requires_grad=False):
        """Semantic latents ``(n, latent_dim)`` (not a denoiser call: never counted).

        ``requires_grad=True`` keeps the autograd graph (to train through the encoder).
        """
        _, encode = self._calls()
        with torch.set_grad_enabled(requires_grad), self._autocast():
            return encode(self._layout(x_0)).float()

    def invert(self, x_0, z, n_steps, *, counter=None, stop_index=None):
        """Deterministic DDIM inversion: the stochastic subcode ``x_T`` of ``x_0`` given ``z``.

        ``stop_index`` stops after that many of the ``n_steps`` steps (x part-way, for
        :meth:`decode` with ``start_index=stop_index``; see :func:`~skcfx.diffusion.sampling.invert_ddim`).
        """
        return invert_ddim(self.denoiser(counter), x_0, self.schedule(n_steps), extra_args={"cond": z},
                           stop_index=stop_index)

    def decode(self, z, x_T, n_steps, *, guidance_scale=0.0, guidance_steps=None, guidance_interval=None,
               counter=None, requires_grad=False, checkpoint=False, start_index=None):
        """DDIM decoding of ``(z, x_T)`` into images in [-1, 1].

        Parameters
        ----------
        z : torch.Tensor of shape (n, latent_dim)
        x_T : torch.Tensor of shape (n, C, H, W)
        n_steps : int
            DDIM steps.
        guidance_scale : float, default=0.0
            Classifier-free guidance on ``z`` (see :meth:`denoiser`).
        guidance_steps : int or None, default=None
            Guide only the first (noisiest) ``guidance_steps`` steps of the ``n_steps`` chain;
            None: all of them (or ``guidance_interval``'s).
        guidance_interval : (float, float) or None, default=None
            ``(low, high)`` with ``0 <= low <= high <= 1``: guide only the steps whose original
            timestep ``t`` has ``low <= t / T <= high`` (e.g. ``(0.1, 0.6)``: neither the noisiest
            steps, which fix the layout, nor the last one). Not with ``guidance_steps``.
        counter : NFECounter or None, default=None
        requires_grad : bool, default=False
            Keep the autograd graph through every step, so the result is differentiable with
            respect to ``z`` (and ``x_T``) — e.g. to train latent edits through the decoder.
        checkpoint : bool, default=False
            With ``requires_grad``, recompute each step's activations in the backward pass
            (``torch.utils.checkpoint``): memory of one step instead of ``n_steps``.
        start_index : int or None, default=None
            Start part-way down the chain, from x at ``alpha_bar[start_index]`` of the
            ``n_steps`` schedule (what :meth:`invert` with ``stop_index`` returns); None: from x_T.
        """
        schedule = self.schedule(n_steps)
        min_t, max_t = 0, None  # every step guided
        if guidance_steps is not None and guidance_interval is not None:
            raise ValueError("give guidance_steps or guidance_interval, not both.")
        if guidance_steps is not None:
            if not 0 <= guidance_steps <= n_steps:
                raise ValueError(f"guidance_steps must be in [0, n_steps={n_steps}], got {guidance_steps}.")
            if guidance_steps < n_steps:
                # timesteps ascend: the guided ones are the last guidance_steps (none when 0)
                min_t = int(schedule.timesteps[n_steps - guidance_steps]) if guidance_steps else self.T + 1
        if guidance_interval is not None:
            min_t, max_t = guidance_bounds(guidance_interval, self.T)
        model = self.denoiser(counter, guidance_scale=guidance_scale, checkpoint=checkpoint and requires_grad,
                              guidance_min_t=min_t, guidance_max_t=max_t)
        x_0 = sample_ddim(model, x_T, schedule, extra_args={"cond": z}, requires_grad=requires_grad,
                          start_index=start_index)
        return x_0.clamp(-1, 1)
