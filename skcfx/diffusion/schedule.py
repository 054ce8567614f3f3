"""Noise schedules for DDPM/DDIM as pure tensor functions.

Everything here is float64: alpha_bar reaches about 4e-5 at t = 999 and its
ratios define the respaced betas, so float32 would lose digits that the
published implementation (which works in float64 numpy) keeps.

References
----------
Ho, Jain and Abbeel (2020), "Denoising Diffusion Probabilistic Models", eq. 4 and 7.
Nichol and Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models",
appendix on respacing ("ddimN" strides).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["linear_betas", "alpha_bar", "respace_timesteps", "Schedule"]


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")


def linear_betas(T=1000, beta_start=1e-4, beta_end=0.02):
    """Linearly spaced betas (Ho et al. 2020, sec. 4).

    Parameters
    ----------
    T : int, default=1000
        Number of diffusion steps.
    beta_start, beta_end : float, default=1e-4, 0.02
        First and last beta.

    Returns
    -------
    betas : torch.Tensor of shape (T,), float64

    Examples
    --------
    >>> linear_betas(5, 0.1, 0.5).tolist()
    [0.1, 0.2, 0.3, 0.4, 0.5]
    """
    _check_positive_int(T, "T")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            "beta_start and beta_end must satisfy 0 < beta_start <= beta_end < 1, "
            f"got {beta_start!r} and {beta_end!r}."
        )
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def alpha_bar(betas):
    """Cumulative product of ``1 - betas`` (Ho et al. 2020, eq. 4).

    Parameters
    ----------
    betas : torch.Tensor of shape (T,)

    Returns
    -------
    alpha_bar : torch.Tensor of shape (T,), float64
    """
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("betas must be a 1-D tensor with values in (0, 1).")
    return torch.cumprod(1.0 - betas, dim=0)


def respace_timesteps(T, n_steps):
    """Timesteps kept by the published "ddimN" respacing.

    The kept steps are ``{0, s, 2s, ...}`` with the smallest stride ``s`` that
    yields exactly ``n_steps`` of them; when ``n_steps`` divides ``T`` this is
    ``s = T // n_steps`` (e.g. ddim10 over T = 1000 keeps 0, 100, ..., 900).

    Parameters
    ----------
    T : int
        Number of steps of the original chain.
    n_steps : int
        Number of steps to keep, ``1 <= n_steps <= T``.

    Returns
    -------
    timesteps : torch.LongTensor of shape (n_steps,), ascending

    Raises
    ------
    ValueError
        If no constant stride gives exactly ``n_steps`` steps.

    Examples
    --------
    >>> respace_timesteps(1000, 4).tolist()
    [0, 250, 500, 750]
    """
    _check_positive_int(T, "T")
    _check_positive_int(n_steps, "n_steps")
    if n_steps > T:
        raise ValueError(f"n_steps must be at most T={T}, got {n_steps}.")
    # len(range(0, T, s)) == ceil(T / s). The published code scans s upwards for
    # the first stride giving exactly n_steps steps; any s < ceil(T / n_steps)
    # gives more steps, so that first candidate is s = ceil(T / n_steps).
    stride = -(-T // n_steps)
    if -(-T // stride) != n_steps:
        raise ValueError(
            f"cannot respace T={T} into exactly n_steps={n_steps} equally strided "
            "steps; choose n_steps that divides T."
        )
    return torch.arange(0, T, stride, dtype=torch.long)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A (possibly respaced) discrete diffusion schedule.

    Parameters
    ----------
    timesteps : torch.LongTensor of shape (n,)
        Ascending ORIGINAL timesteps; networks are always called with these.
    alpha_bar : torch.Tensor of shape (n,), float64
        Cumulative alpha at each kept timestep.
    T : int
        Length of the original chain.

    Notes
    -----
    Respacing keeps ``alpha_bar`` at the kept steps and recomputes the betas
    from its ratios (``betas``), as the published implementation does.

    Examples
    --------
    >>> s = Schedule.linear(1000, n_steps=10)
    >>> len(s), s.timesteps[:3].tolist()
    (10, [0, 100, 200])
    """

    timesteps: torch.Tensor
    alpha_bar: torch.Tensor
    T: int

    def __post_init__(self):
        timesteps = torch.as_tensor(self.timesteps, dtype=torch.long).cpu()
        ab = torch.as_tensor(self.alpha_bar, dtype=torch.float64).cpu()
        if timesteps.ndim != 1 or timesteps.shape != ab.shape or len(timesteps) == 0:
            raise ValueError("timesteps and alpha_bar must be non-empty 1-D tensors of equal length.")
        if len(timesteps) > 1 and not bool((timesteps.diff() > 0).all()):
            raise ValueError("timesteps must be strictly ascending.")
        if int(timesteps[0]) < 0 or int(timesteps[-1]) >= self.T:
            raise ValueError(f"timesteps must lie in [0, T={self.T}).")
        if not bool(((ab > 0) & (ab <= 1)).all()) or (len(ab) > 1 and not bool((ab.diff() < 0).all())):
            raise ValueError("alpha_bar must decrease strictly and lie in (0, 1].")
        object.__setattr__(self, "timesteps", timesteps)
        object.__setattr__(self, "alpha_bar", ab)

    @classmethod
    def linear(cls, T=1000, n_steps=None):
        """The published linear schedule, optionally respaced to ``n_steps``.

        Betas run from 1e-4 to 0.02 scaled by ``1000 / T`` (the published rule,
        a no-op for T = 1000).

        Parameters
        ----------
        T : int, default=1000
        n_steps : int or None, default=None
            Respace to this many steps ("ddimN"); None keeps all T steps.

        Returns
        -------
        Schedule
        """
        _check_positive_int(T, "T")
        scale = 1000.0 / T
        return cls.from_betas(linear_betas(T, 1e-4 * scale, 0.02 * scale), n_steps=n_steps)

    @classmethod
    def from_betas(cls, betas, n_steps=None):
        """Build a schedule from the betas of the full chain.

        Parameters
        ----------
        betas : torch.Tensor of shape (T,)
        n_steps : int or None, default=None

        Returns
        -------
        Schedule
        """
        ab = alpha_bar(betas)
        T = len(ab)
        timesteps = torch.arange(T) if n_steps is None else respace_timesteps(T, n_steps)
        return cls(timesteps=timesteps, alpha_bar=ab[timesteps], T=T)

    def __len__(self):
        return len(self.timesteps)

    @property
    def alpha_bar_prev(self):
        """alpha_bar of the previous kept step (1 before the first), float64."""
        return torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar[:-1]])

    @property
    def alpha_bar_next(self):
        """alpha_bar of the next kept step (0 after the last, as in DDIM inversion)."""
        return torch.cat([self.alpha_bar[1:], self.alpha_bar.new_zeros(1)])

    @property
    def betas(self):
        """Betas of the respaced chain: ``1 - alpha_bar[i] / alpha_bar[i-1]``."""
        return 1.0 - self.alpha_bar / self.alpha_bar_prev

    @property
    def posterior_variance(self):
        """Variance of q(x_{i-1} | x_i, x_0) (Ho et al. 2020, eq. 7)."""
        return self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
