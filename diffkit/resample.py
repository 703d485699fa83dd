"""Importance sampling of the training time t for the ``kl`` / ``hybrid`` losses.

The ELBO's per-step terms L_t differ by orders of magnitude (most of the bound sits at small t), so
t ~ U{1..T} gives a high-variance estimate of sum_t L_t. Nichol & Dhariwal 2021 (sec. 3.3) draw t
with probability proportional to sqrt(E[L_t^2]), estimated from the last ``history`` losses seen at
each t (improved-diffusion's ``LossSecondMomentResampler``), mixed with a little of the uniform
law, and weight each draw by w(t) = 1 / (T p(t)), so E_{t ~ p}[w(t) L_t] = (1 / T) sum_t L_t: the
uniform average, unbiased. Until every t has ``history`` losses, p is uniform.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["WeightedTimesteps", "LossSecondMomentResampler"]


class WeightedTimesteps(NamedTuple):
    """t: (B,) int64 in 1..T; weights: (B,) float 1 / (T p(t)), to multiply the per-example losses."""

    t: Tensor
    weights: Tensor


class LossSecondMomentResampler:
    """p(t) ∝ sqrt(mean of the last ``history`` L_t^2), mixed as (1 - uniform_prob) p + uniform_prob / T.

    Args:
        num_steps: T.
        history: losses kept per t, >= 1 (improved-diffusion: 10).
        uniform_prob: weight of the uniform law in the mixture, in (0, 1] (improved-diffusion: 0.001).
    """

    def __init__(self, num_steps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps: expected an int >= 1, got {num_steps!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history: expected an int >= 1, got {history!r}")
        if not 0 < uniform_prob <= 1:
            raise ValueError(f"uniform_prob: expected a value in (0, 1], got {uniform_prob}")
        self.num_steps, self.history, self.uniform_prob = num_steps, history, uniform_prob
        self.losses = torch.zeros(num_steps, history, dtype=torch.float64)  # row t - 1: the last losses at t
        self.counts = torch.zeros(num_steps, dtype=torch.long)

    def warmed_up(self) -> bool:
        """Whether every t has ``history`` recorded losses."""
        return bool((self.counts >= self.history).all())

    def probabilities(self) -> Tensor:
        """(T,) float64 p(t) for t = 1..T (uniform until warmed up)."""
        uniform = torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        if not self.warmed_up():
            return uniform
        p = (self.losses**2).mean(1).sqrt()
        p = p / p.sum()
        return (1 - self.uniform_prob) * p + self.uniform_prob * uniform

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> WeightedTimesteps:
        """Draw (B,) t ~ p and their weights 1 / (T p(t))."""
        p = self.probabilities()
        idx = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_steps * p[idx])
        return WeightedTimesteps((idx + 1).to(device), weights.float().to(device))

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record per-example losses (B,) observed at times t (B,) in 1..T (oldest dropped first)."""
        for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist(), strict=True):
            row = ti - 1
            if self.counts[row] < self.history:
                self.losses[row, self.counts[row]] = li
            else:
                self.losses[row] = torch.cat([self.losses[row, 1:], torch.tensor([li], dtype=torch.float64)])
            self.counts[row] += 1
