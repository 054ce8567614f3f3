"""Training loop for diffusion autoencoders (Preechakul et al., CVPR 2022).

One function, :func:`train_diffae`, trains a conditional denoiser together with its semantic
encoder by the simple eps-prediction loss, in one process or in several under ``torchrun``
(DistributedDataParallel). Everything needed to continue later lives in a :class:`TrainState`,
so training can be interrupted, checkpointed and resumed bit-exactly. The pieces live next door:
:mod:`.data` (batches), :mod:`.ema` (weight averaging), :mod:`.precision` (autocast),
:mod:`.distributed` (process groups) and :mod:`.train_state` (state, checkpoints, errors).

The net must follow the skcfx denoiser contract::

    z = net.encode(x_0)              # (n, latent_dim)
    eps_hat = net(x_t, t, cond=z)    # same shape as x_t; t are ORIGINAL timesteps in [0, T)
    net.null_latent                  # optional nn.Parameter, used by latent dropout
    net.config.T                     # optional; the chain length (default 1000)

Randomness comes only from the ``generator`` argument. It draws the seed of the data order once,
and two seeds per step: one for this step's timesteps, noise, latent-dropout mask and flips
(drawn on the training device), one for the global RNG that ``nn.Dropout`` inside the net uses.
Every process of a DDP run holds the same generator state and adds its rank to the per-step
seeds. The caller's global RNG state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from skcfx._validation import check_positive_int, resolve_device
from skcfx.diffusion import distributed
from skcfx.diffusion.data import TensorImages, make_train_loader, to_model_input
from skcfx.diffusion.ema import EMA, cpu_clone
from skcfx.diffusion.precision import autocast, make_grad_scaler, resolve_precision
from skcfx.diffusion.schedule import alpha_bar, linear_betas
from skcfx.diffusion.train_state import (
    TrainingDataError,
    TrainingDivergedError,
    TrainingInterrupted,
    TrainState,
    load_train_checkpoint,
    save_train_checkpoint,
)

__all__ = [
    "EMA",
    "TrainState",
    "TrainingDataError",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "train_diffae",
    "save_train_checkpoint",
    "load_train_checkpoint",
]

NUM_TIMESTEPS = 1000  # chain length for nets without a config (the published T)
_SEED_BOUND = 2**62


# ----------------------------------------------------------------------------------------------
# Small helpers


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


def _chain_length(net):
    """``net.config.T`` when the net has a config (DiffAENet), else the published 1000."""
    return int(getattr(getattr(net, "config", None), "T", NUM_TIMESTEPS))


def _image_shape(net):
    """(C, H, W) the net expects, when its config says so."""
    config = getattr(net, "config", None)
    if config is None or not hasattr(config, "image_size"):
        return None
    return (config.in_channels, config.image_size, config.image_size)


class DiffusionObjective(nn.Module):
    """``eps_hat`` for a batch in one forward (what DDP wraps): encode, drop latents, denoise.

    ``drop_mask`` (bool, ``(n,)``) replaces those samples' latents by ``net.null_latent``; with a
    mask, the null latent is part of the graph even when no sample is dropped, which DDP needs.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_0, x_t, t, drop_mask=None):
        z_sem = self.net.encode(x_0)
        if drop_mask is not None:
            null = self.net.null_latent.reshape(1, -1).to(z_sem.dtype)
            z_sem = torch.where(drop_mask.view(-1, 1), null, z_sem)
        return self.net(x_t, t, cond=z_sem)


# ----------------------------------------------------------------------------------------------
# Validation


def _check_data(images):
    """Validate the training data: an (N, C, H, W) tensor, or a non-empty map-style Dataset."""
    if isinstance(images, torch.utils.data.Dataset) and not isinstance(images, torch.Tensor):
        if not hasattr(images, "__len__") or len(images) == 0:
            raise ValueError("images: a training Dataset must be map-style (with __len__) and non-empty.")
        return images
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W) or a torch Dataset, got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return TensorImages(images)
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor in [-1, 1] (or uint8), got {images.dtype}.")
    if not torch.isfinite(images).all():
        raise ValueError("images contains NaN or infinite values.")
    # A little slack for the rounding of 2 * x - 1.
    low, high = images.min().item(), images.max().item()
    if low < -1.0 - 1e-5 or high > 1.0 + 1e-5:
        raise ValueError(f"images must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}].")
    return TensorImages(images)


def _check_options(net, *, learning_rate, ema_decay, grad_clip, latent_dropout, checkpoint_path,
                   checkpoint_every, num_workers):
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
    check_positive_int(num_workers, "num_workers", minimum=0)
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint_path is None:
            raise ValueError("checkpoint_every was given without checkpoint_path.")


