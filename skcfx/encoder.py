"""DiffAEEncoder: a diffusion autoencoder as a scikit-learn transformer."""

from __future__ import annotations

import copy
import json
import numbers
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import __version__
from ._images import check_images, iter_batches, to_numpy, to_tensor
from ._validation import check_latents, make_generator, resolve_device, seed_from_random_state, seeded_torch
from .diffusion import checkpoints, training
from .diffusion.model import DiffAE
from .diffusion.nets import DiffAENet

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


class DiffAEEncoder(TransformerMixin, BaseEstimator):
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
    max_steps : int, default=5000
        Training iterations (optimizer steps). On 16 px digits reconstruction is already good
        after 2500 steps, but the semantic latent only takes control of what a decode shows
        later (``benchmarks/diffae_digits.py``, "semantic control"), and latent edits such as
        DifCluE's need that.
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
        Show progress bars.

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
    }

    def __init__(
        self,
        image_size=None,
        latent_dim=None,
        *,
        architecture="auto",
        max_steps=5000,
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
        return checkpoints.default_config_for(h, c, **{**arch, **overrides})

    def initialize_module(self, image_shape, seed):
        """Build a freshly initialised network for ``image_shape`` (override to customise)."""
        config = self._build_config(image_shape)
        with seeded_torch(seed):
            return DiffAENet(config)

    # ------------------------------------------------------------------ fitting
    def _check_fit_images(self, X):
        images = check_images(X, name="X")
        h, w, c = images.shape[1:]
        if h != w:
            raise ValueError(f"X images must be square, got {h}x{w}.")
        if self.image_size is not None and h != self.image_size:
            raise ValueError(
                f"X images are {h}x{w} but image_size={self.image_size}; resize them or change image_size."
            )
        if _is_fitted(self) and (self.warm_start or self._resume_state() is not None):
            if tuple(images.shape[1:]) != self.image_shape_:
                raise ValueError(
                    f"warm_start: X images are {images.shape[1:]} but the network was trained on {self.image_shape_}."
                )
        return images

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
            Training images (array, list of PIL images or list of paths; see API docs).
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        skcfx.diffusion.training.TrainingDivergedError
            If the loss becomes NaN/inf. The estimator keeps the last good weights
            (fitted, with ``n_steps_`` telling how far it got).
        KeyboardInterrupt
            On interrupt; the estimator is left fitted with the weights of the last completed step
            and ``fit`` with ``warm_start=True`` continues to ``max_steps``.
        """
        start = time.perf_counter()
        images = self._check_fit_images(X)
        device = resolve_device(self.device)
        seed = seed_from_random_state(self.random_state)
        state = self._resume_state()
        if state is not None and getattr(self, "_train_net_", None) is not None:
            net = self._train_net_  # warm start: keep training the raw weights in place
        elif state is not None and _is_fitted(self):
            net = DiffAENet(self.config_)  # warm start of a loaded model; weights come from state
        else:
            net = self.initialize_module(images.shape[1:], seed)
        generator = make_generator(seed, "cpu")
        try:
            state = training.train_diffae(
                net, to_tensor(images), max_steps=self.max_steps, batch_size=self.batch_size,
                learning_rate=self.learning_rate, ema_decay=self.ema_decay,
                latent_dropout=self.latent_dropout, device=device, generator=generator, state=state,
                checkpoint_path=self.checkpoint_path,
                checkpoint_every=self.checkpoint_every if self.checkpoint_path is not None else None,
                verbose=bool(self.verbose),
            )
        except (training.TrainingInterrupted, training.TrainingDivergedError) as exc:
            # Keep what was learnt: the estimator stays usable and can continue (warm_start).
            if exc.state is not None and exc.state.step > 0:
                self._set_fitted(net, exc.state, images.shape[1:], device, time.perf_counter() - start)
            raise
        self._set_fitted(net, state, images.shape[1:], device, time.perf_counter() - start)
        return self

    def _set_fitted(self, net, state, image_shape, device, elapsed):
        """Store the training outcome: raw net for resuming, EMA copy for inference."""
        inference_net = copy.deepcopy(net)
        if state.ema_weights is not None:
            inference_net.load_state_dict(state.ema_weights)
        self.model_ = DiffAE(inference_net, device=device)
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
    def _validated(self, X):
        check_is_fitted(self)
        h, w, c = self.image_shape_
        return check_images(X, name="X", image_size=(h, w), n_channels=c)

    def _batched(self, arrays, fn, desc):
        """Run ``fn`` over aligned numpy arrays in batches; concatenate the numpy results."""
        n = arrays[0].shape[0]
        batches = list(iter_batches(n, self.inference_batch_size))
        out = []
        for sl in tqdm(batches, desc=desc, disable=not self.verbose or len(batches) < 2):
            out.append(fn(*(a[sl] for a in arrays)))
        return np.concatenate(out)

    def transform(self, X):
        """Semantic latents ``z_sem`` of images.

        Parameters
        ----------
        X : images of the fitted size

        Returns
        -------
        Z : ndarray of shape (n, latent_dim), float32
        """
        images = self._validated(X)

        def encode(batch):
            return self.model_.encode(to_tensor(batch, self.device_)).cpu().numpy()

        return self._batched([images], encode, "encode")

    def encode_stochastic(self, X, Z=None):
        """DDIM-inverted noise maps ``x_T`` (the stochastic subcode).

        Parameters
        ----------
        X : images of the fitted size
        Z : ndarray of shape (n, latent_dim), default=None
            Semantic latents to condition on (default: ``transform(X)``).

        Returns
        -------
        noise : ndarray of shape (n, H, W, C), float32
            In the network's own units (roughly standard normal), not rescaled to [0, 1].
        """
        images = self._validated(X)
        Z = self.transform(images) if Z is None else check_latents(Z, n_features=self.config_.latent_dim)
        if Z.shape[0] != images.shape[0]:
            raise ValueError(f"Z has {Z.shape[0]} rows but X has {images.shape[0]} images.")

        def invert(batch, z):
            x_T = self.model_.invert(to_tensor(batch, self.device_), torch.from_numpy(z).to(self.device_),
                                     self.encode_steps)
            return _nchw_to_nhwc(x_T)

        return self._batched([images, Z], invert, "invert")

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
            x_T = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_T, -1, 1))).to(self.device_)
            return to_numpy(self.model_.decode(torch.from_numpy(z).to(self.device_), x_T, self.decode_steps))

        return self._batched([Z, noise], decode, "decode")

    def reconstruct(self, X):
        """Encode, invert and decode images (the autoencoder's reconstruction)."""
        images = self._validated(X)
        Z = self.transform(images)
        return self.inverse_transform(Z, noise=self.encode_stochastic(images, Z))

    def score(self, X, y=None):
        """Negative mean squared reconstruction error in [-1, 1] units (higher is better)."""
        images = self._validated(X)
        recon = self.reconstruct(images)
        return -float(np.mean((2 * recon - 2 * images) ** 2))

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Save the fitted encoder to one file that loads without running code.

        The file holds the EMA weights as tensors, the architecture, the estimator's parameters
        (JSON), the training figures and the skcfx version; :meth:`load` reads it with
        ``torch.load(weights_only=True)``. The optimizer state is not stored: use pickle/joblib
        (or ``checkpoint_path``) to continue training later. Written atomically.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        pathlib.Path
        """
        check_is_fitted(self)
        params = {k: v for k, v in self.get_params().items() if k != "checkpoint_path"}
        params["device"] = str(params["device"])
        extra = {
            "skcfx_version": __version__,
            "estimator": "DiffAEEncoder",
            "params_json": json.dumps(params, default=_json_default),
            "image_shape": list(self.image_shape_),
            "n_steps": self.n_steps_,
            "loss_history": torch.from_numpy(np.asarray(self.loss_history_, dtype=np.float64)),
            "fit_time_s": float(getattr(self, "fit_time_s_", 0.0)),
        }
        return checkpoints.save_skcfx_checkpoint(path, self.net_, extra)

    @classmethod
    def load(cls, path, *, device="auto"):
        """Load an encoder written by :meth:`save` (or any skcfx / published checkpoint).

        Parameters
        ----------
        path : str or path-like
        device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
            Where to put the network.
        """
        return cls.from_pretrained(path, device=device)

    @classmethod
    def from_pretrained(cls, path, **params):
        """A fitted encoder from a checkpoint file.

        Reads the published Diffusion Autoencoders format (a Lightning ``last.ckpt``: the
        architecture from ``hyper_parameters``, the EMA weights, strict key matching) or a file
        written by :meth:`save`. Loading never executes code from the file
        (``torch.load(weights_only=True)``).

        Parameters
        ----------
        path : str or path-like
            A checkpoint file, or the name of a model shipped with skcfx (e.g. ``'digits16'``,
            see :func:`skcfx.pretrained.list_pretrained`).
        **params
            Estimator parameters to set (e.g. ``encode_steps=50``, ``device='cpu'``); for skcfx
            files they override the stored ones.

        Returns
        -------
        DiffAEEncoder
            Fitted (``n_steps_`` is the checkpoint's training step when known).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path-like, got {type(path).__name__}.")
        if isinstance(path, str) and not Path(path).exists():
            from .pretrained import list_pretrained, pretrained_path

            if path in list_pretrained():
                path = pretrained_path(path)
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path: no such checkpoint file '{path}'.")
        net, info = checkpoints.load_checkpoint(path)
        stored = {}
        extra = info.get("extra", {}) if info["format"] == "skcfx" else {}
        if "params_json" in extra:
            stored = json.loads(extra["params_json"])
            version = extra.get("skcfx_version")
            if version != __version__:
                warnings.warn(
                    f"'{path}' was saved by skcfx {version}; this is skcfx {__version__}.", UserWarning, stacklevel=2
                )
        config = net.config
        merged = {"image_size": config.image_size, "latent_dim": config.latent_dim,
                  "latent_dropout": stored.get("latent_dropout", 0.1 if config.null_latent else 0.0)}
        merged.update(stored)
        merged.update(params)
        valid = cls._get_param_names()
        unknown = sorted(set(merged) - set(valid))
        if unknown:
            raise TypeError(f"unknown DiffAEEncoder parameters {unknown}; valid ones are {valid}.")
        encoder = cls(**merged)
        encoder._validate_params()
        device = resolve_device(encoder.device)
        steps = extra.get("n_steps", info.get("global_step") or 0)
        history = extra.get("loss_history")
        state = training.TrainState(step=int(steps), loss_history=[] if history is None else history.tolist())
        encoder._set_fitted(net, state, (config.image_size, config.image_size, config.in_channels), device,
                            float(extra.get("fit_time_s", 0.0)))
        encoder.train_state_ = None  # no optimizer state: warm_start trains a fresh optimizer
        encoder._train_net_ = None
        encoder.checkpoint_info_ = {k: v for k, v in info.items() if k in ("format", "source", "global_step", "epoch")}
        return encoder

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        # Networks travel on the CPU so a model fitted on a GPU unpickles anywhere (skorch style).
        state = self.__dict__.copy()
        model = state.get("model_")
        if model is not None and model.device.type != "cpu":
            state["model_"] = copy.deepcopy(model).to("cpu")
        net = state.get("_train_net_")
        if net is not None and next(net.parameters()).device.type != "cpu":
            state["_train_net_"] = copy.deepcopy(net).cpu()
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        device = state.get("device_")
        if device is not None:
            device = torch.device(device)
            if device.type == "cuda" and not torch.cuda.is_available():
                warnings.warn(
                    f"This DiffAEEncoder was fitted on {device} but CUDA is not available here; it now runs on the CPU.",
                    UserWarning, stacklevel=2,
                )
                device = torch.device("cpu")
            state["device_"] = device
            if state.get("model_") is not None:
                state["model_"].to(device)
        self.__dict__.update(state)


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (Path, torch.device)):
        return str(value)
    return repr(value)
