"""What a :func:`~skcfx.diffusion.training.train_diffae` run leaves behind: its state, its
checkpoint files, and the two ways it can stop early (divergence, interrupt).

A :class:`TrainState` holds everything needed to continue a run exactly; checkpoints are plain
tensors and containers written atomically, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from dataclasses import dataclass, field, fields

import torch

__all__ = [
    "TrainState",
    "TrainingDataError",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "save_train_checkpoint",
    "load_train_checkpoint",
]

_CHECKPOINT_FORMAT = "skcfx-train-state"
# Version 2 adds the data-order fields (data_seed, samples_seen); version 1 files still load
# (their run continues with a fresh data order).
_CHECKPOINT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


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


class TrainingDataError(ValueError):
    """A training batch could not be formed (unreadable file, wrong size, values out of range).

    The message names the offending image (file path or index). Like an interrupt, the run stops
    after its last completed step: ``state`` resumes from there once the data is fixed, and
    with a ``checkpoint_path`` the same state is on disk.

    Attributes
    ----------
    state : TrainState
        The state after the last completed step.
    """

    def __init__(self, message, *, state):
        super().__init__(message)
        self.state = state


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
    data_seed : int or None
        Seed of the epoch-wise shuffling (epoch ``e`` is permuted with ``data_seed + e``); drawn
        from the run's generator when training starts.
    samples_seen : int
        Indices each process has consumed from its shuffled stream (``step * local batch``):
        where the data order continues on resume.
    """

    step: int = 0
    loss_history: list = field(default_factory=list)
    net_state: dict | None = None
    optimizer_state: dict | None = None
    ema_state: dict | None = None
    generator_state: torch.Tensor | None = None
    scaler_state: dict | None = None
    data_seed: int | None = None
    samples_seen: int = 0

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
    if payload.get("version") not in _READABLE_VERSIONS:
        raise ValueError(
            f"{os.fspath(path)!r} has training-checkpoint version {payload.get('version')!r}; "
            f"this skcfx reads versions {_READABLE_VERSIONS}."
        )
    data = {key: value for key, value in payload.items() if key not in ("format", "version")}
    return TrainState.from_dict(data)


