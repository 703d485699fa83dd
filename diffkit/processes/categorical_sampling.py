"""Drawing class ids: Gumbel-max, the two-level inverse CDF, and the fused reverse draw of the
mixing family (the posterior weights of :mod:`diffkit.processes.categorical_formulas` summed by
blocks, never formed in full).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.processes.base import at_least_float32
from diffkit.processes.categorical_formulas import _mixing_coefficients

__all__ = ["gumbel_sample", "inverse_cdf_sample", "check_rows_drawable", "FUSED_MIN_CLASSES"]


def gumbel_sample(
    log_probs: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
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
    row of zeros (or NaN / inf) raises (:func:`check_rows_drawable`).
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
    check_rows_drawable((total.squeeze(-1) > 0) & total.squeeze(-1).isfinite() & (ids >= 0) & (ids < K), "weights")
    return ids.reshape(lead)


def check_rows_drawable(ok: Tensor, name: str) -> None:
    """Raise unless every row could be drawn from (one host sync).

    A row of weights that is all zero, or holds NaN / inf, has no distribution to draw from; it
    comes from a non-finite network output or a broken posterior, and drawing uniformly instead
    would hide it (and can put the absorbing mask id into "clean" samples).

    Raises:
        ValueError: naming how many rows failed.
    """
    if not bool(ok.all()):
        raise ValueError(
            f"{name}: {int((~ok).sum())} of {ok.numel()} rows of categorical weights are all zero or not finite, "
            "so no class can be drawn; check the denoiser's output for NaN / inf"
        )


def _block_sums(w: Tensor, size: int) -> Tensor:
    """(R, K) -> (R, ceil(K / size)): sums over consecutive blocks of ``size`` columns, the last
    block holding the K % size columns left over."""
    R, K = w.shape
    full = K // size
    sums = w[:, : full * size].reshape(R, full, size).sum(-1)
    return torch.cat([sums, w[:, full * size :].sum(-1, keepdim=True)], 1) if full * size < K else sums


def _mixing_step_sample(
    logits: Tensor,
    x_t: Tensor,
    alpha_bar_t: Tensor,
    alpha_bar_s: Tensor,
    pi: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor | None:
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
    alpha_bar_rows = alpha_bar_t.squeeze(-1).expand(lead).reshape(R)
    uses_p = ((1 - alpha_bar_rows).to(dt) * pi.to(device=device, dtype=dt)[n]) > 0  # (R,)
    every = bool(uses_p.all())
    rows = None if every else uses_p.nonzero().squeeze(1)  # (R',)
    flat = logits.reshape(R, K)
    sel = flat if rows is None else flat.index_select(0, rows)  # (R', K)
    w = at_least_float32(sel).softmax(-1)  # (R', K) probabilities
    Rs = w.shape[0]
    lay = _BlockLayout(pi, K, dt)
    P = _block_sums(w, lay.size)
    if S > K:
        P = torch.cat([P, w.new_zeros(Rs, 1)], 1)  # the extra states: p = 0
    P = P.to(f64)  # (R', blocks)
    n_sel = n if rows is None else n[rows]
    p_n_sel = torch.where(n_sel < K, w.gather(1, n_sel.clamp_max(K - 1).unsqueeze(1)).squeeze(1).to(f64), 0.0)
    if rows is None:  # every element
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
        ids[rows] = _mixing_block_draw(
            lay, w, P, n_sel, p_n_sel.unsqueeze(1), coef_p[rows], coef_pi[rows], u_n[rows], u[rows]
        )
    return ids.reshape(lead)


# From this many classes on, the categorical x0 step uses _mixing_step_sample: below it, the few
# passes over a small (B, ..., K) cost less than the fused sampler's O(B·L·sqrt(K)) float64 block
# work and its fixed per-call ops (measured with one thread: 1.2-1.4x slower at K <= 256 for B·L =
# 256; 0.3-0.7x the time at K = 1024).
FUSED_MIN_CLASSES = 512


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


def _mixing_block_draw(
    lay: _BlockLayout,
    w: Tensor,
    P: Tensor,
    n: Tensor,
    p_n: Tensor,
    coef_p: Tensor,
    coef_pi: Tensor,
    u_n: Tensor,
    u: Tensor,
) -> Tensor:
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
    rest_pi = lay.Pi[own] - lay.pi64[n].unsqueeze(1)
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
    check_rows_drawable((total.squeeze(-1) > 0) & total.squeeze(-1).isfinite() & (last.squeeze(-1) >= 0), "weights")
    return ids
