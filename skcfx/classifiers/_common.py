"""Torch helpers shared by TimmClassifier and the adapters."""

from __future__ import annotations


import torch

from .._images import iter_batches, to_tensor


def _module_device(module):
    """The device of a module's first parameter or buffer (CPU when it has none)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_logits(out, n_samples, source):
    """Check that a module returned a ``(n, n_classes)`` logits tensor."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"{source} must return a logits tensor shaped (n, n_classes), got {type(out).__name__}."
        )
    if out.ndim != 2 or out.shape[0] != n_samples or out.shape[1] < 2:
        raise ValueError(
            f"{source} must return logits shaped (n, n_classes) with n_classes >= 2 for "
            f"n={n_samples} images, got shape {tuple(out.shape)}."
        )
    return out


def _batched_outputs(fn, images, device, batch_size):
    """Run ``fn`` over validated NHWC [0, 1] images in batches, without gradients.

    No input validation. ``fn`` maps a ``(b, C, H, W)`` tensor in [-1, 1] to a tensor; the
    concatenated result comes back on the CPU as float32.
    """
    outputs = []
    with torch.no_grad():
        for batch in iter_batches(len(images), batch_size):
            outputs.append(fn(to_tensor(images[batch], device=device)).float().cpu())
    return torch.cat(outputs)


def _softmax_numpy(logits):
    """Float64 probabilities from a logits tensor (float64 so rows sum to 1 tightly)."""
    return torch.softmax(logits.double(), dim=1).numpy()
