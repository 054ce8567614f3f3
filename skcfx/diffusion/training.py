"""Training loop for diffusion autoencoders (Preechakul et al., CVPR 2022).

One function, :func:`train_diffae`, trains a conditional denoiser together with its semantic
encoder by the simple eps-prediction loss; everything it needs to continue later lives in a
:class:`TrainState`, so training can be interrupted, checkpointed and resumed bit-exactly.

The net must follow the skcfx denoiser contract::

    z = net.encode(x_0)              # (n, latent_dim)
    eps_hat = net(x_t, t, cond=z)    # same shape as x_t; t are ORIGINAL timesteps in [0, T)
    net.null_latent                  # optional nn.Parameter, used by latent dropout

Randomness comes only from the ``generator`` argument: it draws the batches, timesteps, noise,
dropout masks of the latent, and one seed per step for the global RNG that ``nn.Dropout`` inside
the net uses. The caller's global RNG state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import pickle
import signal
import tempfile
import threading
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from skcfx._validation import check_positive_int, resolve_device
from skcfx.diffusion.schedule import alpha_bar, linear_betas

__all__ = [
    "EMA",
    "TrainState",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "train_diffae",
    "save_train_checkpoint",
    "load_train_checkpoint",
]

NUM_TIMESTEPS = 1000
_CHECKPOINT_FORMAT = "skcfx-train-state"
_CHECKPOINT_VERSION = 1
_AMP_CHOICES = ("auto", "bf16", "fp16", "off")


# ----------------------------------------------------------------------------------------------
# Exceptions


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradient became NaN or infinite.

    The failing update is not applied: the net keeps the weights of the last good step, and
    ``state`` describes that step, so training can be resumed with a lower learning rate.

    Attributes
    ----------
    step : int
        The 1-based number of the step that failed.
    state : TrainState
        The state after the last good step (``state.step == step - 1``).
    """

    def __init__(self, message, *, step, state):
        super().__init__(message)
        self.step = step
        self.state = state


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``state`` holds everything done so far.

    Passing ``state`` back to :func:`train_diffae` (with the same net) continues exactly where the
    interrupted run stopped. It is a :class:`KeyboardInterrupt`, so code that does not know it
    still stops as a user expects after Ctrl-C.

    Attributes
    ----------
    state : TrainState
        The state after the last completed step.
    """

    def __init__(self, state):
        super().__init__(f"training interrupted after step {state.step}")
        self.state = state


# ----------------------------------------------------------------------------------------------
# Small helpers


def _cpu_clone(obj):
    """Deep copy of nested dicts/lists/tuples with every tensor detached, cloned and on the CPU.

    States handed out must not share storage with live tensors: the optimizer and EMA keep
    updating theirs in place, which would silently change a state kept for later.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _cpu_clone(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_clone(value) for value in obj)
    return obj


@contextlib.contextmanager
def _defer_sigint():
    """Hold back Ctrl-C until the block ends, so a parameter update is never half applied.

    Only possible in the main thread with Python's default handler; elsewhere it does nothing.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _seed_global_rng(seed, device):
    """Seed the global RNG that ``nn.Dropout`` uses on ``device`` (CPU, plus CUDA if used)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _isolated_global_rng(device):
    """Context that restores the caller's global RNG state (CPU and ``device``) on exit."""
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=cuda_devices)