def _local_batch_size(batch_size, world):
    if batch_size % world.size:
        raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the "
                         f"{world.size} training processes.")
    return batch_size // world.size


# ----------------------------------------------------------------------------------------------
# One run


class _Run:
    """The mutable pieces of one :func:`train_diffae` call (private; the public API is the function)."""

    def __init__(self, net, dataset, *, batch_size, learning_rate, ema_decay, device, generator,
                 autocast_dtype, state, world, options):
        self.net, self.dataset, self.world = net, dataset, world
        self.device, self.generator, self.autocast_dtype = device, generator, autocast_dtype
        self.options = options
        self.local_batch = _local_batch_size(batch_size, world)
        self.T = _chain_length(net)
        ab = alpha_bar(linear_betas(self.T))  # float64; rounded once after the sqrt
        self.coefs = (ab.sqrt().float().to(device), (1 - ab).sqrt().float().to(device))
        self.optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
        self.scaler = make_grad_scaler(device) if autocast_dtype == torch.float16 else None
        self.step, self.loss_history, self.samples_seen, self.data_seed = 0, [], 0, None
        if state is not None:
            self._restore(state, learning_rate)
        if self.data_seed is None:
            self.data_seed = int(torch.randint(_SEED_BOUND, (), generator=generator))
        self.model = DiffusionObjective(net)
        if world.distributed:  # broadcasts rank 0's weights: every process starts identical
            self.model = DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
        if options["compile"]:
            self.model = torch.compile(self.model)
        # Built after the restore and the broadcast so that a fresh EMA starts from those weights.
        self.ema = EMA(net, ema_decay)
        if state is not None and state.ema_state is not None:
            self.ema.load_state_dict(state.ema_state)
        self.generator_state = generator.get_state()
        self.draws = torch.Generator(device=device)
        self.batches = None

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
        self.data_seed, self.samples_seen = state.data_seed, int(state.samples_seen or 0)

    def open_batches(self, max_steps):
        """Start the DataLoader for the remaining steps, continuing the data order."""
        loader = make_train_loader(
            self.dataset, batch_size=self.local_batch, n_batches=max(0, max_steps - self.step),
            seed=self.data_seed, start=self.samples_seen, rank=self.world.rank,
            world_size=self.world.size, num_workers=self.options["num_workers"],
            pin_memory=self.device.type == "cuda")
        self.batches = iter(loader)

    def close_batches(self):
        self.batches = None  # the iterator's finaliser stops the workers

    def snapshot(self):
        """A :class:`TrainState` of the last completed step (CPU copies)."""
        return TrainState(
            step=self.step,
            loss_history=list(self.loss_history),
            net_state=cpu_clone(self.net.state_dict()),
            optimizer_state=cpu_clone(self.optimizer.state_dict()),
            ema_state=self.ema.state_dict(),
            generator_state=self.generator_state.clone(),
            scaler_state=None if self.scaler is None else cpu_clone(self.scaler.state_dict()),
            data_seed=self.data_seed,
            samples_seen=self.samples_seen,
        )

    def _next_batch(self):
        """The next ``x_0`` on the device, float32 in [-1, 1]; a bad batch stops the run cleanly."""
        memory_format = torch.channels_last if self.options["channels_last"] else torch.contiguous_format
        try:
            return to_model_input(next(self.batches), self.device, image_shape=_image_shape(self.net),
                                  memory_format=memory_format)
        except ValueError as exc:
            raise TrainingDataError(f"training stopped at step {self.step + 1}: {exc}",
                                    state=self.snapshot()) from exc

    def _draw(self, x_0, latent_dropout):
        """Timesteps, noise, latent-dropout mask and flips for this step, from the generator."""
        seeds = torch.randint(_SEED_BOUND, (2,), generator=self.generator).tolist()
        _seed_global_rng(seeds[1] + self.world.rank, self.device)  # nn.Dropout inside the net
        g = self.draws.manual_seed(seeds[0] + self.world.rank)
        n, device = x_0.shape[0], self.device
        t = torch.randint(self.T, (n,), generator=g, device=device)
        eps = torch.randn(x_0.shape, generator=g, device=device)
        drop = None
        if latent_dropout > 0:
            drop = torch.rand(n, generator=g, device=device) < latent_dropout
        elif self.world.distributed and getattr(self.net, "null_latent", None) is not None:
            drop = torch.zeros(n, dtype=torch.bool, device=device)  # keep the null latent in the graph
        if self.options["random_flip"]:
            flip = torch.rand(n, generator=g, device=device) < 0.5
            x_0 = torch.where(flip.view(-1, 1, 1, 1), x_0.flip(3), x_0)
        if self.options["channels_last"]:
            eps = eps.contiguous(memory_format=torch.channels_last)
        return x_0, t, eps, drop

    def _loss(self, x_0, t, eps, drop):
        """DDPM's L_simple (Ho et al., 2020, eq. 14) with the semantic latent: mean (eps - eps_hat)^2."""
        sqrt_ab, sqrt_one_minus_ab = self.coefs
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x_0 + sqrt_one_minus_ab[t].view(-1, 1, 1, 1) * eps
        with autocast(self.device, self.autocast_dtype):
            eps_hat = self.model(x_0, x_t, t, drop)
        return F.mse_loss(eps_hat.float(), eps)

    def _backward(self, loss, grad_clip):
        """Backpropagate (gradients averaged over processes), clip, return the norm before clipping."""
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
            self.samples_seen += self.local_batch
            self.loss_history.append(loss_value)
            self.generator_state = self.generator.get_state()

    def train_step(self, *, grad_clip, latent_dropout):
        """One optimisation step; returns (loss, gradient norm), raises if either is not finite."""
        x_0, t, eps, drop = self._draw(self._next_batch(), latent_dropout)
        loss = self._loss(x_0, t, eps, drop)
        grad_norm = self._backward(loss, grad_clip)
        # One device sync per step for both checks and the logged loss; the loss is averaged
        # over processes (the gradients already are), so every process takes the same decision.
        stats = distributed.all_reduce_mean(torch.stack([loss.detach(), grad_norm.float()]))
        loss_value, norm_value = stats.tolist()
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

    def synchronise(self):
        """Make every process hold rank 0's raw and averaged weights (identical by construction)."""
        distributed.broadcast_module(self.net)
        distributed.broadcast_module(self.ema.module)


