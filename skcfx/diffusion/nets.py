"""The Diffusion Autoencoders network: a BeatGANs (ADM-style) UNet conditioned
on time and on a semantic latent, plus the semantic encoder.

Module and parameter names equal those of the published implementation
(Preechakul et al., CVPR 2022, github.com/phizaz/diffae), so its released
state dicts load with ``strict=True`` and no renaming.

References
----------
Preechakul et al. (2022), "Diffusion Autoencoders: Toward a Meaningful and
Decodable Representation", sec. 3 and appendix A.
Dhariwal and Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis",
sec. 3 (architecture).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "DiffAEConfig",
    "DiffAENet",
    "SemanticEncoder",
    "ResBlock",
    "AttentionBlock",
    "GroupNorm32",
    "timestep_embedding",
]


# ---------------------------------------------------------------------------
# Configuration

def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def _int_tuple(value, name, *, allow_empty=False):
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints, got {value!r}.") from None
    if not items and not allow_empty:
        raise ValueError(f"{name} must not be empty.")
    for item in items:
        _positive_int(item, name)
    return items


def _groupnorm_widths(cfg):
    """Channel counts that meet a GroupNorm, the UNet's skip concatenations included."""
    widths = {cfg.model_channels * m for m in cfg.channel_mult + cfg.encoder_channel_mult}
    skips = [cfg.model_channels * cfg.channel_mult[0]]
    for level, mult in enumerate(cfg.channel_mult):
        skips += [cfg.model_channels * mult] * (cfg.num_res_blocks + (level != len(cfg.channel_mult) - 1))
    ch = skips[-1]
    for mult in reversed(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks + 1):
            widths.add(ch + skips.pop())
            ch = cfg.model_channels * mult
    return widths


@dataclass(frozen=True)
class DiffAEConfig:
    """Hyper-parameters of a :class:`DiffAENet`.

    Parameters
    ----------
    image_size : int
        Height and width of the (square) images.
    in_channels : int, default=3
    model_channels : int, default=64
        Base width; level ``k`` has ``model_channels * channel_mult[k]`` channels.
    channel_mult : tuple of int, default=(1, 2, 4, 8)
        Decoder (UNet) width multipliers, one per resolution level.
    enc_channel_mult : tuple of int or None, default=None
        Semantic encoder multipliers (None: same as ``channel_mult``).
    attention_resolutions : tuple of int, default=(16,)
        Resolutions (in pixels) at which the UNet uses self-attention.
    enc_attention_resolutions : tuple of int or None, default=None
        Same for the encoder (None: same as ``attention_resolutions``).
    num_res_blocks : int, default=2
    enc_num_res_blocks : int, default=2
    embed_channels : int, default=512
        Width of the time embedding.
    latent_dim : int, default=512
        Width of the semantic latent z_sem.
    num_heads : int, default=1
    dropout : float, default=0.1
        Dropout in the decoder's ResBlocks.
    T : int, default=1000
        Length of the diffusion chain the network was trained for.
    null_latent : bool, default=False
        Add a learned latent used when no condition is given (classifier-free
        guidance / latent dropout). Published checkpoints have none.

    Examples
    --------
    >>> cfg = DiffAEConfig(image_size=16, model_channels=8, channel_mult=(1, 2))
    >>> cfg.encoder_channel_mult
    (1, 2)
    >>> DiffAEConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    image_size: int
    in_channels: int = 3
    model_channels: int = 64
    channel_mult: tuple = (1, 2, 4, 8)
    enc_channel_mult: tuple = None
    attention_resolutions: tuple = (16,)
    enc_attention_resolutions: tuple = None
    num_res_blocks: int = 2
    enc_num_res_blocks: int = 2
    embed_channels: int = 512
    latent_dim: int = 512
    num_heads: int = 1
    dropout: float = 0.1
    T: int = 1000
    null_latent: bool = False

    def __post_init__(self):
        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks",
                     "enc_num_res_blocks", "embed_channels", "latent_dim", "num_heads", "T"):
            _positive_int(getattr(self, name), name)
        # None stays None (meaning "same as the decoder"), so replace() on the
        # decoder fields carries over to the encoder as users expect.
        for name in ("channel_mult", "enc_channel_mult", "attention_resolutions", "enc_attention_resolutions"):
            value = getattr(self, name)
            if value is not None or not name.startswith("enc_"):
                object.__setattr__(self, name, _int_tuple(value, name, allow_empty="attention" in name))
        mult, enc_mult = self.channel_mult, self.encoder_channel_mult
        if self.image_size % 2 ** (len(mult) - 1):
            raise ValueError(
                f"image_size={self.image_size} must be divisible by 2**(len(channel_mult) - 1)="
                f"{2 ** (len(mult) - 1)} so the UNet skip connections line up.")
        if self.image_size < 2 ** (len(enc_mult) - 1):
            raise ValueError(f"image_size={self.image_size} is too small for {len(enc_mult)} encoder levels.")
        bad = sorted(w for w in _groupnorm_widths(self) if w % min(32, w))
        if bad:
            raise ValueError(
                f"GroupNorm(min(32, C)) cannot normalise C in {bad}: choose model_channels and "
                "channel_mult so that every level width, and every sum of two neighbouring level "
                "widths (UNet skips), is a multiple of 32 or at most 32 and divides 32.")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a float in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.null_latent, bool):
            raise TypeError(f"null_latent must be a bool, got {self.null_latent!r}.")

    @property
    def encoder_channel_mult(self):
        """``enc_channel_mult``, or ``channel_mult`` when it is None."""
        return self.channel_mult if self.enc_channel_mult is None else self.enc_channel_mult

    @property
    def encoder_attention_resolutions(self):
        """``enc_attention_resolutions``, or ``attention_resolutions`` when it is None."""
        if self.enc_attention_resolutions is None:
            return self.attention_resolutions
        return self.enc_attention_resolutions

    def to_dict(self):
        """Plain dict (lists instead of tuples), loadable with ``weights_only=True``."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}.")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DiffAEConfig fields {unknown}; valid fields are {sorted(names)}.")
        return cls(**data)