def _resolve_amp(amp, device):
    """Map the ``amp`` argument to an autocast dtype, or None for full float32."""
    if amp is None or amp is False:
        amp = "off"
    if not isinstance(amp, str) or amp not in _AMP_CHOICES:
        raise ValueError(f"amp must be one of {_AMP_CHOICES} (or None/False), got {amp!r}.")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ValueError(f"amp={amp!r} needs a CUDA device; training on {device} runs in float32.")
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _make_grad_scaler():
    """A CUDA gradient scaler for float16 autocast (the API moved in torch 2.3)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3


# ----------------------------------------------------------------------------------------------
# Exponential moving average of the weights


class EMA:
    """Exponential moving average of every floating-point entry of a module's ``state_dict``.

    Each :meth:`update` moves the average towards the live weights::

        d = min(decay, (1 + n) / (10 + n))        # n = updates done so far
        ema = d * ema + (1 - d) * weights

    The warm-up term ``(1 + n) / (10 + n)`` (as in TensorFlow's ``ExponentialMovingAverage``
    with ``num_updates``) makes the average follow the weights closely early on: it averages
    over roughly the last ``n / 9`` steps until ``decay`` takes over, so a short run of a few
    hundred steps already gives a useful average instead of one dominated by the random init.
    Integer buffers (e.g. counters) are copied, not averaged.

    Parameters
    ----------
    net : torch.nn.Module
        The module to track; the average starts from its current weights.
    decay : float, default=0.999
        Largest decay, in [0, 1). The published DiffAE uses 0.9999 for runs of ~1e6 steps.
    warmup : bool, default=True
        Use the warm-up schedule above; False uses ``decay`` from the first update.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> ema = EMA(net, decay=0.9)
    >>> ema.update(net)
    >>> ema.num_updates
    1
    """

    def __init__(self, net, decay=0.999, *, warmup=True):
        if not isinstance(decay, numbers.Real) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a float in [0, 1), got {decay!r}.")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.weights = {key: value.detach().clone() for key, value in net.state_dict().items()}

    def current_decay(self):
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, net):
        """Move the average one step towards the current weights of ``net``."""
        weight = 1.0 - self.current_decay()
        averaged, live = [], []
        for key, value in net.state_dict().items():
            if value.is_floating_point():
                averaged.append(self.weights[key])
                live.append(value.to(self.weights[key].dtype))
            else:
                self.weights[key].copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, live, weight)
        self.num_updates += 1

    def copy_to(self, net):
        """Load the averaged weights into ``net`` (the weights to use for inference)."""
        net.load_state_dict(self.weights)

    def state_dict(self):
        """A CPU copy: ``{'decay', 'warmup', 'num_updates', 'weights'}`` (plain data only)."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "weights": _cpu_clone(self.weights),
        }

    @torch.no_grad()
    def load_state_dict(self, state):
        """Restore the average and the update count (``decay`` stays as constructed)."""
        missing = set(self.weights) ^ set(state["weights"])
        if missing:
            raise ValueError(f"EMA state does not match the net; differing keys: {sorted(missing)[:5]}")
        for key, value in state["weights"].items():
            self.weights[key].copy_(value)
        self.num_updates = int(state["num_updates"])


# ----------------------------------------------------------------------------------------------
# Training state and checkpoints


