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

from diffkit._checks import all_finite
from diffkit.parametrizations import PreviousStepParametrization, X0BasedParametrization
from diffkit.processes.base import ForwardProcess, Noised, at_least_float32, expand_to
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
    "inverse_cdf_sample",
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
    u = _mixing_posterior_unnormalized(x_t, x0_probs, alpha_bar_t, alpha_bar_s, pi)
    if u is None:
        return _mixing_posterior_dense(x_t, x0_probs, alpha_bar_t, alpha_bar_s, pi)
    total = u.sum(-1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
    return u.div_(total) if _may_write(x0_probs) else u / total


def _may_write(x: Tensor) -> bool:
    """Whether results derived from ``x`` may be edited in place (no autograd graph to keep)."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def _mixing_posterior_unnormalized(x_t: Tensor, x0_probs: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor) -> Tensor | None:
    """:func:`mixing_posterior` up to a positive factor per element, in two passes over (B, ..., K).

    With n = x_t, the likelihood Qbar_t[x0, n] = ab_t [x0 = n] + base_t, base_t = (1 - ab_t) pi[n],
    is one constant off the diagonal, so every term of (C3)-(C4) is a per-element scalar times p,
    pi or e_n. For base_t > 0 (every x0 consistent with n), with p' = p / sum(p), q = p'[n],
    r = 1 / base_t, peak = ab_t + base_t, base_ts = (1 - alpha_{t|s}) pi[n]:
        w = r p' + (1 / peak - r) q e_n,   S = sum(w) = r (1 - q) + q / peak
        u(x) = base_ts (ab_s r p'(x) + (1 - ab_s) S pi(x))                     for x != n
        u(n) = (base_ts + alpha_{t|s}) (ab_s q / peak + (1 - ab_s) S pi[n])   (no cancellation)
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
    u = x0_probs * coef_p
    if _may_write(x0_probs):
        u.addcmul_(coef_pi, pi_dt).scatter_(-1, ids, u_n)
    else:
        u = torch.addcmul(u, coef_pi, pi_dt).scatter(-1, ids, u_n)
    return u


def _mixing_coefficients(x_t: Tensor, p_n: Tensor, mass: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor, dt: torch.dtype) -> tuple[Tensor, Tensor, Tensor] | None:
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
    ab_t, ab_s = alpha_bar_t.to(f64).squeeze(-1), alpha_bar_s.to(f64).squeeze(-1)  # broadcast against x_t
    # Which x0 are consistent with x_t is decided on the data dtype's values, as the dense formula
    # does (a pi entry or a likelihood that underflows there is 0).
    pi_n = pi.to(device=x_t.device, dtype=dt)[x_t]
    base_dt = (1 - ab_t).to(dt) * pi_n
    all_consistent = base_dt > 0
    peak_positive = (ab_t.to(dt) + base_dt) > 0
    pi_n = pi_n.to(f64)
    base_t = (1 - ab_t) * pi_n
    peak = ab_t + base_t
    if bool(((all_consistent & ~(mass > 0)) | ~peak_positive).any()):
        return None
    q = torch.where(all_consistent, p_n / mass, 1.0)
    r = torch.where(all_consistent, 1 / base_t, 0.0)
    alpha_ts = ab_t / ab_s
    base_ts = (1 - alpha_ts) * pi_n
    S = r * (1 - q) + q / peak
    coef_p = base_ts * ab_s * r / mass
    coef_pi = base_ts * (1 - ab_s) * S
    u_n = (base_ts + alpha_ts) * (ab_s * q / peak + (1 - ab_s) * S * pi_n)
    return coef_p, coef_pi, u_n


def _mixing_posterior_dense(x_t: Tensor, x0_probs: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor) -> Tensor:
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


def inverse_cdf_sample(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ids from Cat(weights / sum(weights)) over the last dim with one uniform per row.

    Inverse CDF in two levels, so the only pass over all of (..., K) is one blocked sum: split the
    K classes into blocks of ~sqrt(K), pick a block by the CDF of the block sums at u * total, then
    a class inside it by the CDF of its weights (cumulated in float64) at the remainder. One uniform
    per row instead of K random numbers (Gumbel-max). A class of weight 0 is never drawn (rounding
    between the block sum and the block's own CDF is clamped to the block's last positive class); a
    row of zeros (or NaN) draws uniformly, as the Gumbel-max of equal log-probabilities does.
    Probabilities are exact up to the float rounding of the block sums (float32: ~1e-7 relative).

    Args:
        weights: (..., K) non-negative, need not be normalized.

    Returns:
        (...) int64 ids.
    """
    K = weights.shape[-1]
    lead = weights.shape[:-1]
    w = weights.reshape(-1, K)
    R, device, f64 = w.shape[0], w.device, torch.float64
    size = max(1, math.isqrt(K))  # block size
    cdf = _block_sums(w, size).to(f64).cumsum(-1)  # (R, blocks)
    total = cdf[:, -1:]
    u = torch.rand((R, 1), dtype=f64, device=device, generator=generator)
    v = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # strictly below the total
    block = torch.searchsorted(cdf, v, right=True).clamp_max(cdf.shape[1] - 1)  # (R, 1)
    before = torch.where(block > 0, cdf.gather(1, (block - 1).clamp_min(0)), 0.0)
    offsets = torch.arange(size, device=device)
    cols = block * size + offsets  # (R, size)
    inner = torch.where(cols < K, w.gather(1, cols.clamp_max(K - 1)), 0).to(f64)
    pick = torch.searchsorted(inner.cumsum(-1), v - before, right=True)
    last = torch.where(inner > 0, offsets, -1).amax(-1, keepdim=True)
    ids = (block * size + torch.minimum(pick, last)).squeeze(-1)
    uniform = (u.squeeze(-1) * K).long().clamp_max(K - 1)
    ok = (total.squeeze(-1) > 0) & (ids >= 0) & (ids < K)
    return torch.where(ok, ids, uniform).reshape(lead)


def _block_sums(w: Tensor, size: int) -> Tensor:
    """(R, K) -> (R, ceil(K / size)): sums over consecutive blocks of ``size`` columns, the last
    block holding the K % size columns left over."""
    R, K = w.shape
    full = K // size
    sums = w[:, : full * size].reshape(R, full, size).sum(-1)
    return torch.cat([sums, w[:, full * size :].sum(-1, keepdim=True)], 1) if full * size < K else sums


def _mixing_step_sample(logits: Tensor, x_t: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, pi: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
    """x_s ~ Cat(:func:`mixing_posterior` of softmax(logits)) without forming the (B, ..., S)
    posterior weights, nor the probabilities where they do not enter.

    The weights are u = coef_p p + coef_pi pi with u[x_t] = u_n (:func:`_mixing_coefficients`), so
    the block sums of :func:`inverse_cdf_sample` are coef_p (block sums of p) + coef_pi (block sums
    of pi), with x_t's own term swapped for u_n in its block (:func:`_mixing_block_draw`); then one
    block per element is gathered to draw the class inside it. coef_p is 0 where x_t is
    consistent with one x0 only (pi[x_t] = 0: an unmasked token under absorbing noise), so the
    softmax and the block sums of p (the passes over (B, ..., K)) run on the other elements only.
    Blocks: the K data classes in blocks of isqrt(K) (and a shorter last one), then the S - K extra
    states (the absorbing mask), on which p is 0 and is not stored (no padding copy). The weights
    inside a block are formed in float64; a class of weight 0 is never drawn. Same law and same
    uniforms (one per element) as inverse_cdf_sample(_mixing_posterior_unnormalized(...)): the
    draws agree except where a uniform falls within rounding of a CDF boundary.

    Args:
        logits: (B, ..., K) logits of x0 over the K data classes (K <= S); float16 / bfloat16 are
            taken to float32 for the softmax, as CategoricalX0.x0_from_output does.
        x_t: (B, ...) int64 ids in [0, S).
        alpha_bar_t, alpha_bar_s: (B, 1, ..., 1) with one more dim than x_t.
        pi: (S,) stationary distribution.

    Returns:
        (B, ...) int64 ids in [0, S), or None where the dense formula must decide (0 / 0 cases).
    """
    K, S = logits.shape[-1], pi.shape[0]
    lead, device, f64 = x_t.shape, logits.device, torch.float64
    dt = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
    R = x_t.numel()
    n = x_t.reshape(R)
    # Elements whose weights involve p: every x0 consistent with x_t (as in _mixing_coefficients).
    ab_t = alpha_bar_t.squeeze(-1).expand(lead).reshape(R)
    uses_p = ((1 - ab_t).to(dt) * pi.to(device=device, dtype=dt)[n]) > 0  # (R,)
    every = bool(uses_p.all())
    rows = None if every else uses_p.nonzero().squeeze(1)  # (R',)
    flat = logits.reshape(R, K)
    sel = flat if every else flat.index_select(0, rows)  # (R', K)
    w = at_least_float32(sel).softmax(-1)  # (R', K) probabilities
    Rs = w.shape[0]
    lay = _block_layout(pi, K, dt)
    P = _block_sums(w, lay.size)
    if S > K:
        P = torch.cat([P, w.new_zeros(Rs, 1)], 1)  # the extra states: p = 0
    P = P.to(f64)  # (R', blocks)
    n_sel = n if every else n[rows]
    p_n_sel = torch.where(n_sel < K, w.gather(1, n_sel.clamp_max(K - 1).unsqueeze(1)).squeeze(1).to(f64), 0.0)
    if every:
        p_n, mass = p_n_sel, P.sum(-1)
    else:  # p_n, mass are unused where p does not enter
        p_n = torch.zeros(R, dtype=f64, device=device).index_copy_(0, rows, p_n_sel)
        mass = torch.ones(R, dtype=f64, device=device).index_copy_(0, rows, P.sum(-1))
    coefs = _mixing_coefficients(x_t, p_n.reshape(lead), mass.reshape(lead), alpha_bar_t, alpha_bar_s, pi, dt)
    if coefs is None:
        return None
    coef_p, coef_pi, u_n = (c.expand(lead).reshape(R, 1) for c in coefs)
    u = torch.rand((R, 1), dtype=f64, device=device, generator=generator)  # one per element, in order
    if every:
        return _mixing_block_draw(lay, w, P, n, p_n_sel.unsqueeze(1), coef_p, coef_pi, u_n, u).reshape(lead)
    # Elsewhere u = coef_pi pi + u_n e_n; coef_pi = 0 there (pi[x_t] = 0: x_s = x_t) but in corners
    # (an alpha_bar_t that rounds to 1 in the data dtype), which the dense formula decides.
    if not bool(((coef_pi.squeeze(1) == 0) & (u_n.squeeze(1) > 0) | uses_p).all()):
        return None
    ids = n.clone()
    if Rs:
        ids[rows] = _mixing_block_draw(lay, w, P, n_sel, p_n_sel.unsqueeze(1), coef_p[rows], coef_pi[rows], u_n[rows], u[rows])
    return ids.reshape(lead)


# From this many classes on, the categorical x0 step uses _mixing_step_sample: below it, the few
# passes over a small (B, ..., K) cost less than the fused sampler's O(B·L·sqrt(K)) float64 block
# work and its fixed per-call ops (measured with one thread: 1.2-1.4x slower at K <= 256 for B·L =
# 256; 0.3-0.7x the time at K = 1024).
_FUSED_MIN_CLASSES = 512


class _BlockLayout:
    """The blocks of :func:`_mixing_step_sample` for S states, K of them data classes: blocks of
    ``size`` = isqrt(K) classes, a shorter one for the rest of the K, then one for the S - K extra
    states; per block its padded columns (nb, m) and what the draw reads from them."""

    def __init__(self, pi: Tensor, K: int, dt: torch.dtype) -> None:
        S, device, f64 = pi.shape[0], pi.device, torch.float64
        self.size = size = max(1, math.isqrt(K))
        full, rem, extra = K // size, K % size, S - K
        starts = list(range(0, full * size, size)) + ([full * size] if rem else []) + ([K] if extra else [])
        ends = starts[1:] + [S]
        m = max(size, rem, extra)
        self.nb, self.S = len(starts), S
        self.starts = torch.tensor(starts, device=device)  # (nb,)
        offsets = torch.arange(m, device=device)
        self.offsets = offsets  # (m,)
        cols = self.starts.unsqueeze(1) + offsets  # (nb, m)
        valid = cols < torch.tensor(ends, device=device).unsqueeze(1)
        self.cols = torch.where(valid, cols, -1)  # -1: never a state
        self.p_cols = cols.clamp_max(K - 1)
        self.p_mask = (valid & (cols < K)).to(f64)
        self.pi64 = pi.to(dt).to(f64)  # (S,), zero where the data dtype's pi is
        self.pi_tab = torch.where(valid, self.pi64[cols.clamp_max(S - 1)], 0.0)  # (nb, m)
        self.Pi = self.pi_tab.sum(-1)  # (nb,)
        self.col_block = torch.searchsorted(self.starts, torch.arange(S, device=device), right=True) - 1  # (S,)
        self.zero = torch.zeros((), dtype=f64, device=device)


_LAYOUTS: dict = {}


def _block_layout(pi: Tensor, K: int, dt: torch.dtype) -> _BlockLayout:
    """The cached :class:`_BlockLayout` of this pi tensor (rebuilt when it is edited in place)."""
    key = (id(pi), pi._version, K, dt, pi.device)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is pi:
        return hit[1]
    if len(_LAYOUTS) >= 64:
        _LAYOUTS.clear()
    lay = _BlockLayout(pi, K, dt)
    _LAYOUTS[key] = (pi, lay)
    return lay


def _mixing_block_draw(lay: _BlockLayout, w: Tensor, P: Tensor, n: Tensor, p_n: Tensor, coef_p: Tensor, coef_pi: Tensor, u_n: Tensor, u: Tensor) -> Tensor:
    """The two-level inverse-CDF draw of :func:`_mixing_step_sample` for R rows of weights
    coef_p p + coef_pi pi with weight u_n at n, given the block sums of p.

    The block holding n sums to coef_p (P - p[n]) + coef_pi (Pi - pi[n]) + u_n: the differences are
    exact where p (pi) has no other mass in the block (a float sum of non-negatives is at least each
    term), so a block whose weights are all 0 has sum 0 and is never drawn.

    Args:
        lay: the block layout.
        w: (R, K) probabilities p over the data classes (0 on the S - K extra states, not stored).
        P: (R, nb) float64 sums of p over the blocks (0 for the extra states' block).
        n: (R,) int64 ids in [0, S) (x_t).
        p_n: (R, 1) float64 p[n] (0 for an extra state).
        coef_p, coef_pi, u_n: (R, 1) float64.
        u: (R, 1) float64 uniforms.

    Returns:
        (R,) int64 ids in [0, S).
    """
    own = lay.col_block[n].unsqueeze(1)  # (R, 1)
    W = torch.addcmul(coef_pi * lay.Pi, coef_p, P)  # (R, nb) block sums of the weights
    rest_p = P.gather(1, own) - p_n
    rest_pi = (lay.Pi[own] - lay.pi64[n].unsqueeze(1))
    W.scatter_(1, own, torch.addcmul(torch.addcmul(u_n, coef_p, rest_p), coef_pi, rest_pi))
    cdf = W.cumsum(-1)
    total = cdf[:, -1:]
    v = torch.minimum(u * total, torch.nextafter(total, lay.zero))  # strictly below the total
    block = torch.searchsorted(cdf, v, right=True).clamp_max(lay.nb - 1)  # (R, 1)
    before = F.pad(cdf, (1, 0)).gather(1, block)
    b = block.squeeze(1)
    pv = w.gather(1, lay.p_cols[b]).to(torch.float64).mul_(lay.p_mask[b])
    inner = torch.addcmul(coef_pi * lay.pi_tab[b], coef_p, pv)
    inner = torch.where(lay.cols[b] == n.unsqueeze(1), u_n, inner)  # (R, m) the block's weights
    pick = torch.searchsorted(inner.cumsum(-1), v - before, right=True)
    last = torch.where(inner > 0, lay.offsets, -1).amax(-1, keepdim=True)
    ids = (lay.starts[block] + torch.minimum(pick, last)).squeeze(-1)
    uniform = (u.squeeze(-1) * lay.S).long().clamp_max(lay.S - 1)
    ok = (total.squeeze(-1) > 0) & (last.squeeze(-1) >= 0)
    return torch.where(ok, ids, uniform)

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

    def sample_marginal(self, x0: Tensor, t: Tensor, u: Tensor) -> Tensor:
        """x_t ~ alpha_bar_t e_x0 + (1 - alpha_bar_t) pi from uniforms u (shape of x0), in float64:
        keep x0 where u < alpha_bar_t, else the inverse CDF of pi at (u - alpha_bar_t) / (1 - alpha_bar_t)
        (uniform on [0, 1) given u >= alpha_bar_t)."""
        ab = expand_to(self.alpha_bar[t], x0.ndim)
        u = u.to(torch.float64)
        cdf, last = self._pi_cdf()
        v = ((u - ab) / (1 - ab)).clamp(0, 1) * cdf[-1]
        # The first class whose cdf exceeds v; never past the last class with pi > 0 (rounding).
        draw = torch.searchsorted(cdf, v, right=True).clamp_max(last)
        return torch.where(u < ab, x0, draw)

    def _pi_cdf(self) -> tuple[Tensor, int]:
        """(cumsum(pi) in float64, the last id with pi > 0), cached until pi changes."""
        pi = self.pi
        key = (pi.data_ptr(), pi._version, pi.device)
        cached = self.__dict__.get("_cdf_cache")
        if cached is None or cached[0] != key:
            positive = (pi > 0).nonzero()
            last = int(positive.max()) if positive.numel() else pi.shape[0] - 1
            cached = self.__dict__["_cdf_cache"] = (key, pi.cumsum(0), last)
        return cached[1], cached[2]

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
    guidance = "log_probs"  # guided p(x0 | x_t) ~ p_c^(1 + w) p_null^(-w) (diffkit.guidance)

    def output_shape(self, process, x_t):
        return (*x_t.shape, process.num_classes)

    def x0_from_output(self, process, output, x_t, t):
        probs = at_least_float32(output).softmax(-1)
        extra = process.num_states - process.num_classes
        return F.pad(probs, (0, extra)) if extra else probs

    def simple_loss(self, process, output, x0, x_t, t, noise):
        logits = at_least_float32(output)
        return torch.logsumexp(logits, -1) - logits.gather(-1, x0.unsqueeze(-1)).squeeze(-1)

    def mean_simple_loss(self, process, output, x0, x_t, t, noise):
        # F.cross_entropy's mean: the same -log softmax(output)[x0], averaged, in one op.
        if type(self).simple_loss is CategoricalX0.simple_loss and output.shape == (*x0.shape, process.num_classes):
            logits = at_least_float32(output)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x0.reshape(-1))
        return super().mean_simple_loss(process, output, x0, x_t, t, noise)

    def oracle_output(self, process, x0, x_t, t, noise):
        onehot = F.one_hot(x0, process.num_classes).bool()
        return torch.where(onehot, 0.0, LOG_TINY)


class CategoricalPreviousStep(PreviousStepParametrization):
    """The network gives logits of p(x_{t-1} | x_t) over all ``num_states`` states directly.
    Simple loss: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), the exact per-step term."""

    guidance = "log_probs"  # guided p(x_{t-1} | x_t) ~ p_c^(1 + w) p_null^(-w) (diffkit.guidance)

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
    def exact_infill(self) -> bool:  # type: ignore[override]
        """Absorbing noise infills exactly: a known token is never masked (``diffkit.infill``)."""
        return self.kind == "absorbing"

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
        """Ids -> one-hot (..., num_states) float; probabilities (..., num_classes or num_states) -> padded.

        Public entry points only (marginal, posterior): probabilities are checked to be a
        distribution, which costs a device sync; inner loops use :meth:`_posterior` / the kernel.
        """
        if x.is_floating_point():
            if x.shape[-1] not in (self.num_classes, self.num_states):
                raise ValueError(f"{name}: probabilities need a last dim of {self.num_classes} (or {self.num_states}), got {x.shape[-1]}")
            self._check_distribution(x, name)
            return F.pad(x, (0, self.num_states - x.shape[-1]))
        self.validate_x0(x, name)
        return F.one_hot(x, self.num_states).to(torch.get_default_dtype())

    @staticmethod
    def _check_distribution(x: Tensor, name: str) -> None:
        """Raise unless every row (last dim) of ``x`` is finite, >= 0 and sums to 1.

        The tolerance on the sums is max(1e-4, K * the dtype's eps), so float32 / bfloat16
        softmax outputs pass.
        """
        K = x.shape[-1]
        if x.numel() == 0:
            return
        if not all_finite(x):
            raise ValueError(f"{name}: expected probabilities over the {K} classes in the last dim, found NaN or inf (not finite)")
        low = float(x.min())
        if low < 0:
            raise ValueError(f"{name}: expected probabilities >= 0 in the last dim, found a negative value {low:.4g}")
        sums = x.double().sum(-1)
        tol = max(1e-4, K * torch.finfo(x.dtype).eps)
        worst = float((sums - 1).abs().max())
        if worst > tol:
            raise ValueError(
                f"{name}: expected probabilities whose rows (last dim) sum to 1 within {tol:.1e}, found sums from "
                f"{float(sums.min()):.4g} to {float(sums.max()):.4g}"
            )

    def _check_reachable(self, x_t: Tensor, x0: Tensor, t: Tensor) -> None:
        """Raise unless q(x_t | x0) > 0 for every element (ids x0; computed in float64)."""
        like = self.kernel.marginal(F.one_hot(x0, self.num_states).to(torch.float64), t)
        like = like.gather(-1, x_t.unsqueeze(-1)).squeeze(-1)  # q(x_t | x0), shape of x_t
        bad = like <= 0
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"x_t: id {int(x_t[first])} at index {first} cannot come from x0 = {int(x0[first])} at t = {int(t[first[0]])} "
                f"(q(x_t | x0) = 0 under transition={self.kind!r}; {int(bad.sum())} element(s) like this), so "
                "q(x_s | x_t, x0) is undefined; pass an x_t that q(x_t | x0) can produce, or x0 as probabilities"
            )

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

        Raises:
            ValueError: probabilities that are not a distribution (NaN / inf, negative, rows
                not summing to 1); ids x0 that cannot produce x_t (q(x_t | x0) = 0).
        """
        self._ensure_ready()
        self._check_ids(x_t, "x_t", self.num_states)
        x0_probs = self._probs(x0)
        if x0_probs.shape[:-1] != x_t.shape:
            raise ValueError(f"x0: shape {tuple(x0.shape)} does not match x_t {tuple(x_t.shape)}")
        t, s = self.step_pair(t, s, x_t.shape[0], x_t.device)
        if not x0.is_floating_point():
            self._check_reachable(x_t, x0, t)
        return self.kernel.posterior(x_t, x0_probs, t, s)

    def _posterior(self, x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Tensor:
        x0_probs = x0 if x0.is_floating_point() else F.one_hot(x0, self.num_states).to(torch.get_default_dtype())
        return self.kernel.posterior(x_t, x0_probs, t, s)

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Noised:
        """x_t ~ Cat(x0 Qbar_t).

        Mixing transitions (uniform, absorbing, marginal) draw one uniform u per element: x_t = x0
        where u < alpha_bar_t, else the inverse CDF of pi at (u - alpha_bar_t) / (1 - alpha_bar_t),
        i.e. exactly alpha_bar_t e_x0 + (1 - alpha_bar_t) pi, in O(B·L) work and memory. Matrix
        transitions (and given Gumbel noise of shape (B, ..., num_states)) use Gumbel-max over
        x0 Qbar_t.

        Returns:
            Noised(x_t (B, ...) int64, noise): the float64 uniforms (B, ...) for mixing
            transitions, else the Gumbel noise (B, ..., num_states); passing it back reproduces x_t.
        """
        self.validate_x0(x0)
        probs_shape = (*x0.shape, self.num_states)
        gumbel = noise is not None and tuple(noise.shape) == probs_shape
        if isinstance(self.kernel, MixingTransition) and not gumbel:
            self._ensure_ready()
            t = self.timesteps(t, x0.shape[0], x0.device)
            if noise is None:
                noise = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
            elif noise.shape != x0.shape:
                raise ValueError(
                    f"noise: expected Gumbel noise of shape {probs_shape}, got {tuple(noise.shape)} (a mixing "
                    f"transition also takes one uniform per element, shape {tuple(x0.shape)})"
                )
            elif not noise.is_floating_point():
                raise TypeError(f"noise: expected floating-point uniforms in [0, 1), got dtype {noise.dtype}")
            return Noised(self.kernel.sample_marginal(x0, t, noise), noise)
        probs = self.marginal(x0, t)
        if noise is not None and noise.shape != probs.shape:
            raise ValueError(f"noise: expected Gumbel noise of shape {tuple(probs.shape)}, got {tuple(noise.shape)}")
        x_t, noise = gumbel_sample(_log(probs), noise, generator)
        return Noised(x_t, noise)

    def _q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Noised:
        if noise is None and isinstance(self.kernel, MixingTransition):
            self._ensure_ready()
            noise = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
            return Noised(self.kernel.sample_marginal(x0, t, noise), noise)
        return self.q_sample(x0, t, noise, generator)

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
        """x_s ~ Cat(p): (B, ...) int64, by the inverse CDF (:func:`inverse_cdf_sample`)."""
        return inverse_cdf_sample(p, generator)

    def _step(self, output, x_t, t, s, param, generator=None, eta=None, same=None):
        """The x0 parametrization under mixing noise: softmax, then (from ``_FUSED_MIN_CLASSES``
        classes on) :func:`_mixing_step_sample` (block sums of p, one gathered block per element; the
        posterior weights are never formed), else the weights of
        :func:`_mixing_posterior_unnormalized` (no normalization pass), and for the 0 / 0 cases those
        of :func:`_mixing_posterior_dense`, each with one inverse-CDF draw per element; the same law
        as reverse_sample(param.reverse(...))."""
        fast = (
            eta is None
            and isinstance(self.kernel, MixingTransition)
            and isinstance(param, CategoricalX0)
            and type(param).x0_from_output is CategoricalX0.x0_from_output
            and isinstance(output, Tensor)
            and output.is_floating_point()
            and output.shape == (*x_t.shape, self.num_classes)
        )
        if not fast:
            return super()._step(output, x_t, t, s, param, generator, eta, same)
        nd = output.ndim
        ab = self.kernel.alpha_bar
        ab_t, ab_s = expand_to(ab[t], nd), expand_to(ab[s], nd)
        if self.num_classes >= _FUSED_MIN_CLASSES:
            # The softmax of x0_from_output (without its padding to num_states: the sampler treats
            # the extra states as p = 0) and the draw, fused: no (B, ..., S) posterior weights.
            ids = _mixing_step_sample(output, x_t, ab_t, ab_s, self.kernel.pi, generator)
            if ids is not None:
                return ids
        x0_hat = param.x0_from_output(self, output, x_t, t)
        weights = _mixing_posterior_unnormalized(x_t, x0_hat, ab_t, ab_s, self.kernel.pi)
        if weights is None:
            weights = _mixing_posterior_dense(x_t, x0_hat, ab_t, ab_s, self.kernel.pi)
        return inverse_cdf_sample(weights, generator)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_steps={self.num_steps}, transition={self.kind!r}"