# ---------------------------------------------------------------------------
# Layers

class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in at least float32 whatever the input dtype (fp16/bf16 safe)."""

    def forward(self, x):
        dtype = torch.promote_types(x.dtype, torch.float32)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.group_norm(x.to(dtype), self.num_groups, weight, bias, self.eps).to(x.dtype)


def normalization(channels):
    """GroupNorm with ``min(32, channels)`` groups, as in the published code."""
    return GroupNorm32(min(32, channels), channels)


def zero_module(module):
    """Zero all parameters of ``module`` (residual branches start as identity)."""
    for param in module.parameters():
        nn.init.zeros_(param)
    return module


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding of (integer) timesteps, ordered ``[cos | sin]``.

    Parameters
    ----------
    t : torch.Tensor of shape (n,)
    dim : int
    max_period : float, default=10000.0

    Returns
    -------
    torch.Tensor of shape (n, dim), float32
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _resample(x, mode):
    if mode == "down":
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class ResBlock(nn.Module):
    """BeatGANs residual block, optionally conditioned and resampling.

    Conditioned (decoder)::

        h = conv3x3(SiLU(GN(x)))                      # resampled after SiLU
        h = GN(h) * (1 + t_scale) + t_shift           # (t_scale, t_shift) = Linear(SiLU(emb))
        h = h * (1 + z_scale)                         # z_scale = Linear(SiLU(z_sem))
        out = skip(x) + conv3x3_zero(Dropout(SiLU(h)))

    Unconditioned (semantic encoder): ``out = skip(x) + conv3x3(SiLU(GN(x)))``.

    Parameters
    ----------
    channels, out_channels : int
    emb_channels : int or None
        Time-embedding width; None builds the unconditioned block.
    cond_channels : int or None
        Latent width (required with ``emb_channels``).
    dropout : float
    resample : {None, 'up', 'down'}
    """

    def __init__(self, channels, out_channels=None, *, emb_channels=None, cond_channels=None,
                 dropout=0.0, resample=None):
        super().__init__()
        out_channels = out_channels or channels
        self.resample = resample
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.conditioned = emb_channels is not None
        if self.conditioned:
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
            self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels, out_channels))
            self.out_layers = nn.Sequential(
                normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
                zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb=None, cond=None):
        norm, act, conv = self.in_layers
        # Resample between the activation and the conv, on both paths (ADM "updown").
        h = conv(_resample(act(norm(x)), self.resample))
        x = _resample(x, self.resample)
        if self.conditioned:
            h = self._modulated_out(h, emb, cond)
        return self.skip_connection(x) + h

    def _modulated_out(self, h, emb, cond):
        t_scale, t_shift = rearrange(self.emb_layers(emb), "n c -> n c 1 1").to(h.dtype).chunk(2, dim=1)
        z_scale = rearrange(self.cond_emb_layers(cond), "n c -> n c 1 1").to(h.dtype)
        norm, act, dropout, conv = self.out_layers
        h = norm(h) * (1 + t_scale) + t_shift
        h = h * (1 + z_scale)
        return conv(dropout(act(h)))


class AttentionBlock(nn.Module):
    """Self-attention over pixels with a residual connection.

    The published block scales q and k each by ``head_channels ** -0.25``, which is
    ``softmax(q k^T / sqrt(head_channels)) v``: exactly what
    :func:`torch.nn.functional.scaled_dot_product_attention` computes, with fused kernels
    (flash / memory-efficient attention on GPUs) that never hold the L x L matrix in memory.
    Heads are laid out head-major in ``qkv`` (the published "legacy" order, where each head owns
    a contiguous [q | k | v] block).
    """

    def __init__(self, channels, num_heads=1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels={channels} must be divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x):
        height = x.shape[2]
        x = rearrange(x, "n c h w -> n c (h w)")
        qkv = self.qkv(self.norm(x))
        # Channels last within each head (stride 1), which the fused GPU kernels require.
        qkv = rearrange(qkv, "n c l -> n l c").contiguous()
        q, k, v = rearrange(qkv, "n l (heads three c) -> three n heads l c", heads=self.num_heads, three=3)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "n heads l c -> n (heads c) l")
        return rearrange(x + self.proj_out(out), "n c (h w) -> n c h w", h=height)


class TimestepSequential(nn.Sequential):
    """Sequential that hands the time embedding and latent to its ResBlocks."""

    def forward(self, x, emb=None, cond=None):
        for layer in self:
            x = layer(x, emb, cond) if isinstance(layer, ResBlock) else layer(x)
        return x


class TimeEmbedding(nn.Module):
    """Sinusoid of t followed by ``Linear - SiLU - Linear`` (published ``time_embed``)."""

    def __init__(self, model_channels, embed_channels):
        super().__init__()
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, embed_channels), nn.SiLU(), nn.Linear(embed_channels, embed_channels))

    def forward(self, t):
        first = self.time_embed[0].weight
        return self.time_embed(timestep_embedding(t, self.model_channels).to(first.dtype))


# ---------------------------------------------------------------------------
# Network builders (shared by the UNet and the semantic encoder)

def _down_path(*, image_size, in_channels, model_channels, channel_mult, attention_resolutions,
               num_res_blocks, num_heads, block_kwargs):
    """Stem conv plus per level ``num_res_blocks`` blocks (+attention) and a down block.

    Returns the blocks, the channels of every block output (for skips), the
    final channels and the final resolution.
    """
    ch = model_channels * channel_mult[0]
    blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    skip_channels, resolution = [ch], image_size
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers = [ResBlock(ch, model_channels * mult, **block_kwargs)]
            ch = model_channels * mult
            if resolution in attention_resolutions:
                layers.append(AttentionBlock(ch, num_heads))
            blocks.append(TimestepSequential(*layers))
            skip_channels.append(ch)
        if level != len(channel_mult) - 1:
            blocks.append(TimestepSequential(ResBlock(ch, ch, resample="down", **block_kwargs)))
            skip_channels.append(ch)
            resolution //= 2
    return blocks, skip_channels, ch, resolution


def _middle_block(ch, num_heads, block_kwargs):
    return TimestepSequential(
        ResBlock(ch, ch, **block_kwargs), AttentionBlock(ch, num_heads), ResBlock(ch, ch, **block_kwargs))


def _up_path(cfg, ch, skip_channels, resolution, block_kwargs):
    """``num_res_blocks + 1`` blocks per level, each eating one skip, and an up block."""
    skip_channels = list(skip_channels)
    blocks = nn.ModuleList()
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            layers = [ResBlock(ch + skip_channels.pop(), cfg.model_channels * mult, **block_kwargs)]
            ch = cfg.model_channels * mult
            if resolution in cfg.attention_resolutions:
                layers.append(AttentionBlock(ch, cfg.num_heads))
            if level and i == cfg.num_res_blocks:
                layers.append(ResBlock(ch, ch, resample="up", **block_kwargs))
                resolution *= 2
            blocks.append(TimestepSequential(*layers))
    return blocks, ch


# ---------------------------------------------------------------------------
# Networks

class SemanticEncoder(nn.Module):
    """Semantic encoder: the UNet's down path without time conditioning.

    Head: ``GN - SiLU - AdaptiveAvgPool(1) - conv1x1 - flatten``; z_sem is unbounded.

    Parameters
    ----------
    config : DiffAEConfig
    """

    def __init__(self, config):
        super().__init__()
        self.input_blocks, _, ch, _ = _down_path(
            image_size=config.image_size, in_channels=config.in_channels,
            model_channels=config.model_channels, channel_mult=config.encoder_channel_mult,
            attention_resolutions=config.encoder_attention_resolutions,
            num_res_blocks=config.enc_num_res_blocks, num_heads=config.num_heads, block_kwargs={})
        self.middle_block = _middle_block(ch, config.num_heads, {})
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(ch, config.latent_dim, 1), nn.Flatten())

    def forward(self, x):
        """Map images ``(n, C, H, W)`` in [-1, 1] to z_sem ``(n, latent_dim)``."""
        for block in self.input_blocks:
            x = block(x)
        return self.out(self.middle_block(x))


class DiffAENet(nn.Module):
    """Diffusion autoencoder: conditional eps-predicting UNet plus semantic encoder.

    Parameters
    ----------
    config : DiffAEConfig

    Attributes
    ----------
    config : DiffAEConfig
    encoder : SemanticEncoder
    null_latent : torch.nn.Parameter of shape (latent_dim,)
        Only with ``config.null_latent``; used when ``cond`` is None.

    Examples
    --------
    >>> cfg = DiffAEConfig(image_size=8, in_channels=1, model_channels=8, channel_mult=(1, 2),
    ...                    attention_resolutions=(4,), embed_channels=16, latent_dim=4)
    >>> net = DiffAENet(cfg).eval()
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> z = net.encode(x)
    >>> net(x, torch.tensor([0, 999]), cond=z).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, DiffAEConfig):
            raise TypeError(f"config must be a DiffAEConfig, got {type(config).__name__}.")
        self.config = config
        block_kwargs = dict(emb_channels=config.embed_channels, cond_channels=config.latent_dim,
                            dropout=config.dropout)
        self.time_embed = TimeEmbedding(config.model_channels, config.embed_channels)
        self.input_blocks, skips, ch, resolution = _down_path(
            image_size=config.image_size, in_channels=config.in_channels,
            model_channels=config.model_channels, channel_mult=config.channel_mult,
            attention_resolutions=config.attention_resolutions, num_res_blocks=config.num_res_blocks,
            num_heads=config.num_heads, block_kwargs=block_kwargs)
        self.middle_block = _middle_block(ch, config.num_heads, block_kwargs)
        self.output_blocks, ch = _up_path(config, ch, skips, resolution, block_kwargs)
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, config.in_channels, 3, padding=1)))
        self.encoder = SemanticEncoder(config)
        if config.null_latent:
            self.null_latent = nn.Parameter(torch.zeros(config.latent_dim))

    def encode(self, x_0):
        """Semantic latent z_sem ``(n, latent_dim)`` of images ``(n, C, H, W)`` in [-1, 1]."""
        self._check_images(x_0, "x_0")
        return self.encoder(x_0)

    def null_cond(self, n):
        """The learned null latent repeated ``n`` times (needs ``config.null_latent``)."""
        if not self.config.null_latent:
            raise ValueError("this network has no null latent (DiffAEConfig.null_latent=False).")
        return self.null_latent.expand(n, -1)

    def forward(self, x_t, t, cond=None):
        """Predict the noise in ``x_t``.

        Parameters
        ----------
        x_t : torch.Tensor of shape (n, C, H, W)
        t : int or torch.Tensor of shape () or (n,)
            Original timesteps in [0, T).
        cond : torch.Tensor of shape (n, latent_dim) or None
            z_sem; None uses the null latent (if the network has one).

        Returns
        -------
        eps : torch.Tensor of shape (n, C, H, W)
        """
        self._check_images(x_t, "x_t")
        n = x_t.shape[0]
        cond = self._resolve_cond(cond, n)
        emb = self.time_embed(self._resolve_t(t, n, x_t.device))
        skips, h = [], x_t
        for block in self.input_blocks:
            h = block(h, emb, cond)
            skips.append(h)
        h = self.middle_block(h, emb, cond)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, cond)
        return self.out(h)

    def _check_images(self, x, name):
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{name} must have shape (n, {', '.join(map(str, expected))}), got {tuple(x.shape)}.")

    def _resolve_cond(self, cond, n):
        if cond is None:
            if not self.config.null_latent:
                raise ValueError(
                    "cond is required: pass z_sem from encode(), or build the network with "
                    "DiffAEConfig(null_latent=True) to allow unconditional calls.")
            return self.null_cond(n)
        if cond.shape != (n, self.config.latent_dim):
            raise ValueError(f"cond must have shape ({n}, {self.config.latent_dim}), got {tuple(cond.shape)}.")
        return cond

    @staticmethod
    def _resolve_t(t, n, device):
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            return t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},), got {tuple(t.shape)}.")
        return t
