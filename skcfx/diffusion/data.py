"""Training batches: image datasets, epoch-wise shuffling that never ends, and the DataLoader.

A training dataset is any map-style :class:`torch.utils.data.Dataset` whose items are
``(C, H, W)`` image tensors, either ``uint8`` in 0..255 (kept that small until the batch reaches
the device) or floating point in [-1, 1]. It may implement ``__getitems__(indices)`` to build a
whole batch at once (one fancy-index of a tensor or array) and may return a :class:`BatchError`
instead of raising: that way a bad image is reported with its own message even from a worker.

The data order is the one :class:`torch.utils.data.DistributedSampler` gives: epoch ``e`` is a
permutation drawn from ``seed + e``, split across processes. :class:`EndlessSampler` chains those
epochs from any position, so every step sees a full batch (also when the data set is smaller
than a batch) and a resumed run continues the same order from ``samples_seen``.
"""

from __future__ import annotations

import itertools
import os

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

__all__ = ["BatchError", "TensorImages", "EndlessSampler", "collate_images", "make_train_loader",
           "to_model_input", "default_num_workers"]


class BatchError:
    """A batch that could not be formed; ``message`` names the image (file or index)."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = str(message)

    def __reduce__(self):
        return (BatchError, (self.message,))


class TensorImages(Dataset):
    """An ``(N, C, H, W)`` tensor (float in [-1, 1] or uint8) as a dataset; batches are one index."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index]

    def __getitems__(self, indices):
        return self.images[torch.as_tensor(indices, dtype=torch.long)]


def collate_images(items):
    """Stack items into an ``(n, C, H, W)`` batch; a ready batch or a :class:`BatchError` passes through."""
    if isinstance(items, (torch.Tensor, BatchError)):
        return items
    for item in items:
        if isinstance(item, BatchError):
            return item
    shapes = {(tuple(item.shape), item.dtype) for item in items}
    if len(shapes) > 1:
        return BatchError(f"the dataset's images differ in shape or dtype within one batch: {sorted(map(str, shapes))}.")
    return torch.stack(list(items))


class EndlessSampler(Sampler):
    """This process's share of :class:`DistributedSampler` epochs, chained without end.

    Parameters
    ----------
    n : int
        Size of the dataset.
    seed : int
        Epoch ``e`` is the permutation of ``seed + e`` (identical on every process).
    rank, world_size : int, default=0, 1
    start : int, default=0
        Indices of this process's stream already consumed (``TrainState.samples_seen``).
    shuffle : bool, default=True
    """

    def __init__(self, n, *, seed, rank=0, world_size=1, start=0, shuffle=True):
        self.n, self.start = int(n), int(start)
        self._epochs = DistributedSampler(range(self.n), num_replicas=world_size, rank=rank,
                                          shuffle=shuffle, seed=int(seed), drop_last=False)

    @property
    def epoch_length(self):
        """Indices per epoch for this process (padded so all processes get the same count)."""
        return self._epochs.num_samples

    def __iter__(self):
        epoch, offset = divmod(self.start, self.epoch_length)
        for e in itertools.count(epoch):
            self._epochs.set_epoch(e)
            yield from itertools.islice(iter(self._epochs), offset, None)
            offset = 0


class _FirstBatches(Sampler):
    """The first ``n_batches`` batches of a batch sampler (so the DataLoader stops by itself)."""

    def __init__(self, batch_sampler, n_batches):
        self.batch_sampler, self.n_batches = batch_sampler, int(n_batches)

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.n_batches)


def _worker_init(_worker_id):
    # Workers only decode files: one torch thread each, or they fight the training process.
    torch.set_num_threads(1)


def default_num_workers(world_size=1):
    """Loader workers for decoding files: the CPUs not needed by the training processes, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // max(1, world_size) - 1))


def make_train_loader(dataset, *, batch_size, n_batches, seed, start=0, rank=0, world_size=1,
                      num_workers=0, pin_memory=False):
    """A DataLoader over ``n_batches`` batches of ``batch_size`` images of this process's stream.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Items ``(C, H, W)`` (see the module docstring).
    batch_size : int
        Images per batch on this process (the global batch divided by ``world_size``).
    n_batches : int
        Batches to deliver (the remaining steps).
    seed, start, rank, world_size
        See :class:`EndlessSampler`.
    num_workers : int, default=0
        Worker processes decoding images (0: in this process).
    pin_memory : bool, default=False
        Page-locked batches for asynchronous copies to a CUDA device.

    Returns
    -------
    torch.utils.data.DataLoader
    """
    sampler = EndlessSampler(len(dataset), seed=seed, rank=rank, world_size=world_size, start=start)
    batches = _FirstBatches(BatchSampler(sampler, batch_size, drop_last=True), n_batches)
    extra = {}
    if num_workers > 0:
        extra = {"worker_init_fn": _worker_init, "prefetch_factor": 4, "persistent_workers": False}
    # Its own generator: the loader's worker seeds never touch the global RNG.
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_images, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(int(seed)), **extra)


def to_model_input(batch, device, *, image_shape=None, memory_format=torch.contiguous_format):
    """Move a batch to ``device`` as float32 in [-1, 1], checking it on the way.

    ``uint8`` batches travel as bytes and are scaled on the device. Floating-point batches must
    already lie in [-1, 1] and be finite.

    Raises
    ------
    ValueError
        A :class:`BatchError`, a batch of the wrong shape, or values out of range.
    """
    if isinstance(batch, BatchError):
        raise ValueError(batch.message)
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"a training batch must be an (n, C, H, W) tensor, got {shape}.")
    if image_shape is not None and tuple(batch.shape[1:]) != tuple(image_shape):
        raise ValueError(f"a training batch has images of shape {tuple(batch.shape[1:])}; "
                         f"expected {tuple(image_shape)} (C, H, W).")
    x = batch.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        # The same float32 operations as the NumPy path (uint8 / 255, then 2x - 1): bit-identical.
        x = x.float().div_(255.0).mul_(2.0).sub_(1.0)
    elif x.is_floating_point():
        x = x.float()
        bad = ~torch.isfinite(x).all() | (x.abs().amax() > 1.0 + 1e-5)
        if bool(bad):
            raise ValueError("a training batch holds values that are not finite or outside [-1, 1] "
                             f"(range [{x.min().item():.4g}, {x.max().item():.4g}]).")
    else:
        raise ValueError(f"training images must be uint8 or floating point, got {x.dtype}.")
    return x.contiguous(memory_format=memory_format)
