"""Categorical (D3PM / DiGress) diffusion: pure formulas, transitions, parametrizations and
:class:`CategoricalProcess`.

Row-vector convention (DESIGN.md): q(x_t | x_{t-1}) = Cat(x_{t-1} Q_t), Qbar_t = Q_1 ... Q_t,
Q_{t|s} = Q_{s+1} ... Q_t. Class ids are int64; probabilities live in the last dim (K).

    q(x_t | x0)      = Cat(x0 Qbar_t)                                                    (C1)
    q(x_t | x_s)     = Cat(x_s Q_{t|s})                                                  (C2)
    q(x_s | x_t, x0) = (x_t Q_{t|s}^T) * (x0 Qbar_s) / (x0 Qbar_t x_t^T)                 (C3)
    p(x_s | x_t)     = sum_x0 q(x_s | x_t, x0) p(x0 | x_t)                               (C4)

(C4) with p(x0 | x_t) = q(x0 | x_t) is exactly q(x_s | x_t) (DESIGN.md (1)); writing w(x0) =
p(x0) / Qbar_t[x0, x_t], it is (x_t Q_{t|s}^T) * (w Qbar_s), normalized: O(K) memory per element,
never K x K per element. Candidates x0 with Qbar_t[x0, x_t] = 0 cannot have produced x_t; they get
weight 0 (so the mixture is renormalized over the x0 consistent with x_t).

Mixing family (uniform, absorbing, marginal): Q_t = (1 - beta_t) I + beta_t 1 pi^T, so
Qbar_{t|s} = alpha_{t|s} I + (1 - alpha_{t|s}) 1 pi^T with alpha_{t|s} = alpha_bar_t / alpha_bar_s:
every row-vector product above is a closed form in O(K).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffkit.parametrizations import PreviousStepParametrization, X0BasedParametrization
from diffkit.processes.base import ForwardProcess, Noised, expand_to
from diffkit.processes.schedules import ScheduleLike, make_schedule

__all__ = [
    "CategoricalProcess",
    "MixingTransition",
    "MatrixTransition",
    "mixing_marginal",
    "mixing_posterior",
    "categorical_posterior",
    "categorical_kl",
    "gumbel_sample",
    "CategoricalX0",
    "CategoricalPreviousStep",
]

TransitionName = Literal["uniform", "absorbing", "marginal"]

#: log of float32's smallest normal number: a finite stand-in for log(0) in logits.
LOG_TINY = math.log(torch.finfo(torch.float32).tiny)


# ------------------------------------------------------------------------ pure formulas
def _normalize(p: Tensor) -> Tensor:
    return p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


def mixing_marginal(x0_probs: Tensor, alpha: Tensor, pi: Tensor) -> Tensor:
    """x0 Qbar for Qbar = alpha I + (1 - alpha) 1 pi^T, i.e. (C1) / (C2) in the mixing family.

    Args:
        x0_probs: (B, ..., K) probabilities (a one-hot row for a known x0).
        alpha: (B, 1, ..., 1) alpha_bar_t (for (C1)) or alpha_{t|s} (for (C2)).
        pi: (K,) stationary distribution.

    Returns:
        (B, ..., K) probabilities alpha x0 + (1 - alpha) pi.
    """
    return alpha * x0_probs + (1 - alpha) * pi


def mixing_posterior(x_t: Tensor, x0_probs: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor) -> Tensor:
    """(C3)-(C4) in the mixing family: sum_x0 q(x_s | x_t, x0) p(x0), in O(K) per element.

    With alpha_{t|s} = alpha_bar_t / alpha_bar_s:
        x_t Q_{t|s}^T = alpha_{t|s} e_{x_t} + (1 - alpha_{t|s}) pi[x_t]      (likelihood of x_t per x_s)
        w(x0)         = p(x0) / (alpha_bar_t [x0 = x_t] + (1 - alpha_bar_t) pi[x_t])
        w Qbar_s      = alpha_bar_s w + (1 - alpha_bar_s) pi sum(w)

    Args:
        x_t: (B, ...) int64 ids.
        x0_probs: (B, ..., K) probabilities of x0 (one-hot for a known x0).
        alpha_bar_t: (B, 1, ..., 1) with one more dim than x_t.
        alpha_bar_s: (B, 1, ..., 1), alpha_bar_s > alpha_bar_t.
        pi: (K,).

    Returns:
        (B, ..., K) probabilities of x_s.
    """
    dt = x0_probs.dtype
    pi = pi.to(dt)
    onehot_t = F.one_hot(x_t, pi.shape[0]).to(dt)  # (B, ..., K)
    pi_xt = pi[x_t].unsqueeze(-1)  # (B, ..., 1)
    # Scalars in the alpha_bar's dtype (float64 from the process), cast once.
    alpha_ts = alpha_bar_t / alpha_bar_s
    like_ts = alpha_ts.to(dt) * onehot_t + (1 - alpha_ts).to(dt) * pi_xt
    like_t = alpha_bar_t.to(dt) * onehot_t + (1 - alpha_bar_t).to(dt) * pi_xt
    w = _consistent_weights(x0_probs, like_t)
    mixed = alpha_bar_s.to(dt) * w + (1 - alpha_bar_s).to(dt) * pi * w.sum(-1, keepdim=True)
    return _normalize(like_ts * mixed)


def _consistent_weights(x0_probs: Tensor, like_t: Tensor) -> Tensor:
    """w(x0) = p'(x0) / Qbar_t[x0, x_t], p' = p renormalized over the x0 consistent with x_t.

    Renormalizing first keeps the mixture a distribution even when p(x0 | x_t) puts (numerically)
    zero mass on every consistent x0; then p' is uniform over them.
    """
    consistent = like_t > 0
    p = torch.where(consistent, x0_probs, torch.zeros_like(x0_probs))
    mass = p.sum(-1, keepdim=True)
    uniform = consistent.to(p.dtype)
    p = torch.where(mass > 0, p / torch.where(mass > 0, mass, torch.ones_like(mass)), uniform / uniform.sum(-1, keepdim=True))
    return torch.where(consistent, p / torch.where(consistent, like_t, torch.ones_like(like_t)), torch.zeros_like(p))


def categorical_posterior(x_t: Tensor, x0_probs: Tensor, Q_ts: Tensor, Qbar_s: Tensor, Qbar_t: Tensor) -> Tensor:
    """(C3)-(C4) for general transition matrices: sum_x0 q(x_s | x_t, x0) p(x0).

    Args:
        x_t: (B, ...) int64 ids.
        x0_probs: (B, ..., K) probabilities of x0.
        Q_ts: (B, K, K) Q_{t|s}; Qbar_s, Qbar_t: (B, K, K).

    Returns:
        (B, ..., K) probabilities of x_s.
    """
    B, K = x_t.shape[0], Q_ts.shape[-1]
    xt = x_t.reshape(B, -1)  # (B, N)
    rows = torch.arange(B, device=x_t.device).unsqueeze(1)  # (B, 1)
    like_ts = Q_ts.transpose(1, 2)[rows, xt]  # (B, N, K): Q_{t|s}[x_s, x_t] over x_s
    like_t = Qbar_t.transpose(1, 2)[rows, xt]  # (B, N, K): Qbar_t[x0, x_t] over x0
    p = x0_probs.reshape(B, -1, K)  # (B, N, K)
    w = _consistent_weights(p, like_t)
    mixed = torch.bmm(w, Qbar_s)  # (B, N, K)
    return _normalize(like_ts * mixed).reshape(*x_t.shape, K)


def categorical_kl(q: Tensor, p: Tensor) -> Tensor:
    """KL(q || p) = sum_k q_k (log q_k - log p_k) over the last dim, with 0 log 0 = 0.

    p is clamped at the dtype's smallest normal number, so a p that underflowed to 0 where q > 0
    gives a large finite KL instead of inf / NaN.

    Args:
        q, p: (..., K) probabilities.

    Returns:
        (...) nats.
    """
    tiny = torch.finfo(p.dtype).tiny
    return (torch.xlogy(q, q) - q * p.clamp_min(tiny).log()).sum(-1)


def gumbel_sample(log_probs: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Gumbel-max draw from Cat(exp(log_probs)): argmax(log_probs + g), g ~ Gumbel(0, 1).

    Returns:
        (ids (...) int64, the Gumbel noise (..., K)).
    """
    if noise is None:
        tiny = torch.finfo(log_probs.dtype).tiny
        u = torch.rand(log_probs.shape, dtype=log_probs.dtype, device=log_probs.device, generator=generator)
        noise = -torch.log(-torch.log(u.clamp(tiny, 1 - torch.finfo(u.dtype).eps)))
    return (log_probs + noise).argmax(-1), noise


