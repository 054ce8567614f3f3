"""Exponential moving average of a network's weights, on torch's :class:`AveragedModel`.

The average is a full copy of the network (``EMA.module``), so it serves inference directly;
torch's :class:`torch.optim.swa_utils.AveragedModel` keeps it and applies the update with one
fused ``_foreach_lerp_`` per device and dtype, as :func:`torch.optim.swa_utils.get_ema_multi_avg_fn`
does. skcfx adds a warm-up of the decay, which short CPU runs need (see :class:`EMA`).
"""

from __future__ import annotations

import numbers

import torch
from torch.optim.swa_utils import AveragedModel

__all__ = ["EMA", "cpu_clone"]


def cpu_clone(obj):
    """Deep copy of nested dicts/lists/tuples with every tensor detached, cloned and on the CPU.

    States handed out must not share storage with live tensors: the optimizer and EMA keep
    updating theirs in place, which would silently change a state kept for later.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: cpu_clone(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_clone(value) for value in obj)
    return obj


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied).

    Each :meth:`update` moves the average towards the live weights::

        d = min(decay, (1 + n) / (10 + n))        # n = updates done so far
        ema = d * ema + (1 - d) * weights

    The warm-up term ``(1 + n) / (10 + n)`` (as in TensorFlow's ``ExponentialMovingAverage``
    with ``num_updates``) makes the average follow the weights closely early on: it averages
    over roughly the last ``n / 9`` steps until ``decay`` takes over, so a short run of a few
    hundred steps already gives a useful average instead of one dominated by the random init.
    Buffers (integer counters, statistics) are copied from the live module at every update.

    Parameters
    ----------
    net : torch.nn.Module
        The module to track; the average starts from (a deep copy of) its current weights.
    decay : float, default=0.999
        Largest decay, in [0, 1). The published DiffAE uses 0.9999 for runs of ~1e6 steps.
    warmup : bool, default=True
        Use the warm-up schedule above; False uses ``decay`` from the first update.

    Attributes
    ----------
    module : torch.nn.Module
        The averaged copy of ``net`` (use it for inference).
    num_updates : int

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> ema = EMA(net, decay=0.9)
    >>> ema.update(net)
    >>> ema.num_updates
    1
    """

    def __init__(self, net, decay=0.999, *, warmup=True):
        if not isinstance(decay, numbers.Real) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a float in [0, 1), got {decay!r}.")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self._averaged = AveragedModel(net, multi_avg_fn=self._lerp)
        self._averaged.requires_grad_(False)
        # The initial weights count as the first sample: AveragedModel would otherwise overwrite
        # the average with the weights of the first update instead of averaging with them.
        self._averaged.n_averaged.fill_(1)

    @property
    def module(self):
        return self._averaged.module

    @property
    def weights(self):
        """The averaged ``state_dict`` (live tensors of :attr:`module`)."""
        return self.module.state_dict()

    def current_decay(self):
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    def _lerp(self, averaged, live, _n_averaged):
        # The decay is computed on the host from num_updates: no device sync, exact on resume.
        torch._foreach_lerp_(averaged, live, 1.0 - self.current_decay())

    @torch.no_grad()
    def update(self, net):
        """Move the average one step towards the current weights of ``net``."""
        self._averaged.update_parameters(net)
        self.num_updates += 1

    def copy_to(self, net):
        """Load the averaged weights into ``net`` (the weights to use for inference)."""
        net.load_state_dict(self.weights)

    def state_dict(self):
        """A CPU copy: ``{'decay', 'warmup', 'num_updates', 'weights'}`` (plain data only)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "weights": cpu_clone(self.weights)}

    @torch.no_grad()
    def load_state_dict(self, state):
        """Restore the average and the update count (``decay`` stays as constructed)."""
        differing = set(self.weights) ^ set(state["weights"])
        if differing:
            raise ValueError(f"EMA state does not match the net; differing keys: {sorted(differing)[:5]}")
        self.module.load_state_dict(state["weights"])
        self.num_updates = int(state["num_updates"])
