"""Bounded data for Gaussian fields: x0 clipping, dynamic thresholding, and the discretized
Gaussian decoder of 8-bit data.

* ``clip_x0``: x0_hat clamped to the data range [-1, 1] (Ho et al. 2020's sampler for images).
* ``dynamic_threshold`` (Saharia et al. 2022, "Imagen", sec. 2.3): per example, s = max(1, the
  ``percentile`` quantile of |x0_hat|); x0_hat -> clamp(x0_hat, -s, s) / s.
  Both are ``x0_transform`` arguments of :func:`diffkit.solvers.ddim_sample` / ``dpmpp_2m_sample``.
* ``discretized_gaussian_log_likelihood`` (Ho et al. 2020 eq. 13): data in [-1, 1] scaled from
  {0, ..., 255}; bin i covers [x - 1/255, x + 1/255] and the edge bins extend to -inf / +inf, so
  the 256 probabilities sum to one and -log p is a code length: bits/dim comparable to papers.
  ``GaussianProcess(decoder="discretized")`` uses it for the L_0 term.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["clip_x0", "dynamic_threshold", "discretized_gaussian_log_likelihood", "BIN_HALF_WIDTH"]

#: Half the width of one of the 256 bins of 8-bit data scaled to [-1, 1].
BIN_HALF_WIDTH = 1.0 / 255.0


def clip_x0(x0: Tensor) -> Tensor:
    """x0_hat clamped to [-1, 1]."""
    return x0.clamp(-1.0, 1.0)


def dynamic_threshold(x0: Tensor, percentile: float = 0.995) -> Tensor:
    """Imagen's dynamic thresholding: s = max(1, quantile_p |x0| per example); clamp to [-s, s], divide by s.

    Args:
        x0: (B, ...) float x0 estimates.
        percentile: p in (0, 1].

    Returns:
        (B, ...) in [-1, 1].
    """
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile: expected a value in (0, 1], got {percentile}")
    flat = x0.reshape(x0.shape[0], -1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp_min(1.0).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _log_cdf_std_normal(z: Tensor) -> Tensor:
    return torch.special.log_ndtr(z)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    """log P(bin of x) under N(mean, variance) discretized to 256 bins of [-1, 1] (Ho et al. 2020 eq. 13).

    Args:
        x: (B, ...) float data on the grid {-1, -1 + 2/255, ..., 1} (8-bit values scaled to [-1, 1]).
        mean: (B, ...) decoder mean.
        variance: variance broadcastable to x (> 0).

    Returns:
        (B, ...) float log-probabilities (<= 0), nats. Bins: [x - 1/255, x + 1/255], with x = -1
        extending to -inf and x = 1 to +inf.
    """
    std = variance.clamp_min(torch.finfo(x.dtype).tiny).sqrt()
    upper = (x - mean + BIN_HALF_WIDTH) / std
    lower = (x - mean - BIN_HALF_WIDTH) / std
    log_cdf_upper = _log_cdf_std_normal(upper)  # log P(X <= x + half)
    log_sf_lower = _log_cdf_std_normal(-lower)  # log P(X >= x - half)
    # middle bins: log(Phi(upper) - Phi(lower)), in the tail where it is larger computed from the other side
    mid = torch.where(
        lower > 0,
        log_sf_lower + torch.log1p(-torch.exp(_log_cdf_std_normal(-upper) - log_sf_lower).clamp_max(1 - 1e-12)),
        log_cdf_upper + torch.log1p(-torch.exp(_log_cdf_std_normal(lower) - log_cdf_upper).clamp_max(1 - 1e-12)),
    )
    edge = 1 - 0.5 * BIN_HALF_WIDTH
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, mid))


def bits_per_dim(nats_per_dim: Tensor | float) -> Tensor | float:
    """nats -> bits."""
    return nats_per_dim / math.log(2.0)
