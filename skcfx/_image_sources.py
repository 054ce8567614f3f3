"""Image collections read lazily, a batch at a time: the streaming form of :mod:`skcfx._images`.

:func:`as_image_source` accepts, besides what :func:`skcfx._images.check_images` accepts (arrays,
lists of PIL images or of file paths), a folder path (every image file below it, in sorted
order), a ``uint8`` or float array that may be memory-mapped, and any map-style
:class:`torch.utils.data.Dataset` yielding images. The result is an :class:`ImageSource`: a
torch ``Dataset`` of ``(C, H, W)`` tensors (``uint8`` stays ``uint8``; floats are mapped to
[-1, 1]) that the training DataLoader reads in worker processes, plus :meth:`ImageSource.numpy`
for the public float32 ``(n, H, W, C)`` form in [0, 1].

Nothing is decoded or copied up front. What can be checked without reading pixels is checked at
once (dtype, rank, channels, that files exist); float arrays are range-checked in chunks. Pixels
are validated per batch with the same messages as :func:`~skcfx._images.check_images` (a file
that cannot be decoded is named); a bad batch comes back as a
:class:`~skcfx.diffusion.data.BatchError`, so the message survives a worker process.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ._images import _ALLOWED_CHANNELS, _check_array, _load_pil, check_image_size
from .diffusion.data import BatchError, default_num_workers

__all__ = ["ImageSource", "as_image_source", "list_image_files", "iter_source_batches", "loader_workers"]

_CHUNK_BYTES = 64 * 2**20  # float arrays are range-checked this much at a time


def list_image_files(root):
    """Every image file below ``root`` (hidden files and folders skipped), sorted by path parts.

    Sorting by parts lists ``root/<class>/<image>`` trees class by class, in the order of
    :func:`skcfx.datasets.load_image_folder`.
    """
    from .datasets import IMAGE_EXTENSIONS

    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _shape_from_header(path):
    """(H, W, C) of an image file from its header (nothing decoded); C as :func:`_load_pil` gives it."""
    from PIL import Image

    with Image.open(path) as image:
        gray = image.mode in ("1", "L", "I", "I;16", "F")
        return (image.height, image.width, 1 if gray else 3)


def _decode_file(path):
    """Decode one file to ``uint8`` (H, W, C), converting modes exactly as :func:`_load_pil` does."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("1", "L", "I", "I;16", "F"):
            image = image.convert("L")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        arr = np.asarray(image, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


class ImageSource(torch.utils.data.Dataset):
    """A collection of images read lazily; subclasses implement :meth:`_load` for one image.

    Attributes
    ----------
    name : str
        The argument name used in error messages.
    image_shape : tuple of int
        ``(H, W, C)`` every image must have (that of the first image unless given).
    """

    name = "X"
    image_shape = None

    def __len__(self):
        raise NotImplementedError

    def _load(self, index):
        """One image as a uint8 or float32 (H, W, C) array in its own range; may raise ValueError."""
        raise NotImplementedError

    def describe(self, index):
        """How an error message refers to image ``index``."""
        return f"{self.name}[{index}]"

    def _checked(self, index):
        image = self._load(index)
        if tuple(image.shape) != tuple(self.image_shape):
            h, w, c = image.shape
            eh, ew, ec = self.image_shape
            what = (f"has {c} channel(s), expected {ec}" if (h, w) == (eh, ew)
                    else f"is {h}x{w}, expected {eh}x{ew}")
            raise ValueError(f"{self.describe(index)} {what} (the size and channels of the other "
                             "images, or those the estimator was fitted on).")
        if image.dtype != np.uint8:
            image = _check_array(image[None], self.describe(index))[0]
        return image

    def numpy(self, indices):
        """Images ``indices`` as float32 ``(n, H, W, C)`` in [0, 1]; ValueError names a bad one."""
        batch = [self._checked(int(i)) for i in indices]
        return np.stack([b.astype(np.float32) / 255.0 if b.dtype == np.uint8 else b for b in batch])

    def __getitem__(self, index):
        return _to_chw(self._checked(int(index))[None])[0]

    def __getitems__(self, indices):
        try:
            images = [self._checked(int(i)) for i in indices]
        except ValueError as exc:
            return BatchError(str(exc))
        dtypes = {image.dtype for image in images}
        if len(dtypes) > 1:  # a Dataset mixing uint8 and float items
            images = [i.astype(np.float32) / 255.0 if i.dtype == np.uint8 else i for i in images]
        return _to_chw(np.stack(images))


def _to_chw(batch):
    """(n, H, W, C) uint8 or float [0, 1] -> (n, C, H, W) tensor: uint8 kept, floats to [-1, 1]."""
    x = rearrange(torch.from_numpy(np.ascontiguousarray(batch)), "n h w c -> n c h w").contiguous()
    if x.dtype == torch.uint8:
        return x
    return x.float() * 2.0 - 1.0


class ArraySource(ImageSource):
    """A numpy array ``(n, H, W)`` / ``(n, H, W, C)``, uint8 or float in [0, 1]; memory maps stay on disk."""

    def __init__(self, X, name="X"):
        self.name = name
        _check_array(X[:0] if X.ndim else X, name)  # dtype, rank and channels, on no data
        if X.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch; at least one image is required.")
        self.X = X
        h, w = X.shape[1:3]
        self.image_shape = (h, w, 1 if X.ndim == 3 else X.shape[3])
        if X.dtype != np.uint8:
            self._check_values()

    def _check_values(self):
        step = max(1, _CHUNK_BYTES // max(1, self.X[0].nbytes))
        for start in range(0, self.X.shape[0], step):
            _check_array(self.X[start:start + step], self.name)  # a chunk-sized temporary

    def __len__(self):
        return self.X.shape[0]

    def _load(self, index):
        image = self.X[index]
        return image[:, :, None] if image.ndim == 2 else image

    def __getitems__(self, indices):
        # One fancy index per batch; values were checked up front (uint8 needs no check).
        batch = self.X[np.asarray(indices)]
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.dtype != np.uint8:
            batch = batch.astype(np.float32, copy=False)
        return _to_chw(batch)

    def numpy(self, indices):
        batch = self.X[np.asarray(indices)]
        return _check_array(batch, self.name)

    def __getstate__(self):
        # A memory map opened from a file (np.memmap, np.load(mmap_mode=...)) travels to worker
        # processes as its file, not as a pickled copy of the data.
        state = self.__dict__.copy()
        X = self.X
        if isinstance(X, np.memmap) and isinstance(X.base, mmap.mmap) and X.filename is not None:
            order = "F" if X.flags.f_contiguous and not X.flags.c_contiguous else "C"
            state["X"] = ("memmap", X.filename, X.dtype.str, X.shape, X.offset, order)
        return state

    def __setstate__(self, state):
        spec = state["X"]
        if isinstance(spec, tuple) and spec and spec[0] == "memmap":
            _, filename, dtype, shape, offset, order = spec
            state["X"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset,
                                   order=order)
        self.__dict__.update(state)


class ListSource(ImageSource):
    """A list of file paths, PIL images or arrays (one image each), decoded one batch at a time."""

    def __init__(self, items, name="X"):
        from PIL import Image

        self.name, self.items = name, list(items)
        if not self.items:
            raise ValueError(f"{name} is an empty batch; at least one image is required.")
        for i, item in enumerate(self.items):
            if isinstance(item, (str, os.PathLike)):
                if not Path(item).is_file():
                    raise ValueError(f"{name}[{i}]: no such image file: '{item}'.")
            elif not isinstance(item, (Image.Image, np.ndarray)):
                raise TypeError(f"{name}[{i}] must be a PIL.Image, a file path or a numpy array, "
                                f"got {type(item).__name__}.")
        self.image_shape = self._first_shape()

    def _first_shape(self):
        first = self.items[0]
        if isinstance(first, (str, os.PathLike)):
            try:
                return _shape_from_header(first)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.describe(0)}: cannot read '{first}' as an image ({exc}).") from exc
        return tuple(self._load(0).shape)

    def __len__(self):
        return len(self.items)

    def describe(self, index):
        item = self.items[index]
        if isinstance(item, (str, os.PathLike)):
            return f"{self.name}[{index}] ('{item}')"
        return f"{self.name}[{index}]"

    def _load(self, index):
        from PIL import Image, UnidentifiedImageError

        item = self.items[index]
        if isinstance(item, np.ndarray):
            return _check_array(item[None], f"{self.name}[{index}]")[0]
        if isinstance(item, Image.Image):
            return _load_pil(item, self.name, index)
        try:
            return _decode_file(item)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{self.name}[{index}]: cannot read '{item}' as an image ({exc}).") from exc


class DatasetSource(ImageSource):
    """A user's map-style torch Dataset whose items are images, or tuples whose first entry is one.

    An image is a PIL image, a numpy array ``(H, W)`` / ``(H, W, C)`` (uint8, or float in [0, 1]),
    or a torch tensor ``(C, H, W)`` (channels first, as torchvision gives: uint8, or float in [0, 1]).
    """

    def __init__(self, dataset, name="X"):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"{name}: a torch Dataset must be map-style (__len__ and __getitem__).")
        if len(dataset) == 0:
            raise ValueError(f"{name} is an empty Dataset; at least one image is required.")
        self.name, self.dataset = name, dataset
        self.image_shape = tuple(self._load(0).shape)

    def __len__(self):
        return len(self.dataset)

    def _load(self, index):
        from PIL import Image

        try:
            item = self.dataset[index]
        except Exception as exc:  # the user's code: name the item, keep the cause
            raise ValueError(f"{self.describe(index)}: the Dataset raised {type(exc).__name__}: {exc}") from exc
        if isinstance(item, (tuple, list)) and item:
            item = item[0]
        where = self.describe(index)
        if isinstance(item, Image.Image):
            return _load_pil(item, self.name, index)
        if isinstance(item, torch.Tensor):
            if item.ndim != 3 or item.shape[0] not in _ALLOWED_CHANNELS:
                raise ValueError(f"{where}: a tensor image must be (C, H, W) with C in {_ALLOWED_CHANNELS} "
                                 f"(channels first), got shape {tuple(item.shape)}.")
            item = item.detach().cpu().permute(1, 2, 0).numpy()
        if not isinstance(item, np.ndarray):
            raise TypeError(f"{where} must be a PIL.Image, a numpy array or a tensor, got {type(item).__name__}.")
        if item.dtype == np.uint8:
            return item[:, :, None] if item.ndim == 2 else item
        return _check_array(item[None], where)[0]


