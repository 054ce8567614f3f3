"""Named network configurations and checkpoint formats.

One place maps names to architectures (timm style): ``create_net('tiny16')``
or ``create_net('ffhq128')``. Two checkpoint formats are read:

- the published Diffusion Autoencoders format (a PyTorch Lightning
  ``last.ckpt`` with ``hyper_parameters`` and ``ema_model.*`` weights), and
- skcfx's own format, a plain dict ``{'format': 'skcfx', 'version', 'config',
  'state_dict', 'extra'}`` that loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import tempfile
from enum import Enum
from pathlib import Path

import torch

from .nets import DiffAEConfig, DiffAENet

__all__ = [
    "CHECKPOINT_VERSION",
    "list_configs",
    "get_config",
    "register_config",
    "default_config_for",
    "create_net",
    "load_published_checkpoint",
    "save_skcfx_checkpoint",
    "load_skcfx_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_VERSION = 1

# ---------------------------------------------------------------------------
# Registry of named configurations

_CONFIGS = {}


def register_config(name, config, *, overwrite=False):
    """Register ``config`` under ``name``.

    Parameters
    ----------
    name : str
    config : DiffAEConfig
    overwrite : bool, default=False
        Replace an existing entry instead of raising.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}.")
    if not isinstance(config, DiffAEConfig):
        raise TypeError(f"config must be a DiffAEConfig, got {type(config).__name__}.")
    if name in _CONFIGS and not overwrite:
        raise ValueError(f"a config named {name!r} is already registered (pass overwrite=True).")
    _CONFIGS[name] = config


# Published sizes (Preechakul et al. 2022, templates ffhq64/128/256_autoenc).
register_config("ffhq64", DiffAEConfig(
    image_size=64, model_channels=64, channel_mult=(1, 2, 4, 8), enc_channel_mult=(1, 2, 4, 8, 8),
    embed_channels=512, latent_dim=512))
register_config("ffhq128", DiffAEConfig(
    image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4), enc_channel_mult=(1, 1, 2, 3, 4, 4),
    embed_channels=512, latent_dim=512))
register_config("ffhq256", DiffAEConfig(
    image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4),
    enc_channel_mult=(1, 1, 2, 2, 4, 4, 4), embed_channels=512, latent_dim=512))
# Small CPU defaults, trainable on 2 cores in minutes.
# tiny16 (0.19M parameters) suits the 16 px digits: measured on 2 shared CPU cores (1 thread),
# 2500 steps of batch 64 took 9 min and gave a held-out reconstruction MSE of 0.005 ([-1, 1] units,
# 20 DDIM steps); width 32 (0.59M) was 2.6x slower per step. tiny32 (about 1.4M) is the
# architecture of the reference fixture diffae_tiny32.
register_config("tiny16", DiffAEConfig(
    image_size=16, in_channels=1, model_channels=16, channel_mult=(1, 1), enc_channel_mult=(1, 2, 2),
    enc_num_res_blocks=1, attention_resolutions=(8,), embed_channels=64, latent_dim=32))
register_config("tiny32", DiffAEConfig(
    image_size=32, model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2),
    attention_resolutions=(16,), embed_channels=64, latent_dim=64))


def list_configs():
    """Sorted names of the registered configurations."""
    return sorted(_CONFIGS)


def get_config(name, **overrides):
    """The registered configuration ``name`` with ``overrides`` applied.

    Overrides that are None are dropped so the registered values win (timm).

    Raises
    ------
    ValueError
        Unknown name (the message lists valid ones) or unknown override.
    """
    if name not in _CONFIGS:
        raise ValueError(f"unknown network config {name!r}; valid names are {list_configs()}.")
    return _replace(_CONFIGS[name], overrides)