def _log(p: Tensor) -> Tensor:
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


# ------------------------------------------------------------------------ transitions
class MixingTransition(nn.Module):
    """Q_t = (1 - beta_t) I + beta_t 1 pi^T: uniform, absorbing or data-marginal noise.

    Args:
        alpha_bar: (T + 1,) float64 schedule table.
        pi: (K,) stationary distribution, or None to be filled later by :meth:`set_pi`
            (the "marginal" transition filled from training data). Stored in checkpoints when
            ``persistent`` (it is data-derived, not a hyperparameter).
    """

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

    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        nd = x0_probs.ndim
        return mixing_posterior(x_t, x0_probs, expand_to(self.alpha_bar[t], nd), expand_to(self.alpha_bar[s], nd), self.pi)

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

    def __init__(self, Q: Tensor) -> None:
        super().__init__()
        Q = Q.to(torch.float64)
        eye = torch.eye(Q.shape[-1], dtype=torch.float64)
        Qbar = [eye]
        for Q_t in Q:
            Qbar.append(Qbar[-1] @ Q_t)
        self.register_buffer("Q", Q, persistent=False)
        self.register_buffer("Qbar", torch.stack(Qbar), persistent=False)

    ready = True

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


# ------------------------------------------------------------------------ parametrizations
class CategoricalX0(X0BasedParametrization):
    """The network gives logits of p(x0 | x_t) over the ``num_classes`` data classes (never the
    mask); the reverse step is the mixture (C4). Simple loss: cross-entropy -log p(x0 | x_t)
    (DiGress; Austin et al. 2021's auxiliary loss), minimised by the exact q(x0 | x_t)."""

    name = "x0"

    def output_shape(self, process, x_t):
        return (*x_t.shape, process.num_classes)

    def x0_from_output(self, process, output, x_t, t):
        probs = output.float().softmax(-1) if output.dtype in (torch.float16, torch.bfloat16) else output.softmax(-1)
        return F.pad(probs, (0, process.num_states - process.num_classes))

    def simple_loss(self, process, output, x0, x_t, t, noise):
        logits = output.float() if output.dtype in (torch.float16, torch.bfloat16) else output
        return torch.logsumexp(logits, -1) - logits.gather(-1, x0.unsqueeze(-1)).squeeze(-1)

    def oracle_output(self, process, x0, x_t, t, noise):
        onehot = F.one_hot(x0, process.num_classes).bool()
        return torch.where(onehot, 0.0, LOG_TINY)