def as_image_source(X, *, name="X", image_shape=None):
    """Wrap any accepted image input as an :class:`ImageSource` (nothing decoded yet).

    Parameters
    ----------
    X : ndarray, list of PIL.Image / path-like / ndarray, folder path, torch Dataset or ImageSource
    name : str, default="X"
        Argument name used in error messages.
    image_shape : tuple (H, W, C), default=None
        The shape every image must have (a fitted estimator's); None takes the first image's.

    Raises
    ------
    TypeError, ValueError
        As :func:`skcfx._images.check_images` for what can be checked without reading pixels.
    """
    if isinstance(X, ImageSource):
        source = X
    elif isinstance(X, torch.Tensor):
        raise TypeError(
            f"{name} must be a numpy array, a list of PIL images or file paths, a folder or a torch "
            "Dataset, got a torch.Tensor; convert it with tensor.detach().cpu().numpy() (channels last).")
    elif isinstance(X, (str, os.PathLike)):
        if not Path(X).is_dir():
            raise TypeError(f"{name} must be a folder or a batch (list) of file paths, got a single path {X!r}.")
        files = list_image_files(X)
        if not files:
            raise ValueError(f"{name}: folder '{X}' holds no image files.")
        source = ListSource(files, name)
    elif isinstance(X, np.ndarray):
        source = ArraySource(X, name)
    elif isinstance(X, (list, tuple)):
        source = ListSource(X, name)
    elif isinstance(X, torch.utils.data.Dataset):
        source = DatasetSource(X, name)
    else:
        raise TypeError(f"{name} must be a numpy array, a list of PIL images or file paths, a folder "
                        f"or a torch Dataset, got {type(X).__name__}.")
    if image_shape is not None:
        _check_fitted_shape(source, tuple(image_shape))
    return source