# ----------------------------------------------------------------------------------------------
# The public loop


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
    precision="auto",
    state=None,
    checkpoint_path=None,
    checkpoint_every=None,
    callback=None,
    verbose=False,
    num_workers=0,
    random_flip=False,
    compile=False,
    channels_last=True,
):
    """Train a diffusion autoencoder (denoiser and semantic encoder together).

    Each step takes the next ``batch_size`` images of an epoch-wise shuffled stream, timesteps
    ``t ~ U{0, ..., T-1}`` and noise ``eps ~ N(0, I)``, forms
    ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` on the linear schedule (betas 1e-4..0.02 over
    the net's ``config.T`` steps) and minimises ``mean (eps - net(x_t, t, z))^2`` with
    ``z = net.encode(x_0)``, so the encoder learns from the same loss (Preechakul et al., 2022,
    Sec. 3). Adam, gradient clipping by global norm, an :class:`EMA` of all weights.

    Started under ``torchrun`` (a default process group exists, see
    :func:`skcfx.diffusion.distributed.init_from_env`), the net is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`: each process reads its share of every
    epoch (:class:`~torch.utils.data.DistributedSampler`) and ``batch_size / world_size`` images
    per step, gradients and the logged loss are averaged, and only rank 0 writes checkpoints and
    shows progress. All processes end with identical raw and EMA weights.

    Parameters
    ----------
    net : torch.nn.Module
        Follows ``net(x_t, t, cond=z)`` / ``net.encode(x_0)`` (see the module docstring). It is
        moved to ``device`` and trained in place; on return it holds the raw (not averaged)
        weights. Use ``net.load_state_dict(state.ema_weights)`` for inference.
    images : torch.Tensor or torch.utils.data.Dataset
        ``(N, C, H, W)`` images, float in [-1, 1] or uint8, normally on the CPU; or a map-style
        dataset of ``(C, H, W)`` items (see :mod:`skcfx.diffusion.data`), read in batches.
    max_steps : int
        Total number of steps counted from the start of training, resumed steps included:
        resuming an interrupted run with the same ``max_steps`` finishes it.
    batch_size : int
        Images per step over all processes (divisible by their number).
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
        one (not reproducible). With ``state``, its state is replaced by the stored one. Under
        DDP, seed it identically on every process.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}, default='auto'
        Autocast of the network calls (:mod:`skcfx.diffusion.precision`): 'auto' is bfloat16 on
        CUDA where supported, else float32; 'fp16' (CUDA only) adds a gradient scaler.
    state : TrainState or None, default=None
        Resume from this state (from a previous return value, an exception's ``.state`` or
        :func:`load_train_checkpoint`); the net must have the same architecture. Not modified.
    checkpoint_path : str or os.PathLike or None, default=None
        If given, :func:`save_train_checkpoint` writes here (rank 0 only) every
        ``checkpoint_every`` steps, at the end, and when training stops early.
    checkpoint_every : int or None, default=None
    callback : callable or None, default=None
        Called after every step as ``callback({'step', 'loss', 'grad_norm', 'net', 'ema'})``.
    verbose : bool, default=False
        Show a tqdm progress bar (steps/s, ETA) with images/s and the mean loss of the last 50 steps.
    num_workers : int, default=0
        DataLoader worker processes decoding images (0: in this process).
    random_flip : bool, default=False
        Flip each image horizontally with probability 1/2 (the published DiffAE recipe).
    compile : bool, default=False
        Run the training step's network through :func:`torch.compile`.
    channels_last : bool, default=True
        On CUDA, keep the net and batches in ``torch.channels_last`` memory format (faster
        convolutions on tensor cores); ignored on other devices.

    Returns
    -------
    TrainState
        The state after ``max_steps`` steps.

    Raises
    ------
    TrainingDivergedError
        (a ``FloatingPointError``) if the loss or gradient becomes NaN/inf; the bad update is not
        applied and ``.state`` holds the last good state.
    TrainingDataError
        (a ``ValueError``) if a batch cannot be formed; the message names the image and
        ``.state`` resumes from the last completed step.
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
                   checkpoint_every=checkpoint_every, num_workers=num_workers)
    dataset = _check_data(images)
    if state is not None and not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState or None, got {type(state).__name__}.")
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError("generator must be a CPU torch.Generator or None.")
    device = resolve_device(next(net.parameters()).device if device is None else device)
    autocast_dtype = resolve_precision(precision, device)
    world = distributed.world()
    options = {"num_workers": int(num_workers), "random_flip": bool(random_flip),
               "compile": bool(compile), "channels_last": bool(channels_last) and device.type == "cuda"}

    net.to(device)
    if options["channels_last"]:
        net.to(memory_format=torch.channels_last)
    run = _Run(net, dataset, batch_size=batch_size, learning_rate=learning_rate, ema_decay=ema_decay,
               device=device, generator=generator, autocast_dtype=autocast_dtype, state=state,
               world=world, options=options)
    save = checkpoint_path is not None and world.is_main
    was_training = net.training
    net.train()
    try:
        with _isolated_global_rng(device):
            _loop(run, max_steps, grad_clip=grad_clip, latent_dropout=latent_dropout,
                  checkpoint_path=checkpoint_path if save else None, checkpoint_every=checkpoint_every,
                  callback=callback, verbose=verbose and world.is_main)
    except (TrainingDataError, TrainingDivergedError) as exc:
        if save and exc.state.step > 0:
            save_train_checkpoint(exc.state, checkpoint_path)
        raise
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        interrupted = run.snapshot()
        if save:
            save_train_checkpoint(interrupted, checkpoint_path)
        raise TrainingInterrupted(interrupted) from exc
    finally:
        run.close_batches()
        net.train(was_training)
    run.synchronise()
    final = run.snapshot()
    if save:
        save_train_checkpoint(final, checkpoint_path)
    return final


def _progress_postfix(bar, run):
    recent = run.loss_history[-50:]
    postfix = {"loss": f"{sum(recent) / len(recent):.4f}"}
    rate = bar.format_dict.get("rate")
    if rate:
        postfix["img/s"] = f"{rate * run.local_batch * run.world.size:.1f}"
    return postfix


def _loop(run, max_steps, *, grad_clip, latent_dropout, checkpoint_path, checkpoint_every, callback, verbose):
    """Run steps until ``max_steps``: progress bar, periodic checkpoints and the callback."""
    if run.step >= max_steps:
        return
    run.open_batches(max_steps)
    with tqdm(total=max_steps, initial=run.step, disable=not verbose, desc="DiffAE training",
              unit="step") as bar:
        while run.step < max_steps:
            loss_value, grad_norm = run.train_step(grad_clip=grad_clip, latent_dropout=latent_dropout)
            # The last step is saved by the caller once training has finished.
            if (checkpoint_path is not None and checkpoint_every is not None
                    and run.step % checkpoint_every == 0 and run.step < max_steps):
                save_train_checkpoint(run.snapshot(), checkpoint_path)
            if callback is not None:
                callback({"step": run.step, "loss": loss_value, "grad_norm": grad_norm,
                          "net": run.net, "ema": run.ema})
            bar.update(1)
            if verbose and (run.step % 10 == 0 or run.step == max_steps):
                bar.set_postfix(_progress_postfix(bar, run))
