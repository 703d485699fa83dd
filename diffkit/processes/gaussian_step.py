"""The Gaussian reverse step as x_s = P output + Q x_t + sigma z, with scalar coefficients.

For an x0-based parametrization whose estimate is linear, x0_hat = a_out output + a_x x_t (eps
(G4), x0, v (G6) of ``gaussian.py``), the reverse mean is linear in (output, x_t) too:

    ancestral (G3): mean = c0 x0_hat + ct x_t,
        c0 = sqrt(alpha_bar_s) (1 - alpha_{t|s}) / (1 - alpha_bar_t),
        ct = sqrt(alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t)
    DDIM (Song et al. 2021 eq. 12):
        mean = sqrt(alpha_bar_s) x0_hat + d (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t),
        d = sqrt(1 - alpha_bar_s - sigma^2), sigma^2 = eta^2 var(G3)

so P = c0 a_out and Q = c0 a_x + ct. When every example of the batch shares (t, s), as in
:func:`~diffkit.sample`, these are Python floats computed in float64, and the step is three fused
ops instead of the dozen of ``reverse_sample(reverse(...))``, with the same law and the same
draw of z from the generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["JumpCoefficients", "jump_coefficients", "fused_step"]


class JumpCoefficients(NamedTuple):
    """p(x_s | x_t) = N(P output + Q x_t, variance), drawn with std ``sigma`` (0 at s = 0)."""

    P: float
    Q: float
    variance: float
    sigma: float


def jump_coefficients(
    alpha_bar_t: float,
    alpha_bar_s: float,
    s_is_zero: bool,
    x0_coefficients: Callable[[float], tuple[float, float]],
    eta: float | None,
    forward_variance: bool,
) -> JumpCoefficients:
    """The scalar coefficients of one jump t -> s (see the module docstring).

    Args:
        alpha_bar_t, alpha_bar_s: the schedule at t and s (s < t).
        s_is_zero: whether s = 0 (the last step returns the mean).
        x0_coefficients: alpha_bar_t -> (a_out, a_x) of the parametrization.
        eta: DDIM's eta, or None for the ancestral step.
        forward_variance: the process's ``reverse_variance == "forward"`` (1 - alpha_{t|s});
            else the posterior variance of (G3), with the forward one at s = 0 (the decoder).
    """
    alpha_ts = alpha_bar_t / alpha_bar_s
    forward = 1 - alpha_ts
    posterior = forward * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    if eta is None:
        variance = forward if (forward_variance or s_is_zero) else posterior
        c0 = math.sqrt(alpha_bar_s) * forward / (1 - alpha_bar_t)
        ct = math.sqrt(alpha_ts) * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    else:
        variance = eta**2 * posterior
        ct = math.sqrt(max(1 - alpha_bar_s - variance, 0.0)) / math.sqrt(1 - alpha_bar_t)
        c0 = math.sqrt(alpha_bar_s) - ct * math.sqrt(alpha_bar_t)
    a_out, a_x = x0_coefficients(alpha_bar_t)
    return JumpCoefficients(c0 * a_out, c0 * a_x + ct, variance, 0.0 if s_is_zero else math.sqrt(variance))


def fused_step(
    output: Tensor, x_t: Tensor, coefs: JumpCoefficients, generator: torch.Generator | None = None
) -> Tensor:
    """x_s = P output + Q x_t + sigma z, z ~ N(0, I) drawn as ``torch.randn(x_t.shape)`` would
    (also at s = 0, where it is not used, so the generator's stream matches the general path).

    Args:
        output: (B, ...) the denoiser's output; x_t: (B, ...) the same shape and dtype.
    """
    mean = torch.add(x_t * coefs.Q, output, alpha=coefs.P)
    if coefs.sigma != 0.0:
        return torch.normal(mean, coefs.sigma, generator=generator)  # draws z as torch.randn does
    torch.randn(x_t.shape, dtype=x_t.dtype, device=x_t.device, generator=generator)  # keep the stream
    return mean