def _check_fitted_shape(source, expected):
    """Compare the source's first image with the fitted ``(H, W, C)``; later ones are checked per batch."""
    (h, w, c), (eh, ew, ec) = source.image_shape, expected
    if (h, w) != (eh, ew):
        raise ValueError(f"{source.name} images must be {eh}x{ew} (the size the estimator was fitted on), "
                         f"got {h}x{w}.")
    if c != ec:
        raise ValueError(f"{source.name} images must have {ec} channel(s) (as fitted), got {c}.")
    source.image_shape = expected


def loader_workers(source, num_workers="auto", world_size=1):
    """DataLoader workers for reading ``source``: 'auto' decodes files and Datasets in parallel only.

    Arrays and in-memory PIL images are indexed in the calling process (workers would only copy).
    """
    if num_workers != "auto":
        return int(num_workers)
    in_memory = isinstance(source, ArraySource) or (
        isinstance(source, ListSource) and not any(isinstance(i, (str, os.PathLike)) for i in source.items))
    return 0 if in_memory else default_num_workers(world_size)


def iter_source_batches(source, batch_size, *, num_workers=0):
    """Yield ``(slice, images)`` over ``source`` in order; ``images`` float32 ``(n, H, W, C)`` in [0, 1].

    With ``num_workers > 0`` batches are decoded ahead in worker processes.
    """
    n = len(source)
    slices = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if num_workers == 0 or len(slices) < 2:
        for sl in slices:
            yield sl, source.numpy(range(sl.start, sl.stop))
        return
    loader = torch.utils.data.DataLoader(
        _NumpyBatches(source, slices), batch_size=None, num_workers=num_workers, prefetch_factor=2)
    for sl, batch in zip(slices, loader):
        if isinstance(batch, BatchError):
            raise ValueError(batch.message)
        yield sl, batch.numpy() if isinstance(batch, torch.Tensor) else batch


class _NumpyBatches(torch.utils.data.Dataset):
    """Batch ``k`` of a source as float32 NHWC (a BatchError instead of raising in a worker)."""

    def __init__(self, source, slices):
        self.source, self.slices = source, slices

    def __len__(self):
        return len(self.slices)

    def __getitem__(self, k):
        sl = self.slices[k]
        try:
            return self.source.numpy(range(sl.start, sl.stop))
        except ValueError as exc:
            return BatchError(str(exc))
