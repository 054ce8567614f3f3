"""torch.distributed plumbing for multi-process training (DDP under ``torchrun``).

A script started with ``torchrun --nproc_per_node N script.py`` gets the environment variables
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_from_env` turns them into a process group
(NCCL for CUDA devices, gloo for the CPU) and picks this process's device. Everything else asks
:func:`world` where it stands, so a single process (no process group) runs unchanged.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "world", "launched_with_torchrun", "init_from_env", "rank_device",
           "all_reduce_mean", "broadcast_module", "barrier"]


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes (``size == 1``: no DDP)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        """Rank 0: the process that writes checkpoints and saved models."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1


def world():
    """The current :class:`World`: from the default process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local)
    return World()


def launched_with_torchrun():
    """True when the environment describes more than one process (``torchrun``, ``env://``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def rank_device(device):
    """This process's device: a CUDA device without an index becomes ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched_with_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device):
    """Join the process group described by the environment, if any, and return this rank's device.

    Does nothing (and returns ``device``) in a single process or when a process group already
    exists. The backend follows the device: NCCL for CUDA, gloo otherwise. A group created here
    is destroyed when the interpreter exits.

    Parameters
    ----------
    device : torch.device
        The resolved device of the estimator (``cuda`` means "this rank's GPU").

    Returns
    -------
    torch.device
    """
    device = rank_device(device)
    if not launched_with_torchrun() or not dist.is_available() or dist.is_initialized():
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(_destroy)
    return device


def _destroy():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor):
    """Average ``tensor`` over all processes, in place (a no-op in a single process)."""
    size = world().size
    if size > 1:
        dist.all_reduce(tensor)
        tensor.div_(size)
    return tensor


@torch.no_grad()
def broadcast_module(module, src=0):
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s values."""
    if world().size > 1:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src)


def barrier():
    """Wait for every process (a no-op in a single process)."""
    if world().size > 1:
        dist.barrier()
