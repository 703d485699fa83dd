"""Noise schedules: the table alpha_bar[t] for t = 0..T, built once in float64.

Conventions (docs/design.md): t = 0 is data, t = T is (close to) the prior,
``alpha_bar[t] = prod_{i <= t} (1 - beta_i)`` with ``alpha_bar[0] = 1``. Both Gaussian and
categorical (mixing-family) processes read the same table: for a Gaussian process alpha_bar_t is
the signal variance of q(x_t | x0); for a categorical one it is the probability that a token is
still its original class rather than a draw from the stationary distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "NoiseSchedule",
    "ScheduleName",
    "ScheduleLike",
    "linear_betas",
    "cosine_alpha_bar",
    "make_schedule",
]

ScheduleName = Literal["linear", "cosine"]

#: DDPM's linear schedule (Ho et al. 2020, sec. 4) was written for T = 1000 steps.
DDPM_REFERENCE_STEPS = 1000


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear beta schedule, scaled so any T covers the same noise range.

    beta_i = linspace(beta_start * 1000 / T, beta_end * 1000 / T) for i = 1..T (Ho et al. 2020
    sec. 4 for T = 1000; the 1000 / T scaling is Nichol & Dhariwal 2021's).

    Args:
        num_steps: T >= 1.
        beta_start: beta_1 at T = 1000.
        beta_end: beta_T at T = 1000.

    Returns:
        (T,) float64 betas beta_1..beta_T, each in (0, 1).
    """
    _check_num_steps(num_steps)
    scale = DDPM_REFERENCE_STEPS / num_steps
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), num_steps, dtype=torch.float64)


