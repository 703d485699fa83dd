"""Categorical transition kernels: the mixing family Q_t = (1 - beta_t) I + beta_t 1 pi^T (uniform,
absorbing, marginal) in closed form, and user-given matrices Q_1..Q_T. Each gives (C1)-(C4) of
:mod:`diffkit.processes.categorical_formulas` for its kind.
"""

from __future__ import annotations

from functools import reduce

import torch
from torch import Tensor, nn

from diffkit.processes.base import expand_to
from diffkit.processes.categorical_formulas import (
    categorical_posterior,
    mixing_marginal,
    mixing_posterior,
)

__all__ = ["MixingTransition", "MatrixTransition"]


class MixingTransition(nn.Module):
    """Q_t = (1 - beta_t) I + beta_t 1 pi^T: uniform, absorbing or data-marginal noise.

    Args:
        alpha_bar: (T + 1,) float64 schedule table.
        pi: (K,) stationary distribution, or None to be filled later by :meth:`set_pi`
            (the "marginal" transition filled from training data). Stored in checkpoints when
            ``persistent`` (it is data-derived, not a hyperparameter).
    """

    alpha_bar: Tensor  # (T + 1,) float64 buffer
    pi: Tensor  # (K,) float64 buffer, NaN until filled

    def __init__(self, alpha_bar: Tensor, pi: Tensor | None, num_states: int, persistent: bool = False) -> None:
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)
        pending = torch.full((num_states,), float("nan"), dtype=torch.float64)
        self.register_buffer("pi", pending if pi is None else pi.to(torch.float64), persistent=persistent)

    @property
    def ready(self) -> bool:
        return bool(torch.isfinite(self.pi).all())

    def set_pi(self, pi: Tensor) -> None:
        self.pi.copy_(pi.to(self.pi))

    def _alpha(self, t: Tensor, ndim: int, dtype: torch.dtype) -> Tensor:
        return expand_to(self.alpha_bar[t], ndim).to(dtype)

    def marginal(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        return mixing_marginal(x0_probs, self._alpha(t, x0_probs.ndim, x0_probs.dtype), self.pi.to(x0_probs.dtype))

    def transition(self, x_s_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        alpha_ts = expand_to(self.alpha_bar[t] / self.alpha_bar[s], x_s_probs.ndim).to(x_s_probs.dtype)
        return mixing_marginal(x_s_probs, alpha_ts, self.pi.to(x_s_probs.dtype))

    def sample_marginal(self, x0: Tensor, t: Tensor, u: Tensor) -> Tensor:
        """x_t ~ alpha_bar_t e_x0 + (1 - alpha_bar_t) pi from uniforms u (shape of x0), in float64:
        keep x0 where u < alpha_bar_t, else the inverse CDF of pi at (u - alpha_bar_t) / (1 - alpha_bar_t)
        (uniform on [0, 1) given u >= alpha_bar_t)."""
        alpha_bar_t = expand_to(self.alpha_bar[t], x0.ndim)
        u = u.to(torch.float64)
        cdf = self.pi.cumsum(0)
        states = torch.arange(self.pi.shape[0], device=self.pi.device)
        last = torch.where(self.pi > 0, states, 0).amax()  # the last class with pi > 0 (no host sync)
        v = ((u - alpha_bar_t) / (1 - alpha_bar_t)).clamp(0, 1) * cdf[-1]
        # The first class whose cdf exceeds v; never past the last class with pi > 0 (rounding).
        draw = torch.minimum(torch.searchsorted(cdf, v, right=True), last)
        return torch.where(u < alpha_bar_t, x0, draw)

    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        nd = x0_probs.ndim
        return mixing_posterior(
            x_t, x0_probs, expand_to(self.alpha_bar[t], nd), expand_to(self.alpha_bar[s], nd), self.pi
        )

    def prior(self, num_classes: int) -> Tensor:
        """(K,) u Qbar_T with u uniform over the data classes: p(x_T), finite KL for every kind."""
        u = torch.zeros_like(self.pi)
        u[:num_classes] = 1.0 / num_classes
        a = self.alpha_bar[-1]
        return a * u + (1 - a) * self.pi


class MatrixTransition(nn.Module):
    """User-given transition matrices Q_1..Q_T, (T, K, K), rows summing to 1.

    Qbar_t is tabulated in float64 (T + 1, K, K); Q_{t|s} for s < t - 1 is the product
    Q_{s+1} ... Q_t, computed once per distinct (s, t) pair in the batch.
    """

    Q: Tensor  # (T, K, K) float64 buffer
    Qbar: Tensor  # (T + 1, K, K) float64 buffer

    def __init__(self, Q: Tensor) -> None:
        super().__init__()
        Q = Q.to(torch.float64)
        eye = torch.eye(Q.shape[-1], dtype=torch.float64)
        Qbar = [eye]
        for Q_t in Q:
            Qbar.append(Qbar[-1] @ Q_t)
        self.register_buffer("Q", Q, persistent=False)
        self.register_buffer("Qbar", torch.stack(Qbar), persistent=False)

    ready: bool = True

    def Q_ts(self, t: Tensor, s: Tensor) -> Tensor:
        """(B, K, K) Q_{t|s} = Q_{s+1} ... Q_t."""
        if bool((t - s == 1).all()):
            return self.Q[t - 1]
        out = torch.empty(t.shape[0], *self.Q.shape[1:], dtype=self.Q.dtype, device=self.Q.device)
        pairs = torch.stack([s, t], 1)
        for s_i, t_i in torch.unique(pairs, dim=0).tolist():
            rows = (s == s_i) & (t == t_i)
            out[rows] = reduce(torch.matmul, self.Q[s_i:t_i])
        return out

    def marginal(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        return self._rows(x0_probs, self.Qbar[t])

    def transition(self, x_s_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self._rows(x_s_probs, self.Q_ts(t, s))

    @staticmethod
    def _rows(probs: Tensor, M: Tensor) -> Tensor:
        B, K = probs.shape[0], probs.shape[-1]
        out = torch.bmm(probs.reshape(B, -1, K), M.to(probs.dtype))  # (B, N, K)
        return out.reshape(probs.shape)

    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        dt = x0_probs.dtype
        return categorical_posterior(x_t, x0_probs, self.Q_ts(t, s).to(dt), self.Qbar[s].to(dt), self.Qbar[t].to(dt))

    def prior(self, num_classes: int) -> Tensor:
        """(K,) the mean row of Qbar_T: p(x_T) for x0 uniform over the classes."""
        return self.Qbar[-1].mean(0)
