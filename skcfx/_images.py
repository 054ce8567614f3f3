"""Image input and output: the one place images are validated and converted.

Public functions accept a batch of images as

* a numpy array shaped ``(n, H, W)`` or ``(n, H, W, C)`` (channels last), ``uint8`` in 0..255 or
  floating point in [0, 1];
* a list of :class:`PIL.Image.Image`;
* a list of file paths (``str`` or :class:`pathlib.Path`).

and always return ``float32`` numpy arrays shaped ``(n, H, W, C)`` in [0, 1]. Inside torch code images
are ``(n, C, H, W)`` float32 tensors in [-1, 1]; :func:`to_tensor` and :func:`to_numpy` are the only
converters between the two conventions.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

__all__ = ["check_images", "to_tensor", "to_numpy", "iter_batches", "check_image_size"]

_ALLOWED_CHANNELS = (1, 3)


def check_image_size(image_size, name="image_size"):
    """Normalise an image size given as ``int`` or ``(H, W)`` into an ``(H, W)`` tuple."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (H, W), got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(f"{name} must be positive, got {image_size!r}.")
    return size


def _load_pil(image, name, index):
    """Convert one PIL image to a float32 (H, W, C) array in [0, 1]."""
    mode = image.mode
    if mode in ("1", "L", "I", "I;16", "F"):
        image = image.convert("L")
    elif mode != "RGB":
        image = image.convert("RGB")
    arr = np.asarray(image, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _read_file(path, name, index):
    """Read one image file into a float32 (H, W, C) array; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}[{index}]: no such image file: '{path}'.")
    try:
        with Image.open(path) as image:
            image.load()
            return _load_pil(image, name, index)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{name}[{index}]: cannot read '{path}' as an image ({exc}).") from exc


def _list_to_array(X, name):
    """Stack a list of PIL images / paths / arrays into one (n, H, W, C) float32 array."""
    from PIL import Image

    items = []
    for i, item in enumerate(X):
        if isinstance(item, (str, os.PathLike)):
            items.append(_read_file(item, name, i))
        elif isinstance(item, Image.Image):
            items.append(_load_pil(item, name, i))
        elif isinstance(item, np.ndarray):
            arr = _check_array(item[None], f"{name}[{i}]")[0]
            items.append(arr)
        else:
            raise TypeError(
                f"{name}[{i}] must be a PIL.Image, a file path or a numpy array, "
                f"got {type(item).__name__}."
            )
    shapes = {a.shape for a in items}
    if len(shapes) > 1:
        raise ValueError(
            f"{name} must contain images of one size and channel count, got shapes "
            f"{sorted(shapes)}; resize them first (e.g. skcfx.datasets.load_image_folder)."
        )
    return np.stack(items).astype(np.float32, copy=False)


def _check_array(X, name):
    """Validate a numpy image batch and return a new float32 (n, H, W, C) array in [0, 1]."""
    if X.dtype == object or not (
        np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_
    ):
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}.")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}.")
    if X.ndim == 3:
        X = X[..., None]
    elif X.ndim != 4:
        raise ValueError(
            f"{name} must be shaped (n, H, W) or (n, H, W, C), got an array with shape {X.shape}."
        )
    if X.shape[-1] not in _ALLOWED_CHANNELS:
        raise ValueError(
            f"{name} must have 1 or 3 channels in the last axis (channels last), got shape "
            f"{X.shape}. For channels-first arrays use np.moveaxis(X, 1, -1)."
        )
    if X.shape[1] < 1 or X.shape[2] < 1:
        raise ValueError(f"{name} has an empty spatial size: shape {X.shape}.")
    if X.dtype == np.uint8:
        return X.astype(np.float32) / 255.0
    if np.issubdtype(X.dtype, np.integer) or X.dtype == np.bool_:
        raise TypeError(
            f"{name} must be uint8 (0..255) or floating point in [0, 1], got dtype {X.dtype}."
        )
    out = X.astype(np.float32, copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if out.size and (out.min() < 0.0 or out.max() > 1.0):
        raise ValueError(
            f"{name} float values must lie in [0, 1], got range [{out.min():.4g}, {out.max():.4g}]. "
            "Pass uint8 arrays for 0..255 data."
        )
    return out


def check_images(X, *, name="X", image_size=None, n_channels=None, allow_empty=False):
    """Validate a batch of images and return it as float32 ``(n, H, W, C)`` in [0, 1].

    Parameters
    ----------
    X : ndarray, list of PIL.Image or list of path-like
        The images (see module docstring for the accepted forms).
    name : str, default="X"
        Argument name used in error messages.
    image_size : int or tuple of (int, int), default=None
        If given, the required spatial size (e.g. the size an estimator was fitted on).
    n_channels : int, default=None
        If given, the required number of channels.
    allow_empty : bool, default=False
        Whether an empty batch is accepted.

    Returns
    -------
    images : ndarray of shape (n, H, W, C), dtype float32
        A new array; the input is never modified.

    Raises
    ------
    TypeError
        For unsupported containers or dtypes.
    ValueError
        For wrong rank, channel count, size, values out of range, NaN/inf, empty batches or
        unreadable files.
    """
    if isinstance(X, torch.Tensor):
        raise TypeError(
            f"{name} must be a numpy array, a list of PIL images or a list of file paths, got a "
            "torch.Tensor; convert it with tensor.detach().cpu().numpy() (channels last)."
        )
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(f"{name} must be a batch (list) of file paths, got a single path {X!r}.")
    if isinstance(X, np.ndarray):
        images = _check_array(X, name)
    elif isinstance(X, (list, tuple)):
        if len(X) == 0:
            images = np.zeros((0, 1, 1, 1), dtype=np.float32)
        else:
            images = _list_to_array(X, name)
    else:
        raise TypeError(
            f"{name} must be a numpy array, a list of PIL images or a list of file paths, "
            f"got {type(X).__name__}."
        )
    if images.shape[0] == 0:
        if allow_empty and image_size is not None and n_channels is not None:
            h, w = check_image_size(image_size)
            return np.zeros((0, h, w, n_channels), dtype=np.float32)
        if not allow_empty:
            raise ValueError(f"{name} is an empty batch; at least one image is required.")
        return images
    if image_size is not None:
        expected = check_image_size(image_size)
        if images.shape[1:3] != expected:
            raise ValueError(
                f"{name} images must be {expected[0]}x{expected[1]} (the size the estimator was "
                f"fitted on), got {images.shape[1]}x{images.shape[2]}."
            )
    if n_channels is not None and images.shape[3] != n_channels:
        raise ValueError(
            f"{name} images must have {n_channels} channel(s) (as fitted), got {images.shape[3]}."
        )
    return images


def to_tensor(images, device=None, dtype=torch.float32):
    """Convert validated ``(n, H, W, C)`` [0, 1] images into a ``(n, C, H, W)`` tensor in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    x = rearrange(x, "n h w c -> n c h w") * 2.0 - 1.0
    return x.to(device=device, dtype=dtype)


def to_numpy(x):
    """Convert a ``(n, C, H, W)`` tensor in [-1, 1] into float32 ``(n, H, W, C)`` in [0, 1] (clipped)."""
    x = ((x.detach().float() + 1.0) / 2.0).clamp_(0.0, 1.0)
    return rearrange(x, "n c h w -> n h w c").cpu().numpy().astype(np.float32, copy=False)


def iter_batches(n, batch_size):
    """Yield ``slice`` objects covering ``range(n)`` in chunks of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))