def _replace(config, overrides):
    overrides = {key: value for key, value in overrides.items() if value is not None}
    valid = {f.name for f in dataclasses.fields(DiffAEConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown DiffAEConfig fields {unknown}; valid fields are {sorted(valid)}.")
    return dataclasses.replace(config, **overrides)


def default_config_for(image_size, in_channels=3, **overrides):
    """A small CPU-friendly configuration for ``image_size`` pixels.

    16 and 32 pixels give ``'tiny16'`` and ``'tiny32'``. Other sizes below 32
    follow the tiny16 recipe; larger ones get levels of widths (1, 2, 2, ...)
    until the UNet is down to about 16 pixels (base width 32 up to 32 pixels,
    64 above). Self-attention sits at the UNet's lowest resolution.

    Parameters
    ----------
    image_size : int
    in_channels : int, default=3
    **overrides
        Any :class:`DiffAEConfig` field.

    Returns
    -------
    DiffAEConfig

    Examples
    --------
    >>> cfg = default_config_for(64)
    >>> cfg.channel_mult, cfg.attention_resolutions
    ((1, 2, 2), (16,))
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2:
        raise ValueError(f"image_size must be an int >= 2, got {image_size!r}.")
    if image_size in (16, 32):
        base = _CONFIGS[f"tiny{image_size}"]
    elif image_size < 32:
        base = dataclasses.replace(_CONFIGS["tiny16"], image_size=image_size,
                                   attention_resolutions=(image_size // 2,), enc_attention_resolutions=None)
    else:
        n_levels = 2
        while image_size % 2 ** n_levels == 0 and image_size // 2 ** n_levels >= 16:
            n_levels += 1
        mult = (1,) + (2,) * (n_levels - 1)
        small = image_size <= 32
        base = DiffAEConfig(
            image_size=image_size, model_channels=32 if small else 64, channel_mult=mult,
            enc_channel_mult=mult + (2,), attention_resolutions=(image_size // 2 ** (n_levels - 1),),
            embed_channels=64 if small else 256, latent_dim=64 if small else 128)
    return _replace(base, {"image_size": image_size, "in_channels": in_channels, **overrides})


def create_net(name_or_config, **overrides):
    """Build a :class:`DiffAENet` from a registered name or a config.

    Parameters
    ----------
    name_or_config : str or DiffAEConfig or dict
    **overrides
        :class:`DiffAEConfig` fields to change (None values are ignored).

    Returns
    -------
    DiffAENet

    Examples
    --------
    >>> net = create_net("tiny16", latent_dim=16)
    >>> net.config.latent_dim, net.config.image_size
    (16, 16)
    """
    if isinstance(name_or_config, str):
        config = get_config(name_or_config, **overrides)
    elif isinstance(name_or_config, DiffAEConfig):
        config = _replace(name_or_config, overrides)
    elif isinstance(name_or_config, dict):
        config = _replace(DiffAEConfig.from_dict(name_or_config), overrides)
    else:
        raise TypeError(
            f"name_or_config must be a str, DiffAEConfig or dict, got {type(name_or_config).__name__}.")
    return DiffAENet(config)


# ---------------------------------------------------------------------------
# Restricted unpickling

# Besides tensors and plain containers (torch's weights_only allow-list), a PyTorch Lightning
# 1.x ``last.ckpt`` names a few Lightning classes: callback states are keyed by the callback's
# class (before Lightning 1.5), and hyper-parameters may be an ``AttributeDict``. Those names
# are read as inert stand-ins: nothing is imported, and nothing is ever called.
_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning.pytorch")
_LIGHTNING_CALLBACKS = {
    "callbacks.model_checkpoint": "ModelCheckpoint",
    "callbacks.early_stopping": "EarlyStopping",
    "callbacks.lr_monitor": "LearningRateMonitor",
    "callbacks.progress": "ProgressBar",
    "callbacks.progress.tqdm_progress": "TQDMProgressBar",
    "callbacks.stochastic_weight_avg": "StochasticWeightAveraging",
    "callbacks.gpu_stats_monitor": "GPUStatsMonitor",
    "callbacks.model_summary": "ModelSummary",
    "callbacks.timer": "Timer",
}
_ATTRIBUTE_DICTS = ("pytorch_lightning.utilities.parsing.AttributeDict",
                    "lightning.fabric.utilities.data.AttributeDict",
                    "lightning_fabric.utilities.data.AttributeDict")
# numpy scalars and dtypes (e.g. a monitored metric stored as np.float64) hold data only.
_NUMPY_DATA = {"numpy.core.multiarray.scalar": "scalar", "numpy._core.multiarray.scalar": "scalar",
               "numpy.dtype": "dtype"}
_NUMPY_NUMERIC = {"Bool", "Float16", "Float32", "Float64", "LongDouble", "Complex64", "Complex128",
                  "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Long",
                  "ULong", "LongLong", "ULongLong", "Short", "UShort", "Byte", "UByte", "Int", "UInt"}


class LightningStandIn:
    """Stands for a Lightning class named in a checkpoint; only usable as a dictionary key.

    ``source`` is the class's full name. Building an instance is refused: that would mean
    running the class's code.
    """

    source = ""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError(f"refusing to build an instance of {cls.source}")


def _lightning_stand_ins():
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    stand_ins = []
    for package in _LIGHTNING_PACKAGES:
        for module, name in _LIGHTNING_CALLBACKS.items():
            source = f"{package}.{module}.{name}"
            stand_ins.append((type(name, (LightningStandIn,), {"source": source}), source))
    stand_ins += [(dict, source) for source in _ATTRIBUTE_DICTS]
    stand_ins += [(scalar if kind == "scalar" else np.dtype, source) for source, kind in _NUMPY_DATA.items()]
    # A dtype is rebuilt as its concrete class (numpy >= 1.25), whose state torch then sets.
    for name in getattr(getattr(np, "dtypes", None), "__all__", ()):
        if name.removesuffix("DType") in _NUMPY_NUMERIC:
            stand_ins.append((getattr(np.dtypes, name), f"numpy.dtypes.{name}"))
    return stand_ins


_STAND_INS = _lightning_stand_ins()
_REFUSED = re.compile(r"GLOBAL ([\w.]+)|function (<[^>]*>|[\w.]+)|instance of ([\w.]+)|got (<[^>]*>)")


def _refusal(exc):
    """The name the restricted unpickler refused, from its message."""
    match = _REFUSED.search(str(exc))
    return next((group for group in match.groups() if group), None) if match else None


def _torch_load(path, weights_only):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if not weights_only:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_STAND_INS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refusal(exc)
        what = f"'{refused}'" if refused else "an object"
        raise ValueError(
            f"{path}: refused to unpickle {what}: it is not on skcfx's allow-list (tensors, "
            "numbers, strings, plain containers and the records of a Lightning checkpoint), so "
            "loading it could run code stored in the file. If you trust this file, load it with "
            "skcfx.diffusion.load_checkpoint(path, weights_only=False).") from exc
    except (RuntimeError, LookupError, EOFError) as exc:
        raise ValueError(f"path: '{path}' is not a PyTorch checkpoint ({exc}).") from exc


def _build_with_weights(config, state_dict, source):
    """Build the net on the meta device and assign the weights (strict)."""
    with torch.device("meta"):
        net = DiffAENet(config)
    expected = set(net.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not match the architecture from its config: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}).")
    weights = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    try:
        net.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weight shapes do not match the architecture from its config: {exc}") from exc
    return net.eval()


# ---------------------------------------------------------------------------
# Published Diffusion Autoencoders checkpoints

# published TrainConfig field -> DiffAEConfig field
_HPARAM_FIELDS = {
    "img_size": "image_size",
    "net_ch": "model_channels",
    "net_ch_mult": "channel_mult",
    "net_enc_channel_mult": "enc_channel_mult",
    "net_attn": "attention_resolutions",
    "net_enc_attn": "enc_attention_resolutions",
    "net_num_res_blocks": "num_res_blocks",
    "net_enc_num_res_blocks": "enc_num_res_blocks",
    "net_beatgans_embed_channels": "embed_channels",
    "style_ch": "latent_dim",
    "net_beatgans_attn_head": "num_heads",
    "dropout": "dropout",
    "T": "T",
}
# settings skcfx implements; an absent key means the published default (supported)
_SUPPORTED_SETTINGS = {
    "beta_scheduler": ("linear",),
    "model_name": ("beatgans_autoenc",),
    "model_type": ("autoencoder",),
    "model_mean_type": ("eps",),
    "diffusion_type": ("beatgans",),
    "net_resblock_updown": (True,),
    "net_enc_pool": ("adaptivenonzero",),
    "net_beatgans_resnet_two_cond": (True,),
    "net_enc_tanh": (False,),
}


def _setting_value(value):
    # The published config stores enums; as_dict_jsonable keeps only plain values,
    # but be lenient with 'ModelName.beatgans_autoenc' style strings and real enums.
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return value.split(".")[-1].lower()
    return value


def _check_published_settings(hparams):
    problems = []
    for key, allowed in _SUPPORTED_SETTINGS.items():
        if key in hparams and _setting_value(hparams[key]) not in allowed:
            problems.append(f"{key}={hparams[key]!r} (supported: {list(allowed)})")
    n_input = hparams.get("net_num_input_res_blocks")
    if n_input is not None and n_input != hparams.get("net_num_res_blocks", 2):
        problems.append(f"net_num_input_res_blocks={n_input!r} (must equal net_num_res_blocks)")
    cond_ch = hparams.get("net_beatgans_resnet_cond_channels")
    if cond_ch is not None and cond_ch != hparams.get("style_ch", 512):
        problems.append(f"net_beatgans_resnet_cond_channels={cond_ch!r} (must equal style_ch)")
    if problems:
        raise ValueError("unsupported published checkpoint settings: " + "; ".join(problems) + ".")


def _config_from_hparams(hparams, in_channels):
    if "img_size" not in hparams:
        raise ValueError("hyper_parameters has no 'img_size'; is this a Diffusion Autoencoders checkpoint?")
    _check_published_settings(hparams)
    # published TrainConfig defaults for fields its templates leave unset
    kwargs = dict(channel_mult=(1, 2, 4, 8), model_channels=64, num_res_blocks=2, enc_num_res_blocks=2,
                  attention_resolutions=(16,), embed_channels=512, latent_dim=512, num_heads=1,
                  dropout=0.1, T=1000)
    for key, field in _HPARAM_FIELDS.items():
        if hparams.get(key) is not None:
            kwargs[field] = hparams[key]
    return DiffAEConfig(in_channels=in_channels, **kwargs)


def load_published_checkpoint(path, *, use_ema=True, weights_only=True):
    """Load a checkpoint in the published Diffusion Autoencoders format.

    Parameters
    ----------
    path : str or pathlib.Path
        A Lightning ``last.ckpt`` with ``state_dict`` (``model.*``,
        ``ema_model.*``, ``x_T``) and ``hyper_parameters``.
    use_ema : bool, default=True
        Load the EMA weights (what the published code uses for inference).
    weights_only : bool, default=True
        Passed to ``torch.load``; only set False for files you trust.

    Returns
    -------
    net : DiffAENet
        In eval mode, on the CPU.
    info : dict
        ``format``, ``source``, ``config`` (dict), ``hyper_parameters``,
        ``global_step``, ``epoch``, ``weights`` ('ema' or 'model') and
        ``ignored_keys`` (e.g. the optional latent DPM ``latent_net.*``).

    Raises
    ------
    ValueError
        Not this format, unsupported settings (e.g. a non-linear beta
        schedule) or weights that do not match the architecture.
    """
    checkpoint = _torch_load(path, weights_only)
    return _published_from_payload(checkpoint, str(path), use_ema=use_ema)


def _published_from_payload(checkpoint, source, *, use_ema):
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{source} is not a published Diffusion Autoencoders checkpoint "
                         "(expected a dict with 'state_dict' and 'hyper_parameters').")
    hparams = dict(checkpoint["hyper_parameters"])
    prefix = "ema_model." if use_ema else "model."
    weights = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    if not weights:
        raise ValueError(f"{source} has no '{prefix}*' weights.")
    ignored = sorted(key for key in weights if key.startswith("latent_net."))
    weights = {key: value for key, value in weights.items() if not key.startswith("latent_net.")}
    stem = weights.get("input_blocks.0.0.weight")
    config = _config_from_hparams(hparams, in_channels=3 if stem is None else int(stem.shape[1]))
    net = _build_with_weights(config, weights, source)
    info = {
        "format": "published", "source": source, "config": config.to_dict(), "hyper_parameters": hparams,
        "global_step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch"),
        "weights": "ema" if use_ema else "model", "ignored_keys": [prefix + key for key in ignored],
    }
    return net, info


# ---------------------------------------------------------------------------
# skcfx checkpoints

_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value, where):
    """Refuse objects that torch.load(weights_only=True) could not read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys.")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(
            f"{where} is a {type(value).__name__}; extra may only hold dicts, lists, tuples, str, int, "
            "float, bool, None and torch tensors (convert numpy arrays with torch.from_numpy).")


def save_skcfx_checkpoint(path, net, extra=None):
    """Save ``net`` in the skcfx format, atomically (temp file + ``os.replace``).

    Parameters
    ----------
    path : str or pathlib.Path
    net : DiffAENet
    extra : dict or None, default=None
        Plain data stored alongside (training state, statistics, ...).

    Returns
    -------
    path : pathlib.Path
    """
    if not isinstance(net, DiffAENet):
        raise TypeError(f"net must be a DiffAENet, got {type(net).__name__}.")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}.")
    _check_plain(extra, "extra")
    payload = {
        "format": "skcfx", "version": CHECKPOINT_VERSION, "config": net.config.to_dict(),
        "state_dict": {key: value.detach().cpu() for key, value in net.state_dict().items()},
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_skcfx_checkpoint(path):
    """Load a checkpoint written by :func:`save_skcfx_checkpoint`.

    Returns
    -------
    net : DiffAENet
        In eval mode, on the CPU.
    info : dict
        ``format``, ``version``, ``source``, ``config`` (dict) and ``extra``.
    """
    return _skcfx_from_payload(_torch_load(path, weights_only=True), str(path))


def _skcfx_from_payload(payload, source):
    if not isinstance(payload, dict) or payload.get("format") != "skcfx":
        raise ValueError(f"{source} is not an skcfx checkpoint.")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{source} has skcfx checkpoint version {payload.get('version')!r}; "
                         f"this skcfx reads version {CHECKPOINT_VERSION}.")
    config = DiffAEConfig.from_dict(payload["config"])
    net = _build_with_weights(config, payload["state_dict"], source)
    info = {"format": "skcfx", "version": payload["version"], "source": source,
            "config": config.to_dict(), "extra": payload.get("extra", {})}
    return net, info


def load_checkpoint(path, *, weights_only=True):
    """Load either format, detected from the file's contents.

    Returns
    -------
    net : DiffAENet
    info : dict
        As returned by :func:`load_published_checkpoint` or
        :func:`load_skcfx_checkpoint`; ``info['format']`` tells which.
    """
    payload = _torch_load(path, weights_only)
    if isinstance(payload, dict) and payload.get("format") == "skcfx":
        return _skcfx_from_payload(payload, str(path))
    return _published_from_payload(payload, str(path), use_ema=True)
