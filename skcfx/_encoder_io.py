"""Persistence of :class:`skcfx.DiffAEEncoder`: files that load without running code, and pickles.

A mixin, so that ``encoder.py`` holds the estimator's fitting and inference and this module how a
fitted one is written and read back: :meth:`save` / :meth:`load` / :meth:`from_pretrained`
(skcfx files and published ``last.ckpt``) and ``__getstate__`` / ``__setstate__``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import __version__
from ._validation import resolve_device
from .diffusion import checkpoints, distributed, training

__all__ = ["EncoderPersistence"]

# Config fields the estimator sets from the data and its own parameters, not from ``architecture``.
_FROM_PARAMS = ("image_size", "in_channels", "null_latent")


def architecture_of(config):
    """The ``architecture`` parameter that rebuilds ``config`` (with the estimator's other params)."""
    return {key: value for key, value in config.to_dict().items() if key not in _FROM_PARAMS}


class EncoderPersistence:
    """save / load / from_pretrained and pickling for :class:`skcfx.DiffAEEncoder`."""

    def save(self, path):
        """Save the fitted encoder to one file that loads without running code.

        The file holds the EMA weights as tensors, the architecture, the estimator's parameters
        (JSON), the training figures and the skcfx version; :meth:`load` reads it with
        ``torch.load(weights_only=True)``. The optimizer state is not stored: use ``checkpoint_path``
        (or pickle with ``keep_train_state=True``) to continue training later. Written atomically.
        Under ``torchrun`` every process calls it and rank 0 writes; all return once the file exists.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        pathlib.Path
        """
        check_is_fitted(self)
        if not distributed.world().is_main:
            distributed.barrier()
            return Path(path)
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
        written = checkpoints.save_skcfx_checkpoint(path, self.net_, extra)
        distributed.barrier()
        return written

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
        written by :meth:`save`. Loading never executes code from the file (a restricted
        unpickler: tensors, plain containers and Lightning's callback / hyper-parameter records).
        The loaded architecture becomes the ``architecture`` parameter, so ``clone`` and
        ``get_params`` rebuild the same network.

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
        extra = info.get("extra", {}) if info["format"] == "skcfx" else {}
        encoder = cls(**cls._merged_params(net.config, extra, params, path))
        encoder._validate_params()
        device = distributed.rank_device(resolve_device(encoder.device))
        steps = extra.get("n_steps", info.get("global_step") or 0)
        history = extra.get("loss_history")
        state = training.TrainState(step=int(steps), loss_history=[] if history is None else history.tolist())
        config = net.config
        encoder._set_fitted(net, state, (config.image_size, config.image_size, config.in_channels), device,
                            float(extra.get("fit_time_s", 0.0)))
        encoder.train_state_ = None  # no optimizer state: warm_start trains a fresh optimizer
        encoder._train_net_ = None
        encoder.checkpoint_info_ = {k: v for k, v in info.items() if k in ("format", "source", "global_step", "epoch")}
        return encoder

    @classmethod
    def _merged_params(cls, config, extra, params, path):
        """Parameters of a loaded encoder: the file's architecture, its stored params, the caller's."""
        stored = {}
        if "params_json" in extra:
            stored = json.loads(extra["params_json"])
            version = extra.get("skcfx_version")
            if version != __version__:
                warnings.warn(f"'{path}' was saved by skcfx {version}; this is skcfx {__version__}.",
                              UserWarning, stacklevel=3)
        merged = {"image_size": config.image_size, "latent_dim": config.latent_dim,
                  "latent_dropout": stored.get("latent_dropout", 0.1 if config.null_latent else 0.0)}
        merged.update(stored)
        merged["architecture"] = architecture_of(config)
        merged.update(params)
        valid = cls._get_param_names()
        unknown = sorted(set(merged) - set(valid))
        if unknown:
            raise TypeError(f"unknown DiffAEEncoder parameters {unknown}; valid ones are {valid}.")
        return merged

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        # Networks travel on the CPU so a model fitted on a GPU unpickles anywhere (skorch style).
        # The optimizer state and raw training weights (about 5x the weights) only when asked.
        state = self.__dict__.copy()
        if not getattr(self, "keep_train_state", False):
            for key in ("train_state_", "_train_net_"):
                if key in state:
                    state[key] = None
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
