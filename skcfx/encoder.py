"""DiffAEEncoder: a diffusion autoencoder as a scikit-learn transformer."""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._encoder_io import EncoderPersistence
from ._image_sources import as_image_source, iter_source_batches, loader_workers
from ._images import iter_batches, to_numpy, to_tensor
from ._validation import check_latents, make_generator, resolve_device, seed_from_random_state, seeded_torch
from .diffusion import checkpoints, distributed, training
from .diffusion.model import DiffAE
from .diffusion.nets import DiffAEConfig, DiffAENet
from .diffusion.precision import PRECISIONS, resolve_precision

__all__ = ["DiffAEEncoder"]


def _is_fitted(estimator):
    return hasattr(estimator, "model_")


def _nchw_to_nhwc(x):
    return np.ascontiguousarray(x.detach().float().cpu().numpy().transpose(0, 2, 3, 1))


def _check_noise(noise, shape):
    """Validate a stochastic subcode given by the user: finite float array of ``shape``."""
    if isinstance(noise, torch.Tensor):
        raise TypeError("noise must be a numpy array (from encode_stochastic), got a torch.Tensor.")
    arr = np.asarray(noise)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"noise must be a float array, got dtype {arr.dtype}.")
    if arr.shape != tuple(shape):
        raise ValueError(f"noise must have shape {tuple(shape)} (one map per latent), got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("noise contains NaN or infinite values.")
    return arr.astype(np.float32, copy=True)


class DiffAEEncoder(EncoderPersistence, TransformerMixin, BaseEstimator):
    """Diffusion autoencoder: a semantic encoder plus a conditional DDIM decoder.

    Implements Diffusion Autoencoders (Preechakul et al., CVPR 2022): an image ``x_0`` is encoded
    into a semantic latent ``z_sem`` (:meth:`transform`) and a stochastic subcode ``x_T`` obtained by
    deterministic DDIM inversion conditioned on ``z_sem`` (:meth:`encode_stochastic`); decoding
    ``(z_sem, x_T)`` with DDIM reconstructs the image almost exactly (:meth:`inverse_transform`).
    Editing ``z_sem`` and decoding with the original ``x_T`` changes semantics while keeping details,
    which is what counterfactual explanations need.

    Parameters
    ----------
    image_size : int, default=None
        Side of the (square) images. ``None`` takes it from the data in :meth:`fit`; otherwise the
        data must match it.
    latent_dim : int, default=None
        Width of the semantic latent. ``None`` uses the architecture's default.
    architecture : str or dict, default='auto'
        Network configuration: ``'auto'`` picks a small CPU-friendly network for the image size,
        a registered name (e.g. ``'tiny16'``, ``'tiny32'``, ``'ffhq128'``; see
        :func:`skcfx.diffusion.checkpoints.list_configs`) or a dict of
        :class:`~skcfx.diffusion.nets.DiffAEConfig` fields.
    max_steps : int, default=20000
        Training iterations (optimizer steps). Reconstruction is good early (16 px digits: after
        2500 steps), but the semantic latent takes control of what a decode shows only later,
        and latent edits such as DifCluE's need that. Semantic control (the share of decodes
        ``z`` of one image with the inverted noise of another that show ``z``'s class,
        ``benchmarks/diffae_digits.py``): digits 0.41 / 0.77 / 0.84 after 2500 / 5000 / 10000
        steps; shapes' colour 0.45 / 0.85 / 0.99 after 4000 / 6000 / 8000 steps, where DifCluE's
        flip rate went 0.74 / 0.93 / 0.96 (``benchmarks/shapes_difclue_variants.py``); real
        photos (Fashion-MNIST, 28 px, ``benchmarks/fashion_protocol.py``) 0.32 / 0.52 / 0.61 /
        0.63 after 5000 / 10000 / 15000 / 20000 steps, where DifCluE's percent conversion on the
        protocol's harder pair went 0.83 at 10000 steps to 0.98 at 20000. 20000 steps of the small
        default networks take about 3 h on one CPU core at 28 px (60-80 min at 16 px, where
        10000 suffice: the shipped digits model).
    batch_size : int, default=64
        Training batch size.
    learning_rate : float, default=1e-3
        Adam learning rate. The published recipe uses 1e-4 over hundreds of thousands of steps;
        short CPU runs need a larger rate.
    ema_decay : float, default=0.999
        Decay of the exponential moving average of the weights used for inference.
    latent_dropout : float, default=0.1
        Probability of replacing ``z_sem`` by a learned null latent during training, so that the
        same network is also an unconditional denoiser (needed by DiME / FastDiME). ``0`` trains a
        purely conditional network, as published.
    encode_steps : int, default=20
        DDIM inversion steps of :meth:`encode_stochastic`.
    decode_steps : int, default=20
        DDIM decoding steps of :meth:`inverse_transform`.
    inference_batch_size : int, default=256
        Images per batch in transform / encode / decode, which bounds memory.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
        Where the network runs; resolved at fit time.
    random_state : int, RandomState instance or None, default=None
        Seeds training (initialisation, batches, timesteps, noise) and the noise drawn by
        :meth:`inverse_transform` when none is given. An int makes everything reproducible on CPU.
    warm_start : bool, default=False
        When True and the estimator is already fitted (or was interrupted), :meth:`fit` continues
        training the existing network up to ``max_steps`` total steps instead of starting over.
    checkpoint_path : str or path-like, default=None
        If given, a training checkpoint is written there every ``checkpoint_every`` steps
        (atomically) and :meth:`fit` resumes from it when it exists.
    checkpoint_every : int, default=500
        Steps between checkpoints when ``checkpoint_path`` is set.
    verbose : bool or int, default=False
        Show progress bars (training: steps/s, images/s, ETA and the recent loss).
    precision : {'auto', 'fp32', 'bf16', 'fp16'}, default='auto'
        Numeric precision of the network in training and inference (autocast; sampler
        arithmetic stays float32). 'auto' is bfloat16 on CUDA GPUs that support it, float32
        elsewhere; 'fp16' trains with a gradient scaler.
    compile : bool, default=False
        Run the network through :func:`torch.compile` in training and inference (worth it for
        long GPU runs; the first calls are slow while it compiles).
    num_workers : int or 'auto', default='auto'
        DataLoader processes decoding training images. 'auto': none for arrays in memory (they
        are indexed directly), otherwise the free CPUs (at most 8) for files and torch Datasets.
    random_flip : bool, default=False
        Flip training images horizontally at random (the published recipe does, for faces).
    keep_train_state : bool, default=False
        Whether pickles of the fitted encoder carry the optimizer state and raw training weights
        (about 5x the weights), so that ``warm_start`` continues exactly after unpickling. In
        memory the training state is always kept; :meth:`save` never writes it.

    Input forms: every method taking images accepts, besides arrays and lists of PIL images or
    file paths, a folder path (all image files below it, sorted by path), a ``uint8`` array
    (kept ``uint8`` until a batch is formed; ``np.load(..., mmap_mode='r')`` memory maps stay
    on disk) and any map-style :class:`torch.utils.data.Dataset` yielding images (PIL, numpy
    ``(H, W, C)``, or ``(C, H, W)`` tensors in [0, 1] as torchvision gives; ``(image, label)``
    tuples are fine). Such inputs are read a batch at a time and validated per batch; a file that
    cannot be decoded is named in the error. Started with ``torchrun``, :meth:`fit` trains with
    DistributedDataParallel over the processes (``batch_size`` is the total); see the README.

    Attributes
    ----------
    model_ : skcfx.diffusion.DiffAE
        The trained diffusion autoencoder on tensors (EMA weights): what counterfactual methods
        use (encode / invert / decode / denoiser).
    net_ : DiffAENet
        Its network (``model_.net``), in eval mode.
    config_ : DiffAEConfig
        Its architecture.
    image_shape_ : tuple of int
        ``(H, W, C)`` of the training images.
    n_steps_ : int
        Optimizer steps done so far (less than ``max_steps`` after an interrupt).
    loss_history_ : ndarray of shape (n_steps_,)
        Training loss per step.
    fit_time_s_ : float
        Seconds spent in the last :meth:`fit`.
    device_ : torch.device
        The resolved device.

    Examples
    --------
    >>> from skcfx import DiffAEEncoder
    >>> from skcfx.datasets import load_digits_images
    >>> X, y = load_digits_images(image_size=16)
    >>> enc = DiffAEEncoder(max_steps=5, batch_size=8, random_state=0).fit(X[:32])
    >>> enc.transform(X[:2]).shape
    (2, 32)
    """

    _parameter_constraints = {
        "image_size": [Interval(numbers.Integral, 4, None, closed="left"), None],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "architecture": [str, dict],
        "max_steps": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "ema_decay": [Interval(numbers.Real, 0, 1, closed="left")],
        "latent_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "encode_steps": [Interval(numbers.Integral, 1, 1000, closed="both")],
        "decode_steps": [Interval(numbers.Integral, 1, 1000, closed="both")],
        "inference_batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "checkpoint_every": [Interval(numbers.Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
        "precision": [StrOptions(set(PRECISIONS))],
        "compile": ["boolean"],
        "num_workers": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "random_flip": ["boolean"],
        "keep_train_state": ["boolean"],
    }

    def __init__(
        self,
        image_size=None,
        latent_dim=None,
        *,
        architecture="auto",
        max_steps=20000,
        batch_size=64,
        learning_rate=1e-3,
        ema_decay=0.999,
        latent_dropout=0.1,
        encode_steps=20,
        decode_steps=20,
        inference_batch_size=256,
        device="auto",
        random_state=None,
        warm_start=False,
        checkpoint_path=None,
        checkpoint_every=500,
        verbose=False,
        precision="auto",
        compile=False,
        num_workers="auto",
        random_flip=False,
        keep_train_state=False,
    ):
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.architecture = architecture
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.ema_decay = ema_decay
        self.latent_dropout = latent_dropout
        self.encode_steps = encode_steps
        self.decode_steps = decode_steps
        self.inference_batch_size = inference_batch_size
        self.device = device
        self.random_state = random_state
        self.warm_start = warm_start
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.verbose = verbose
        self.precision = precision
        self.compile = compile
        self.num_workers = num_workers
        self.random_flip = random_flip
        self.keep_train_state = keep_train_state

    # ------------------------------------------------------------------ construction
    def _build_config(self, image_shape):
        """Architecture for images of ``image_shape`` (H, W, C) from ``architecture``."""
        h, _, c = image_shape
        overrides = {"latent_dim": self.latent_dim, "null_latent": self.latent_dropout > 0}
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if self.architecture == "auto":
            return checkpoints.default_config_for(h, c, **overrides)
        if isinstance(self.architecture, str):
            return checkpoints.get_config(self.architecture, image_size=h, in_channels=c, **overrides)
        arch = {k: v for k, v in self.architecture.items() if k not in ("image_size", "in_channels")}
        if set(arch) >= _ARCHITECTURE_FIELDS:  # a complete config (e.g. from from_pretrained): exactly it
            return DiffAEConfig(image_size=h, in_channels=c, **{**arch, **overrides})
        return checkpoints.default_config_for(h, c, **{**arch, **overrides})

    def initialize_module(self, image_shape, seed):
        """Build a freshly initialised network for ``image_shape`` (override to customise)."""
        config = self._build_config(image_shape)
        with seeded_torch(seed):
            return DiffAENet(config)

    def _loader_workers(self, source):
        return loader_workers(source, self.num_workers, distributed.world().size)

    # ------------------------------------------------------------------ fitting
    def _check_fit_source(self, X):
        """The training images as an :class:`~skcfx._image_sources.ImageSource` (nothing decoded yet)."""
        source = as_image_source(X, name="X")
        h, w, c = source.image_shape
        if h != w:
            raise ValueError(f"X images must be square, got {h}x{w}.")
        if self.image_size is not None and h != self.image_size:
            raise ValueError(
                f"X images are {h}x{w} but image_size={self.image_size}; resize them or change image_size."
            )
        if _is_fitted(self) and (self.warm_start or self._resume_state() is not None):
            if tuple(source.image_shape) != self.image_shape_:
                raise ValueError(
                    f"warm_start: X images are {source.image_shape} but the network was trained on {self.image_shape_}."
                )
        return source

    def _resume_state(self):
        """The training state to continue from: warm start, else a checkpoint on disk."""
        if self.warm_start and getattr(self, "train_state_", None) is not None:
            return self.train_state_
        if self.warm_start and _is_fitted(self):
            # Loaded from a file (no optimizer state): continue from its weights.
            return training.TrainState(step=self.n_steps_, loss_history=list(self.loss_history_),
                                       net_state={k: v.detach().cpu().clone() for k, v in self.net_.state_dict().items()})
        if self.checkpoint_path is not None and Path(self.checkpoint_path).is_file():
            return training.load_train_checkpoint(self.checkpoint_path)
        return None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the diffusion autoencoder on images ``X``.

        Parameters
        ----------
        X : images
            Training images in any accepted form (see the class docstring): an array, a list of
            PIL images or paths, a folder, a uint8 memory map, a torch Dataset. Files are decoded
            a batch at a time in DataLoader workers, never all at once.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        skcfx.diffusion.training.TrainingDivergedError
            If the loss becomes NaN/inf. The estimator keeps the last good weights
            (fitted, with ``n_steps_`` telling how far it got).
        ValueError
            For bad input, also when a batch met during training cannot be read (the message
            names the file): the estimator is then left as it was, and a ``checkpoint_path``
            holds the progress to resume from once the file is fixed.
        KeyboardInterrupt
            On interrupt; the estimator is left fitted with the weights of the last completed step
            and ``fit`` with ``warm_start=True`` continues to ``max_steps``.
        """
        start = time.perf_counter()
        device = distributed.init_from_env(resolve_device(self.device))
        resolve_precision(self.precision, device)
        source = self._check_fit_source(X)
        seed = seed_from_random_state(self.random_state)
        state = self._resume_state()
        if state is not None and getattr(self, "_train_net_", None) is not None:
            net = self._train_net_  # warm start: keep training the raw weights in place
        elif state is not None and _is_fitted(self):
            net = DiffAENet(self.config_)  # warm start of a loaded model; weights come from state
        else:
            net = self.initialize_module(source.image_shape, seed)
        try:
            state = training.train_diffae(
                net, source, max_steps=self.max_steps, batch_size=self.batch_size,
                learning_rate=self.learning_rate, ema_decay=self.ema_decay,
                latent_dropout=self.latent_dropout, device=device, generator=make_generator(seed, "cpu"),
                state=state, checkpoint_path=self.checkpoint_path,
                checkpoint_every=self.checkpoint_every if self.checkpoint_path is not None else None,
                verbose=bool(self.verbose), precision=self.precision, num_workers=self._loader_workers(source),
                random_flip=self.random_flip, compile=self.compile,
            )
        except training.TrainingDataError:
            if net is getattr(self, "_train_net_", None) and getattr(self, "train_state_", None) is not None:
                net.load_state_dict(self.train_state_.net_state)  # undo the in-place warm start
            raise
        except (training.TrainingInterrupted, training.TrainingDivergedError) as exc:
            # Keep what was learnt: the estimator stays usable and can continue (warm_start).
            if exc.state is not None and exc.state.step > 0:
                self._set_fitted(net, exc.state, source.image_shape, device, time.perf_counter() - start)
            raise
        self._set_fitted(net, state, source.image_shape, device, time.perf_counter() - start)
        return self

    def _set_fitted(self, net, state, image_shape, device, elapsed):
        """Store the training outcome: raw net for resuming, EMA copy for inference."""
        inference_net = copy.deepcopy(net)
        if state.ema_weights is not None:
            inference_net.load_state_dict(state.ema_weights)
        self.model_ = DiffAE(inference_net, device=device, precision=self.precision, compile=self.compile)
        self._train_net_ = net
        self.train_state_ = state
        self.config_ = net.config
        self.image_shape_ = tuple(int(s) for s in image_shape)
        self.n_steps_ = int(state.step)
        self.loss_history_ = np.asarray(state.loss_history, dtype=np.float64)
        self.device_ = device
        self.fit_time_s_ = float(elapsed)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    @property
    def net_(self):
        """The trained network (EMA weights) inside :attr:`model_`."""
        try:
            return self.model_.net
        except AttributeError:
            raise AttributeError("'DiffAEEncoder' object has no attribute 'net_' (not fitted)") from None

    # ------------------------------------------------------------------ public API
    def _source(self, X):
        """``X`` as an image source of the fitted size, read lazily (validated per batch)."""
        check_is_fitted(self)
        return as_image_source(X, name="X", image_shape=self.image_shape_)

    def _stream(self, source, desc):
        """Yield ``(slice, images float32 NHWC, x_0 tensor on the device)`` over ``source`` in order."""
        n_batches = math.ceil(len(source) / self.inference_batch_size)
        batches = iter_source_batches(source, self.inference_batch_size, num_workers=self._loader_workers(source))
        for sl, images in tqdm(batches, total=n_batches, desc=desc, disable=not self.verbose or n_batches < 2):
            yield sl, images, to_tensor(images, self.device_)

    def _batched(self, arrays, fn, desc):
        """Run ``fn`` over aligned numpy arrays in batches; concatenate the numpy results."""
        n = arrays[0].shape[0]
        batches = list(iter_batches(n, self.inference_batch_size))
        out = []
        for sl in tqdm(batches, desc=desc, disable=not self.verbose or len(batches) < 2):
            out.append(fn(*(a[sl] for a in arrays)))
        return np.concatenate(out)

    def _tensor(self, array):
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device_)

    def transform(self, X):
        """Semantic latents ``z_sem`` of images.

        Parameters
        ----------
        X : images of the fitted size (any accepted form, read a batch at a time)

        Returns
        -------
        Z : ndarray of shape (n, latent_dim), float32
        """
        source = self._source(X)
        return np.concatenate([self.model_.encode(x_0).cpu().numpy() for _, _, x_0 in self._stream(source, "encode")])

    def encode_stochastic(self, X, Z=None):
        """DDIM-inverted noise maps ``x_T`` (the stochastic subcode).

        Parameters
        ----------
        X : images of the fitted size (any accepted form, read a batch at a time)
        Z : ndarray of shape (n, latent_dim), default=None
            Semantic latents to condition on (default: ``transform(X)``, computed batch by batch
            in the same pass).

        Returns
        -------
        noise : ndarray of shape (n, H, W, C), float32
            In the network's own units (roughly standard normal), not rescaled to [0, 1].
        """
        source = self._source(X)
        if Z is not None:
            Z = check_latents(Z, n_features=self.config_.latent_dim)
            if Z.shape[0] != len(source):
                raise ValueError(f"Z has {Z.shape[0]} rows but X has {len(source)} images.")
        out = []
        for sl, _, x_0 in self._stream(source, "invert"):
            z = self.model_.encode(x_0) if Z is None else self._tensor(Z[sl])
            out.append(_nchw_to_nhwc(self.model_.invert(x_0, z, self.encode_steps)))
        return np.concatenate(out)

    def inverse_transform(self, Z, noise=None):
        """Decode semantic latents into images.

        Parameters
        ----------
        Z : ndarray of shape (n, latent_dim)
        noise : ndarray of shape (n, H, W, C), default=None
            The stochastic subcode from :meth:`encode_stochastic`, which keeps the original's
            details; ``None`` draws standard normal noise from ``random_state``.

        Returns
        -------
        images : ndarray of shape (n, H, W, C), float32 in [0, 1]
        """
        check_is_fitted(self)
        Z = check_latents(Z, n_features=self.config_.latent_dim)
        h, w, c = self.image_shape_
        if noise is None:
            generator = make_generator(seed_from_random_state(self.random_state), "cpu")
            noise = torch.randn((Z.shape[0], h, w, c), generator=generator).numpy()
        else:
            noise = _check_noise(noise, (Z.shape[0], h, w, c))

        def decode(z, x_T):
            return to_numpy(self.model_.decode(self._tensor(z), self._tensor(np.moveaxis(x_T, -1, 1)),
                                               self.decode_steps))

        return self._batched([Z, noise], decode, "decode")

    def _reconstructions(self, source):
        """Yield ``(images, reconstructions)`` batch by batch: encode, invert, decode."""
        for _, images, x_0 in self._stream(source, "reconstruct"):
            z = self.model_.encode(x_0)
            x_T = self.model_.invert(x_0, z, self.encode_steps)
            yield images, to_numpy(self.model_.decode(z, x_T, self.decode_steps))

    def reconstruct(self, X):
        """Encode, invert and decode images (the autoencoder's reconstruction), a batch at a time."""
        return np.concatenate([recon for _, recon in self._reconstructions(self._source(X))])

    def score(self, X, y=None):
        """Negative mean squared reconstruction error in [-1, 1] units (higher is better)."""
        total, count = 0.0, 0
        for images, recon in self._reconstructions(self._source(X)):
            total += float(np.sum((2 * recon - 2 * images) ** 2, dtype=np.float64))
            count += recon.size
        return -total / count


_ARCHITECTURE_FIELDS = {f.name for f in dataclasses.fields(DiffAEConfig)} - {"image_size", "in_channels",
                                                                               "null_latent"}
