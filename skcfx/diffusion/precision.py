"""Numeric precision of network calls: one vocabulary for training and inference.

``'fp32'`` runs everything in float32; ``'bf16'`` and ``'fp16'`` run the network under
:func:`torch.autocast` (matrix products and convolutions in the low precision, reductions,
GroupNorm and softmax in float32); ``'auto'`` is bfloat16 on CUDA devices that support it and
float32 everywhere else. Sampler arithmetic and the loss always stay float32.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "resolve_precision", "autocast", "make_grad_scaler"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_precision(precision, device):
    """The autocast dtype for ``precision`` on ``device``, or None for plain float32.

    Parameters
    ----------
    precision : {'auto', 'fp32', 'bf16', 'fp16'}
    device : torch.device

    Returns
    -------
    torch.dtype or None

    Raises
    ------
    ValueError
        Unknown name, or ``'bf16'`` on a GPU without bfloat16. ``'bf16'`` and ``'fp16'`` are
        honoured on any device torch can autocast on (on the CPU they are rarely faster).
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision='bf16': {device} does not support bfloat16; use 'fp16' or 'fp32'.")
    return torch.bfloat16


def autocast(device, dtype):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def make_grad_scaler(device):
    """A gradient scaler for float16 training on ``device`` (the API moved in torch 2.3)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(torch.device(device).type)
    return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3
