"""Categorical (D3PM / DiGress) diffusion formulas: marginals, posteriors and the KL.

Row-vector convention (docs/design.md): q(x_t | x_{t-1}) = Cat(x_{t-1} Q_t), Qbar_t = Q_1 ... Q_t,
Q_{t|s} = Q_{s+1} ... Q_t. Class ids are int64; probabilities live in the last dim (K).

    q(x_t | x0)      = Cat(x0 Qbar_t)                                                    (C1)
    q(x_t | x_s)     = Cat(x_s Q_{t|s})                                                  (C2)
    q(x_s | x_t, x0) = (x_t Q_{t|s}^T) * (x0 Qbar_s) / (x0 Qbar_t x_t^T)                 (C3)
    p(x_s | x_t)     = sum_x0 q(x_s | x_t, x0) p(x0 | x_t)                               (C4)

(C4) with p(x0 | x_t) = q(x0 | x_t) is exactly q(x_s | x_t) (docs/design.md (1)); writing w(x0) =
p(x0) / Qbar_t[x0, x_t], it is (x_t Q_{t|s}^T) * (w Qbar_s), normalized: O(K) memory per element,
never K x K per element. Candidates x0 with Qbar_t[x0, x_t] = 0 cannot have produced x_t; they get
weight 0 (so the mixture is renormalized over the x0 consistent with x_t).

Mixing family (uniform, absorbing, marginal): Q_t = (1 - beta_t) I + beta_t 1 pi^T, so
Qbar_{t|s} = alpha_{t|s} I + (1 - alpha_{t|s}) 1 pi^T with alpha_{t|s} = alpha_bar_t / alpha_bar_s:
every row-vector product above is a closed form in O(K).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit._checks import check_values

__all__ = ["LOG_TINY", "mixing_marginal", "mixing_posterior", "categorical_posterior", "categorical_kl"]

#: log of float32's smallest normal number: a finite stand-in for log(0) in logits.
LOG_TINY = math.log(torch.finfo(torch.float32).tiny)


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
    u = _mixing_posterior_unnormalized(x_t, x0_probs, alpha_bar_t, alpha_bar_s, pi)
    if u is None:
        return _mixing_posterior_dense(x_t, x0_probs, alpha_bar_t, alpha_bar_s, pi)
    total = u.sum(-1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
    return u / total


def _mixing_posterior_unnormalized(
    x_t: Tensor, x0_probs: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor
) -> Tensor | None:
    """:func:`mixing_posterior` up to a positive factor per element, in two passes over (B, ..., K).

    With n = x_t, the likelihood Qbar_t[x0, n] = alpha_bar_t [x0 = n] + base_t, base_t = (1 - alpha_bar_t) pi[n],
    is one constant off the diagonal, so every term of (C3)-(C4) is a per-element scalar times p,
    pi or e_n. For base_t > 0 (every x0 consistent with n), with p' = p / sum(p), q = p'[n],
    r = 1 / base_t, peak = alpha_bar_t + base_t, base_ts = (1 - alpha_{t|s}) pi[n]:
        w = r p' + (1 / peak - r) q e_n,   S = sum(w) = r (1 - q) + q / peak
        u(x) = base_ts (alpha_bar_s r p'(x) + (1 - alpha_bar_s) S pi(x))                     for x != n
        u(n) = (base_ts + alpha_{t|s}) (alpha_bar_s q / peak + (1 - alpha_bar_s) S pi[n])   (no cancellation)
    For base_t = 0 only x0 = n is consistent: q = 1, r = 0, so u = u(n) e_n. The per-element
    scalars are formed in float64.

    Returns:
        (B, ..., K) non-negative weights, or None where the dense formula must decide (some p with
        zero mass, or an x_t that no x0 can produce: 0 / 0 cases).
    """
    dt = x0_probs.dtype
    ids = x_t.unsqueeze(-1)
    mass = x0_probs.sum(-1).to(torch.float64)
    p_n = x0_probs.gather(-1, ids).squeeze(-1).to(torch.float64)
    coefs = _mixing_coefficients(x_t, p_n, mass, alpha_bar_t, alpha_bar_s, pi, dt)
    if coefs is None:
        return None
    coef_p, coef_pi, u_n = (c.to(dt).unsqueeze(-1) for c in coefs)
    pi_dt = pi.to(device=x0_probs.device, dtype=dt)
    return torch.addcmul(x0_probs * coef_p, coef_pi, pi_dt).scatter(-1, ids, u_n)


def _mixing_coefficients(
    x_t: Tensor, p_n: Tensor, mass: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor, dt: torch.dtype
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The per-element float64 scalars of :func:`_mixing_posterior_unnormalized`'s weights
    u = coef_p p + coef_pi pi, with u[x_t] = u_n (see there for the formulas).

    Args:
        x_t: (B, ...) int64 ids in [0, S).
        p_n: (B, ...) float64 p[x_t] (0 where x_t is a state p puts no mass on).
        mass: (B, ...) float64 sum(p) over the last dim.
        alpha_bar_t, alpha_bar_s: (B, 1, ..., 1) with one more dim than x_t.
        pi: (S,) stationary distribution.
        dt: the data dtype, in which consistency with x_t is decided (as the dense formula does).

    Returns:
        (coef_p, coef_pi, u_n), each (B, ...) float64, or None for the dense formula's 0 / 0 cases.
    """
    f64 = torch.float64
    alpha_bar_t, alpha_bar_s = alpha_bar_t.to(f64).squeeze(-1), alpha_bar_s.to(f64).squeeze(-1)  # broadcast against x_t
    # Which x0 are consistent with x_t is decided on the data dtype's values, as the dense formula
    # does (a pi entry or a likelihood that underflows there is 0).
    pi_n = pi.to(device=x_t.device, dtype=dt)[x_t]
    base_dt = (1 - alpha_bar_t).to(dt) * pi_n
    all_consistent = base_dt > 0
    peak_positive = (alpha_bar_t.to(dt) + base_dt) > 0
    pi_n = pi_n.to(f64)
    base_t = (1 - alpha_bar_t) * pi_n
    peak = alpha_bar_t + base_t
    # The 0 / 0 cases (p with no mass on x_t's consistent x0, or an x_t no x0 can produce) only come
    # from inputs q(x_t | x0) cannot produce; inside trusted_values (x_t drawn from q, p a softmax)
    # they cannot occur, and the check's host sync is skipped.
    if check_values() and bool(((all_consistent & ~(mass > 0)) | ~peak_positive).any()):
        return None
    q = torch.where(all_consistent, p_n / mass, 1.0)
    r = torch.where(all_consistent, 1 / base_t, 0.0)
    alpha_ts = alpha_bar_t / alpha_bar_s
    base_ts = (1 - alpha_ts) * pi_n
    S = r * (1 - q) + q / peak
    coef_p = base_ts * alpha_bar_s * r / mass
    coef_pi = base_ts * (1 - alpha_bar_s) * S
    u_n = (base_ts + alpha_ts) * (alpha_bar_s * q / peak + (1 - alpha_bar_s) * S * pi_n)
    return coef_p, coef_pi, u_n


def _mixing_posterior_dense(
    x_t: Tensor, x0_probs: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor
) -> Tensor:
    """:func:`mixing_posterior` term by term over (B, ..., K): the reference the fast path is tested
    against, and the fallback for its 0 / 0 cases."""
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
    p = torch.where(
        mass > 0, p / torch.where(mass > 0, mass, torch.ones_like(mass)), uniform / uniform.sum(-1, keepdim=True)
    )
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


def _log(p: Tensor) -> Tensor:
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()