@dataclass
class TrainState:
    """Everything needed to continue a :func:`train_diffae` run exactly.

    All tensors are CPU copies that nothing else references, so a state can be kept, pickled,
    saved with :func:`save_train_checkpoint` and resumed more than once.

    Attributes
    ----------
    step : int
        Completed optimisation steps.
    loss_history : list of float
        The loss of every completed step.
    net_state : dict or None
        The raw (not averaged) weights the optimizer works on.
    optimizer_state : dict or None
        ``torch.optim.Adam.state_dict()``.
    ema_state : dict or None
        :meth:`EMA.state_dict`; its ``'weights'`` are the weights to use for inference
        (see :attr:`ema_weights`).
    generator_state : torch.Tensor or None
        State of the batch/timestep/noise generator after the last completed step.
    scaler_state : dict or None
        Gradient-scaler state when training with float16 autocast on CUDA.
    """

    step: int = 0
    loss_history: list = field(default_factory=list)
    net_state: dict | None = None
    optimizer_state: dict | None = None
    ema_state: dict | None = None
    generator_state: torch.Tensor | None = None
    scaler_state: dict | None = None

    @property
    def ema_weights(self):
        """The EMA weights as a ``state_dict`` for ``net.load_state_dict``, or None."""
        return None if self.ema_state is None else self.ema_state["weights"]

    def to_dict(self):
        """Plain nested dict of the fields (tensors, numbers, lists, dicts)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown TrainState fields: {sorted(unknown)}")
        return cls(**data)


def save_train_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    A crash while writing leaves the previous checkpoint intact. The file holds plain tensors and
    containers only, so it loads with ``torch.load(path, weights_only=True)``.

    Parameters
    ----------
    state : TrainState
    path : str or os.PathLike
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}.")
    path = os.fspath(path)
    payload = {"format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, **state.to_dict()}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        raise


def load_train_checkpoint(path):
    """Read a checkpoint written by :func:`save_train_checkpoint` (safely, ``weights_only``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    TrainState
        Pass it as ``state`` to :func:`train_diffae` with a net of the same architecture.
    """
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, LookupError, EOFError) as exc:
        # weights_only refuses pickled code: the file is not a plain training checkpoint.
        raise ValueError(f"checkpoint_path: '{path}' is not a readable skcfx training checkpoint ({exc}).") from exc
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not an skcfx training checkpoint.")
    if payload.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has training-checkpoint version {payload.get('version')!r}; "
            f"this skcfx reads version {_CHECKPOINT_VERSION}."
        )
    data = {key: value for key, value in payload.items() if key not in ("format", "version")}
    return TrainState.from_dict(data)


# ----------------------------------------------------------------------------------------------
# The training loop


def _check_images(images):
    """Validate the (N, C, H, W) training tensor in [-1, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor in [-1, 1], got {images.dtype}.")
    if not torch.isfinite(images).all():
        raise ValueError("images contains NaN or infinite values.")
    # A little slack for the rounding of 2 * x - 1.
    low, high = images.min().item(), images.max().item()
    if low < -1.0 - 1e-5 or high > 1.0 + 1e-5:
        raise ValueError(f"images must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}].")


def _check_options(net, *, learning_rate, ema_decay, grad_clip, latent_dropout, checkpoint_path,
                   checkpoint_every):
    """Validate the scalar options of :func:`train_diffae` (types and ranges)."""
    if not isinstance(net, nn.Module) or not callable(getattr(net, "encode", None)):
        raise TypeError("net must be an nn.Module with an encode(x_0) method.")
    if not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive float, got {learning_rate!r}.")
    if not isinstance(ema_decay, numbers.Real) or not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be a float in [0, 1), got {ema_decay!r}.")
    if grad_clip is not None and (not isinstance(grad_clip, numbers.Real) or not grad_clip > 0):
        raise ValueError(f"grad_clip must be a positive float or None, got {grad_clip!r}.")
    if not isinstance(latent_dropout, numbers.Real) or not 0.0 <= latent_dropout < 1.0:
        raise ValueError(f"latent_dropout must be a float in [0, 1), got {latent_dropout!r}.")
    if latent_dropout > 0 and not isinstance(getattr(net, "null_latent", None), torch.Tensor):
        raise ValueError(
            "latent_dropout > 0 needs a net with a learnable `null_latent` to stand in for the "
            "dropped latents; build the net with a null latent or use latent_dropout=0."
        )
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint_path is None:
            raise ValueError("checkpoint_every was given without checkpoint_path.")


def _diffusion_loss(net, x_0, t, eps, drop_mask, coefs, autocast_dtype):
    """DDPM's L_simple (Ho et al., 2020, eq. 14) with the semantic latent: mean (eps - eps_hat)^2."""
    sqrt_ab, sqrt_one_minus_ab = coefs
    x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x_0 + sqrt_one_minus_ab[t].view(-1, 1, 1, 1) * eps
    autocast = contextlib.nullcontext()
    if autocast_dtype is not None:
        autocast = torch.autocast(x_0.device.type, dtype=autocast_dtype)
    with autocast:
        z_sem = net.encode(x_0)
        if drop_mask is not None:
            null = net.null_latent.reshape(1, -1).to(z_sem.dtype)
            z_sem = torch.where(drop_mask.view(-1, 1), null, z_sem)
        eps_hat = net(x_t, t, cond=z_sem)
    return F.mse_loss(eps_hat.float(), eps)


class _Run:
    """The mutable pieces of one :func:`train_diffae` call (private; the public API is the function)."""

    def __init__(self, net, images, *, batch_size, learning_rate, ema_decay, device, generator,
                 autocast_dtype, state):
        self.net, self.images, self.batch_size = net, images, batch_size
        self.device, self.generator, self.autocast_dtype = device, generator, autocast_dtype
        ab = alpha_bar(linear_betas(NUM_TIMESTEPS))  # float64; rounded once after the sqrt
        self.coefs = (ab.sqrt().float().to(device), (1 - ab).sqrt().float().to(device))
        self.optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
        self.scaler = _make_grad_scaler() if autocast_dtype == torch.float16 else None
        self.step, self.loss_history = 0, []
        if state is not None:
            self._restore(state, learning_rate)
        # Built after the restore so that a fresh EMA starts from the restored weights.
        self.ema = EMA(net, ema_decay)
        if state is not None and state.ema_state is not None:
            self.ema.load_state_dict(state.ema_state)
        self.generator_state = generator.get_state()

    def _restore(self, state, learning_rate):
        if state.net_state is not None:
            self.net.load_state_dict(state.net_state)
        if state.optimizer_state is not None:
            self.optimizer.load_state_dict(state.optimizer_state)
            for group in self.optimizer.param_groups:  # the caller's learning rate wins
                group["lr"] = learning_rate
        if state.generator_state is not None:
            self.generator.set_state(state.generator_state)
        if self.scaler is not None and state.scaler_state:
            self.scaler.load_state_dict(state.scaler_state)
        self.step, self.loss_history = int(state.step), list(state.loss_history)

    def snapshot(self):
        """A :class:`TrainState` of the last completed step (CPU copies)."""
        return TrainState(
            step=self.step,
            loss_history=list(self.loss_history),
            net_state=_cpu_clone(self.net.state_dict()),
            optimizer_state=_cpu_clone(self.optimizer.state_dict()),
            ema_state=self.ema.state_dict(),
            generator_state=self.generator_state.clone(),
            scaler_state=None if self.scaler is None else _cpu_clone(self.scaler.state_dict()),
        )

    def _draw_batch(self, latent_dropout):
        """Batch, timesteps, noise and latent-dropout mask, all from the generator (on CPU)."""
        g = self.generator
        _seed_global_rng(int(torch.randint(2**62, (), generator=g)), self.device)
        index = torch.randint(self.images.shape[0], (self.batch_size,), generator=g)
        x_0 = self.images[index].to(self.device, torch.float32)
        t = torch.randint(NUM_TIMESTEPS, (self.batch_size,), generator=g)
        eps = torch.randn(x_0.shape, generator=g)
        drop = None
        if latent_dropout > 0:
            drop = (torch.rand(self.batch_size, generator=g) < latent_dropout).to(self.device)
        return x_0, t.to(self.device), eps.to(self.device), drop

    def _backward(self, loss, grad_clip):
        """Backpropagate, clip, and return the global gradient norm (before clipping)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        max_norm = math.inf if grad_clip is None else grad_clip
        return torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm)

    def _commit(self, loss_value):
        """Apply the update, the EMA and the bookkeeping as one unit that Ctrl-C cannot split."""
        with _defer_sigint():
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.ema.update(self.net)
            self.step += 1
            self.loss_history.append(loss_value)
            self.generator_state = self.generator.get_state()

    def train_step(self, *, grad_clip, latent_dropout):
        """One optimisation step; returns (loss, gradient norm), raises if either is not finite."""
        x_0, t, eps, drop = self._draw_batch(latent_dropout)
        loss = _diffusion_loss(self.net, x_0, t, eps, drop, self.coefs, self.autocast_dtype)
        grad_norm = self._backward(loss, grad_clip)
        # One device sync per step for both checks and the logged loss.
        loss_value, norm_value = torch.stack([loss.detach(), grad_norm.float()]).tolist()
        # With a float16 scaler, inf gradients are expected now and then: it skips those steps.
        bad_norm = self.scaler is None and not math.isfinite(norm_value)
        if not math.isfinite(loss_value) or bad_norm:
            self.optimizer.zero_grad(set_to_none=True)
            what = f"loss {loss_value}" if not math.isfinite(loss_value) else f"gradient norm {norm_value}"
            raise TrainingDivergedError(
                f"training diverged at step {self.step + 1}: {what}. The update was not applied; "
                f"the net keeps the weights of step {self.step}. Try a lower learning_rate "
                "or a smaller grad_clip.",
                step=self.step + 1,
                state=self.snapshot(),
            )
        self._commit(loss_value)
        return loss_value, norm_value


def train_diffae(
    net,
    images,
    *,
    max_steps,
    batch_size,
    learning_rate=1e-4,
    ema_decay=0.999,
    grad_clip=1.0,
    latent_dropout=0.0,
    device=None,
    generator=None,
    amp="auto",
    state=None,
    checkpoint_path=None,
    checkpoint_every=None,
    callback=None,
    verbose=False,
):
    """Train a diffusion autoencoder (denoiser and semantic encoder together).

    Each step draws ``batch_size`` images (with replacement), timesteps ``t ~ U{0, ..., T-1}``
    and noise ``eps ~ N(0, I)``, forms ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` on the
    linear schedule (betas 1e-4..0.02, T = 1000) and minimises ``mean (eps - net(x_t, t, z))^2``
    with ``z = net.encode(x_0)``, so the encoder learns from the same loss (Preechakul et al.,
    2022, Sec. 3). Adam, gradient clipping by global norm, an :class:`EMA` of all weights.

    Parameters
    ----------
    net : torch.nn.Module
        Follows ``net(x_t, t, cond=z)`` / ``net.encode(x_0)`` (see the module docstring). It is
        moved to ``device`` and trained in place; on return it holds the raw (not averaged)
        weights. Use ``net.load_state_dict(state.ema_weights)`` for inference.
    images : torch.Tensor
        ``(N, C, H, W)`` float images in [-1, 1], normally on the CPU; batches are moved to
        ``device`` one at a time.
    max_steps : int
        Total number of steps counted from the start of training, resumed steps included:
        resuming an interrupted run with the same ``max_steps`` finishes it.
    batch_size : int
    learning_rate : float, default=1e-4
        Adam's learning rate; also replaces the one stored in a resumed ``state``.
    ema_decay : float, default=0.999
        Largest EMA decay; :class:`EMA` warms up from 0.1 to it (useful after a few hundred steps).
    grad_clip : float or None, default=1.0
        Maximum global gradient norm; None disables clipping.
    latent_dropout : float, default=0.0
        Probability of replacing a sample's latent by ``net.null_latent``, which trains the same
        net as an unconditional denoiser too (``cond=None``). Needs a net with ``null_latent``.
    device : str, torch.device or None, default=None
        Where to train; None keeps the device of the net's parameters.
    generator : torch.Generator or None, default=None
        CPU generator for every random draw; it is advanced in place. None makes a freshly seeded
        one (not reproducible). With ``state``, its state is replaced by the stored one.
    amp : {'auto', 'bf16', 'fp16', 'off'}, default='auto'
        Mixed precision on CUDA only: 'auto' picks bfloat16 where supported, else float16 with a
        gradient scaler; on other devices 'auto' means float32 and 'bf16'/'fp16' raise.
    state : TrainState or None, default=None
        Resume from this state (from a previous return value, an exception's ``.state`` or
        :func:`load_train_checkpoint`); the net must have the same architecture. Not modified.
    checkpoint_path : str or os.PathLike or None, default=None
        If given, :func:`save_train_checkpoint` writes here every ``checkpoint_every`` steps, at
        the end, and when training is interrupted.
    checkpoint_every : int or None, default=None
    callback : callable or None, default=None
        Called after every step as ``callback({'step', 'loss', 'grad_norm', 'net', 'ema'})``.
    verbose : bool, default=False
        Show a tqdm progress bar with the mean loss of the last 50 steps.

    Returns
    -------
    TrainState
        The state after ``max_steps`` steps.

    Raises
    ------
    TrainingDivergedError
        (a ``FloatingPointError``) if the loss or gradient becomes NaN/inf; the bad update is not
        applied and ``.state`` holds the last good state.
    TrainingInterrupted
        (a ``KeyboardInterrupt``) on Ctrl-C or a ``KeyboardInterrupt`` from ``callback``; the net
        holds the weights of the last completed step and ``.state`` resumes from there.

    Notes
    -----
    Resuming is exact: on the CPU, ``train 10 steps; resume to 20`` gives bit-identical weights to
    ``train 20 steps`` with the same generator seed. Dropout in the net draws from the global RNG,
    which is re-seeded from ``generator`` at every step and restored for the caller afterwards.
    """
    max_steps = check_positive_int(max_steps, "max_steps", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_options(net, learning_rate=learning_rate, ema_decay=ema_decay, grad_clip=grad_clip,
                   latent_dropout=latent_dropout, checkpoint_path=checkpoint_path,
                   checkpoint_every=checkpoint_every)
    _check_images(images)
    if state is not None and not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState or None, got {type(state).__name__}.")
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError("generator must be a CPU torch.Generator or None.")
    if device is None:
        device = next(net.parameters()).device
    device = resolve_device(device)
    autocast_dtype = _resolve_amp(amp, device)

    net.to(device)
    run = _Run(net, images, batch_size=batch_size, learning_rate=learning_rate, ema_decay=ema_decay,
               device=device, generator=generator, autocast_dtype=autocast_dtype, state=state)
    was_training = net.training
    net.train()
    try:
        with _isolated_global_rng(device):
            _loop(run, max_steps, grad_clip=grad_clip, latent_dropout=latent_dropout,
                  checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
                  callback=callback, verbose=verbose)
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        interrupted = run.snapshot()
        if checkpoint_path is not None:
            save_train_checkpoint(interrupted, checkpoint_path)
        raise TrainingInterrupted(interrupted) from exc
    finally:
        net.train(was_training)
    final = run.snapshot()
    if checkpoint_path is not None:
        save_train_checkpoint(final, checkpoint_path)
    return final


def _loop(run, max_steps, *, grad_clip, latent_dropout, checkpoint_path, checkpoint_every, callback, verbose):
    """Run steps until ``max_steps``: progress bar, periodic checkpoints and the callback."""
    with tqdm(total=max_steps, initial=min(run.step, max_steps), disable=not verbose,
              desc="DiffAE training", unit="step") as bar:
        while run.step < max_steps:
            loss_value, grad_norm = run.train_step(grad_clip=grad_clip, latent_dropout=latent_dropout)
            # The last step is saved by the caller once training has finished.
            if checkpoint_every is not None and run.step % checkpoint_every == 0 and run.step < max_steps:
                save_train_checkpoint(run.snapshot(), checkpoint_path)
            if callback is not None:
                callback({"step": run.step, "loss": loss_value, "grad_norm": grad_norm,
                          "net": run.net, "ema": run.ema})
            bar.update(1)
            if verbose and (run.step % 10 == 0 or run.step == max_steps):
                recent = run.loss_history[-50:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