class CategoricalPreviousStep(PreviousStepParametrization):
    """The network gives logits of p(x_{t-1} | x_t) over all ``num_states`` states directly.
    Simple loss: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), the exact per-step term."""

    def output_shape(self, process, x_t):
        return (*x_t.shape, process.num_states)

    def reverse(self, process, output, x_t, t, s, eta=None):
        self.check_single_step(t, s)
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only")
        probs = output.softmax(-1)
        if process.num_states > process.num_classes:
            # x_0 is data: the absorbing mask state has probability 0 at s = 0.
            final = expand_to(s == 0, probs.ndim) & (torch.arange(process.num_states, device=probs.device) >= process.num_classes)
            probs = _normalize(probs.masked_fill(final, 0.0))
        return probs

    def simple_loss(self, process, output, x0, x_t, t, noise):
        q = process._posterior(x_t, x0, t, t - 1)
        return categorical_kl(q, output.softmax(-1))

    def oracle_output(self, process, x0, x_t, t, noise):
        return _log(process._posterior(x_t, x0, t, t - 1)).clamp_min(LOG_TINY)


# ------------------------------------------------------------------------ process
class CategoricalProcess(ForwardProcess):
    """Categorical diffusion over ``num_classes`` classes (D3PM, Austin et al. 2021; DiGress).

    Args:
        num_classes: K >= 1 data classes; data are int64 ids in [0, K). K = 1 (with "uniform") is
            the constant field of unlabelled graph nodes: never noised, zero loss.
        num_steps: T >= 1.
        transition: "uniform" (pi = 1/K), "absorbing" (pi = e_mask; adds one mask state with id
            ``num_classes``, so probabilities have K + 1 entries), "marginal" (pi = the data's
            class frequencies, DiGress), or a (T, K, K) tensor of row-stochastic matrices Q_t.
        schedule: "cosine" | "linear" | NoiseSchedule | betas (mixing kinds only).
        marginals: (K,) class frequencies for "marginal"; None leaves them to be filled from
            the training data (:meth:`set_marginals`, done by DiffusionModule).

    Raises:
        ValueError: bad num_classes, unknown transition, invalid marginals or matrices.
    """

    parametrizations = {"x0": CategoricalX0, "previous-step": CategoricalPreviousStep}

    def __init__(
        self,
        num_classes: int,
        num_steps: int = 500,
        transition: Union[TransitionName, Tensor] = "uniform",
        schedule: ScheduleLike = "cosine",
        marginals: Union[Sequence[float], Tensor, None] = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        if isinstance(transition, (Tensor, list, tuple)):
            Q = self._check_matrices(torch.as_tensor(transition, dtype=torch.float64), num_classes, num_steps)
            self.kind, self.num_states = "matrix", num_classes
            self.kernel: nn.Module = MatrixTransition(Q)
            self._num_steps = num_steps
            return
        kinds = ("absorbing", "marginal", "uniform")
        if transition not in kinds:
            raise ValueError(f"transition: unknown kind {transition!r}; expected one of {list(kinds)} or a (T, K, K) tensor")
        self.kind = transition
        self.num_states = num_classes + 1 if transition == "absorbing" else num_classes
        alpha_bar = make_schedule(schedule, num_steps).alpha_bar
        self._num_steps = num_steps
        if transition == "uniform":
            pi = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
        elif transition == "absorbing":
            pi = F.one_hot(torch.tensor(num_classes), num_classes + 1).to(torch.float64)
        else:
            pi = None if marginals is None else self._check_marginals(marginals)
        if marginals is not None and transition != "marginal":
            raise ValueError(f"marginals: only used with transition='marginal', got transition={transition!r}")
        self.kernel = MixingTransition(alpha_bar, pi, self.num_states, persistent=transition == "marginal")

    # -- construction helpers
    def _check_marginals(self, marginals) -> Tensor:
        m = torch.as_tensor(marginals, dtype=torch.float64).flatten()
        if m.numel() != self.num_classes:
            raise ValueError(f"marginals: expected {self.num_classes} class frequencies, got {m.numel()}")
        if not torch.isfinite(m).all() or (m < 0).any() or m.sum() <= 0:
            raise ValueError(f"marginals: expected non-negative finite frequencies with a positive sum, got {m.tolist()}")
        return m / m.sum()

    @staticmethod
    def _check_matrices(Q: Tensor, K: int, T: int) -> Tensor:
        if Q.shape != (T, K, K):
            raise ValueError(f"transition: expected a (T, K, K) = ({T}, {K}, {K}) tensor of matrices, got {tuple(Q.shape)}")
        if not torch.isfinite(Q).all() or (Q < 0).any():
            raise ValueError("transition: matrices must hold finite non-negative probabilities")
        err = (Q.sum(-1) - 1).abs().max().item()
        if err > 1e-6:
            raise ValueError(f"transition: every row of Q_t must sum to 1 (row-vector convention), max deviation {err:.2e}")
        return Q

    def set_marginals(self, marginals: Sequence[float] | Tensor) -> None:
        """Fill pi for transition='marginal' (normalized); stored in the state dict."""
        if self.kind != "marginal":
            raise ValueError(f"set_marginals: only for transition='marginal', this process uses {self.kind!r}")
        self.kernel.set_pi(self._check_marginals(marginals))

    @property
    def needs_marginals(self) -> bool:
        """True while a "marginal" transition still waits for its class frequencies."""
        return not self.kernel.ready

    def _ensure_ready(self) -> None:
        if not self.kernel.ready:
            raise ValueError(
                "marginals: transition='marginal' needs class frequencies; pass marginals=[...] or let "
                "DiffusionModule fill them from the training data (process.set_marginals(freqs))"
            )

    @property
    def num_steps(self) -> int:
        return self._num_steps

    @property
    def prior_probs(self) -> Tensor:
        """(num_states,) float64 p(x_T)."""
        self._ensure_ready()
        return self.kernel.prior(self.num_classes)

    # -- validation and conversion
    def validate_x0(self, x0, name: str = "x0") -> None:
        self._check_ids(x0, name, self.num_classes)

    def _check_ids(self, x: Tensor, name: str, high: int) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected an int64 Tensor of class ids, got {type(x).__name__}")
        if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
            raise TypeError(
                f"{name}: expected int64 class ids for a categorical field, got dtype {x.dtype}"
                + (" (probabilities are accepted as x0 by posterior() only)" if name == "x0" else "")
            )
        if x.ndim < 1:
            raise ValueError(f"{name}: expected shape (B, ...), got a scalar")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= high):
            bad = int(x.max()) if int(x.max()) >= high else int(x.min())
            hint = f" (id {self.num_classes} is the absorbing mask state, never valid in data)" if self.kind == "absorbing" and bad == self.num_classes else ""
            raise ValueError(f"{name}: found class id {bad}, expected ids in [0, {high}){hint}")

    def _probs(self, x: Tensor, name: str = "x0") -> Tensor:
        """Ids -> one-hot (..., num_states) float; probabilities (..., num_classes or num_states) -> padded."""
        if x.is_floating_point():
            if x.shape[-1] not in (self.num_classes, self.num_states):
                raise ValueError(f"{name}: probabilities need a last dim of {self.num_classes} (or {self.num_states}), got {x.shape[-1]}")
            return F.pad(x, (0, self.num_states - x.shape[-1]))
        self.validate_x0(x, name)
        return F.one_hot(x, self.num_states).to(torch.get_default_dtype())

    # -- primitives
    def marginal(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """q(x_t | x0) = Cat(x0 Qbar_t), (C1). x0: (B, ...) int64 ids or (B, ..., K) probs.

        Returns:
            (B, ..., num_states) probabilities.
        """
        self._ensure_ready()
        x0_probs = self._probs(x0)
        t = self.timesteps(t, x0_probs.shape[0], x0_probs.device)
        return self.kernel.marginal(x0_probs, t)

    def transition(self, x_s: Tensor, t: Tensor | int, s: Tensor | int) -> Tensor:
        """q(x_t | x_s) = Cat(x_s Q_{t|s}), (C2). x_s: (B, ...) int64 ids in [0, num_states)."""
        self._ensure_ready()
        self._check_ids(x_s, "x_s", self.num_states)
        t, s = self.step_pair(t, s, x_s.shape[0], x_s.device)
        return self.kernel.transition(F.one_hot(x_s, self.num_states).to(torch.get_default_dtype()), t, s)

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor | int, s: Tensor | int | None = None) -> Tensor:
        """q(x_s | x_t, x0), (C3); with x0 as probabilities, the mixture (C4).

        Args:
            x_t: (B, ...) int64 ids in [0, num_states).
            x0: (B, ...) int64 ids, or (B, ..., K) probabilities over the classes.
            t, s: (B,) int64 or ints, 0 <= s < t; s defaults to t - 1.

        Returns:
            (B, ..., num_states) probabilities of x_s.
        """
        self._ensure_ready()
        self._check_ids(x_t, "x_t", self.num_states)
        x0_probs = self._probs(x0)
        if x0_probs.shape[:-1] != x_t.shape:
            raise ValueError(f"x0: shape {tuple(x0.shape)} does not match x_t {tuple(x_t.shape)}")
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        return self.kernel.posterior(x_t, x0_probs, t, s)

    def _posterior(self, x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Tensor:
        x0_probs = x0 if x0.is_floating_point() else F.one_hot(x0, self.num_states).to(torch.get_default_dtype())
        return self.kernel.posterior(x_t, x0_probs, t, s)

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Noised:
        """x_t ~ Cat(x0 Qbar_t) by Gumbel-max.

        Returns:
            Noised(x_t (B, ...) int64, Gumbel noise (B, ..., num_states)).
        """
        self.validate_x0(x0)
        probs = self.marginal(x0, t)
        if noise is not None and noise.shape != probs.shape:
            raise ValueError(f"noise: expected Gumbel noise of shape {tuple(probs.shape)}, got {tuple(noise.shape)}")
        x_t, noise = gumbel_sample(_log(probs), noise, generator)
        return Noised(x_t, noise)

    def prior_sample(self, shape, *, device=None, generator=None, mask=None) -> Tensor:
        """x_T ~ p(x_T) (see :attr:`prior_probs`): (B, ...) int64; masked-out elements are 0."""
        log_p = _log(self.prior_probs.to(device=device, dtype=torch.float32))
        ids, _ = gumbel_sample(log_p.expand(*shape, self.num_states), generator=generator)
        return ids if mask is None else ids * mask.long()

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x0) || p(x_T)) per element (L_T), nats."""
        t = torch.full((x0.shape[0],), self.num_steps, dtype=torch.long, device=x0.device)
        q = self.kernel.marginal(F.one_hot(x0, self.num_states).to(torch.get_default_dtype()), t)
        return categorical_kl(q, self.prior_probs.to(q))

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return categorical_kl(q, p)

    def decoder_nll(self, x0: Tensor, p: Tensor) -> Tensor:
        """-log p(x0 | x_1) per element, nats."""
        return -_log(p.gather(-1, x0.unsqueeze(-1)).squeeze(-1))

    def reverse_from_x0(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, eta: float | None = None) -> Tensor:
        """p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t), (C4). x0_hat: (B, ..., num_states) probs."""
        if eta is not None:
            raise ValueError("eta: DDIM's eta applies to Gaussian fields only; a categorical reverse step has none")
        return self.kernel.posterior(x_t, x0_hat, t, s)

    def reverse_sample(self, p: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_s ~ Cat(p): (B, ...) int64."""
        return gumbel_sample(_log(p), generator=generator)[0]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_steps={self.num_steps}, transition={self.kind!r}"