def cosine_alpha_bar(num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal 2021, eq. 17, with betas clipped at ``max_beta``.

    f(t) = cos(((t / T + offset) / (1 + offset)) * pi / 2)^2, alpha_bar_t = f(t) / f(0);
    beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta), and the returned table is the
    cumulative product of the clipped (1 - beta_t), so it is exactly consistent with its betas.

    Args:
        num_steps: T >= 1.
        offset: s in eq. 17, keeps beta_1 away from 0.
        max_beta: clip for beta_t (eq. 17 leaves beta_T = 1 otherwise).

    Returns:
        (T + 1,) float64 alpha_bar with alpha_bar[0] = 1.
    """
    _check_num_steps(num_steps)
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    alpha_bar = _alpha_bar_from_betas(betas)
    _check_underflow(alpha_bar, "the cosine schedule")
    return alpha_bar


def _alpha_bar_from_betas(betas: Tensor) -> Tensor:
    """alpha_bar[t] = prod_{i <= t} (1 - beta_i): (T,) -> (T + 1,), alpha_bar[0] = 1."""
    one = torch.ones(1, dtype=torch.float64)
    return torch.cat([one, torch.cumprod(1 - betas.to(torch.float64), dim=0)])


def _check_underflow(alpha_bar: Tensor, source: str) -> None:
    """Raise if the float64 product prod(1 - beta) reaches 0 before t = T.

    Every beta_t may be valid on its own while the cumulative product underflows float64
    (e.g. 300 betas of 0.999): the rest of the table is then 0 and cannot strictly decrease.
    """
    zeros = torch.nonzero(alpha_bar[:-1] <= 0)
    if zeros.numel():
        t0, T = int(zeros[0]), alpha_bar.numel() - 1
        raise ValueError(
            f"alpha_bar: the product of (1 - beta_t) from {source} underflows float64 to 0 at t = {t0} of T = {T} "
            f"(alpha_bar[{t0 - 1}] = {alpha_bar[t0 - 1].item():.3g}), so alpha_bar[{t0}..{T}] are all 0 although every "
            "beta_t is in (0, 1); use smaller betas or fewer steps"
        )


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps: expected an int, got {type(num_steps).__name__}")
    if num_steps < 1:
        raise ValueError(f"num_steps: expected T >= 1, got {num_steps}")


class NoiseSchedule:
    """A validated alpha_bar table (T + 1 entries, float64, alpha_bar[0] = 1).

    Build one with :meth:`linear`, :meth:`cosine`, :meth:`from_betas` or :meth:`from_alpha_bar`.

    Args:
        alpha_bar: (T + 1,) values with alpha_bar[0] = 1, strictly decreasing, alpha_bar[T] >= 0.

    Raises:
        ValueError: if alpha_bar[0] != 1, the table is not strictly decreasing, leaves [0, 1],
            has fewer than 2 entries, or holds NaN.
    """

    def __init__(self, alpha_bar: Tensor | Sequence[float]) -> None:
        table = torch.as_tensor(alpha_bar, dtype=torch.float64).detach().clone()
        if table.ndim != 1 or table.numel() < 2:
            raise ValueError(f"alpha_bar: expected a 1-D table of T + 1 >= 2 values, got shape {tuple(table.shape)}")
        if not torch.isfinite(table).all():
            raise ValueError("alpha_bar: found NaN or inf; expected finite values in [0, 1]")
        if abs(table[0].item() - 1.0) > 1e-12:
            raise ValueError(f"alpha_bar: expected alpha_bar[0] = 1 (t = 0 is clean data), got {table[0].item()}")
        diffs = table[1:] - table[:-1]
        if (diffs >= 0).any():
            bad = int(torch.nonzero(diffs >= 0)[0]) + 1
            raise ValueError(
                f"alpha_bar: expected a strictly decreasing table (every beta_t in (0, 1)), "
                f"but alpha_bar[{bad}] = {table[bad].item()} >= alpha_bar[{bad - 1}] = {table[bad - 1].item()}"
            )
        if table[-1] < 0:
            raise ValueError(f"alpha_bar: expected values in [0, 1], got alpha_bar[T] = {table[-1].item()}")
        table[0] = 1.0
        self.alpha_bar = table

    @property
    def num_steps(self) -> int:
        """T, the number of forward steps."""
        return self.alpha_bar.numel() - 1

    @property
    def betas(self) -> Tensor:
        """(T,) float64 beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} for t = 1..T."""
        return 1 - self.alpha_bar[1:] / self.alpha_bar[:-1]

    @classmethod
    def linear(cls, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """DDPM's linear schedule (see :func:`linear_betas`)."""
        return cls.from_betas(linear_betas(num_steps, beta_start, beta_end))

    @classmethod
    def cosine(cls, num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal's cosine schedule (see :func:`cosine_alpha_bar`)."""
        return cls(cosine_alpha_bar(num_steps, offset, max_beta))

    @classmethod
    def from_betas(cls, betas: Tensor | Sequence[float]) -> NoiseSchedule:
        """Schedule from user-given betas beta_1..beta_T.

        Raises:
            ValueError: if a beta lies outside the open interval (0, 1), the list is empty, or
                prod(1 - beta) underflows float64 to 0 before t = T.
        """
        b = torch.as_tensor(betas, dtype=torch.float64)
        if b.ndim != 1 or b.numel() < 1:
            raise ValueError(f"betas: expected a 1-D sequence of T >= 1 values, got shape {tuple(b.shape)}")
        outside = ~((b > 0) & (b < 1))
        if outside.any():
            i = int(torch.nonzero(outside)[0])
            raise ValueError(
                f"betas: expected every beta_t in the open interval (0, 1), got beta_{i + 1} = {b[i].item()}"
            )
        alpha_bar = _alpha_bar_from_betas(b)
        _check_underflow(alpha_bar, "the given betas")
        return cls(alpha_bar)

    @classmethod
    def from_alpha_bar(cls, alpha_bar: Tensor | Sequence[float]) -> NoiseSchedule:
        """Schedule from a user-given table alpha_bar[0..T] (alpha_bar[0] must be 1)."""
        return cls(alpha_bar)

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.num_steps}, alpha_bar_T={self.alpha_bar[-1].item():.3g})"


ScheduleLike = ScheduleName | NoiseSchedule | Sequence[float]

_SCHEDULES = {"linear": NoiseSchedule.linear, "cosine": NoiseSchedule.cosine}


def make_schedule(schedule: ScheduleLike, num_steps: int) -> NoiseSchedule:
    """Resolve a schedule argument to a :class:`NoiseSchedule` with T = ``num_steps``.

    Args:
        schedule: "linear" | "cosine", a NoiseSchedule, or a sequence of T betas.
        num_steps: T; must match a given NoiseSchedule or beta list.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or a length mismatch.
    """
    _check_num_steps(num_steps)
    if isinstance(schedule, str):
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule: unknown name {schedule!r}; expected one of {sorted(_SCHEDULES)}")
        return _SCHEDULES[schedule](num_steps)
    if not isinstance(schedule, NoiseSchedule):
        schedule = NoiseSchedule.from_betas(schedule)
    if schedule.num_steps != num_steps:
        raise ValueError(f"schedule: has T = {schedule.num_steps} steps but num_steps = {num_steps}")
    return schedule
