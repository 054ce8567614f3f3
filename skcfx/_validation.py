"""Validation helpers shared by every estimator: devices, seeds, latents and labels."""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = [
    "resolve_device",
    "seed_from_random_state",
    "make_generator",
    "check_latents",
    "check_positive_int",
    "seeded_torch",
]


def resolve_device(device="auto"):
    """Resolve a device specification into a :class:`torch.device`.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda', 'cuda:N'} or torch.device, default='auto'
        ``'auto'`` picks CUDA when it is available, else the CPU.

    Returns
    -------
    torch.device
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif isinstance(device, str):
        spec = device
    else:
        raise TypeError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}."
        )
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available; use device='cpu' or 'auto'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return resolved


def seed_from_random_state(random_state):
    """Draw an integer seed from ``random_state`` (None, int or RandomState).

    An integer ``random_state`` maps to itself so results are reproducible; ``None`` draws a fresh
    seed; a ``RandomState`` is advanced by one draw.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**63 - 1)
    rng = check_random_state(random_state)
    return int(rng.randint(0, 2**31 - 1))


def make_generator(seed, device="cpu"):
    """A :class:`torch.Generator` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def check_positive_int(value, name, minimum=1):
    """Check that ``value`` is an integer >= ``minimum`` and return it as ``int``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_latents(Z, *, n_features=None, name="Z"):
    """Validate semantic latents: a finite 2-D float array of the fitted width.

    Returns a new float32 array.
    """
    if isinstance(Z, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array, got a torch.Tensor.")
    try:
        arr = np.asarray(Z)
    except Exception as exc:  # pragma: no cover - exotic containers
        raise TypeError(f"{name} must be array-like of numbers.") from exc
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one sample is required.")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features but {n_features} were expected (the fitted latent width)."
        )
    arr = arr.astype(np.float32, copy=True)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


@contextlib.contextmanager
def seeded_torch(seed, device="cpu"):
    """Seed torch's global RNG inside the block, then restore the caller's RNG state.

    timm initialises weights and draws dropout masks from the global RNG (it takes no
    ``torch.Generator``), so forking is the only way to make fits reproducible without
    disturbing the user's own random stream.
    """
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
