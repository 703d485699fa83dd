"""Gaussian (DDPM) diffusion formulas: marginals, posteriors, the eps / x0 / v conversions,
DDIM's step, the KL and the NLL.

Every formula is for any 0 <= s < t (docs/design.md), with alpha_{t|s} = alpha_bar_t / alpha_bar_s:

    q(x_t | x0)      = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)                       (G1)
    q(x_t | x_s)     = N(sqrt(alpha_{t|s}) x_s, (1 - alpha_{t|s}) I)                      (G2)
    q(x_s | x_t, x0) = N(mu, var I),                                                     (G3)
        mu  = sqrt(alpha_bar_s) (1 - alpha_{t|s}) / (1 - alpha_bar_t) x0
            + sqrt(alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t) x_t
        var = (1 - alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t)
    x0  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)                            (G4)
    v   = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0                                 (G5)
    x0  = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v                                  (G6)

Because mu in (G3) is linear in x0, the derived reverse step mu(x_t, E[x0 | x_t]) has the exact
mean of q(x_s | x_t) = E_{x0 ~ q(x0 | x_t)}[q(x_s | x_t, x0)] (docs/design.md (1)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "GaussianParams",
    "gaussian_marginal",
    "gaussian_transition",
    "gaussian_posterior",
    "ddim_reverse",
    "x0_from_eps",
    "eps_from_x0",
    "x0_from_v",
    "v_from_x0",
    "gaussian_kl",
    "gaussian_nll",
]


class GaussianParams(NamedTuple):
    """A diagonal Gaussian N(mean, variance). ``variance`` broadcasts against ``mean``."""

    mean: Tensor
    variance: Tensor


def gaussian_marginal(x0: Tensor, alpha_bar_t: Tensor) -> GaussianParams:
    """q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I), (G1); Ho et al. 2020 eq. 4.

    Args:
        x0: (B, ...) float clean data.
        alpha_bar_t: (B, 1, ..., 1) float, broadcastable to x0.

    Returns:
        GaussianParams with mean (B, ...) and variance (B, 1, ..., 1).
    """
    return GaussianParams(alpha_bar_t.sqrt() * x0, 1 - alpha_bar_t)


def gaussian_transition(x_s: Tensor, alpha_ts: Tensor) -> GaussianParams:
    """q(x_t | x_s) = N(sqrt(alpha_{t|s}) x_s, (1 - alpha_{t|s}) I), (G2).

    Args:
        x_s: (B, ...) float.
        alpha_ts: (B, 1, ..., 1) alpha_bar_t / alpha_bar_s.
    """
    return GaussianParams(alpha_ts.sqrt() * x_s, 1 - alpha_ts)


def gaussian_posterior(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor) -> GaussianParams:
    """q(x_s | x_t, x0) for any s < t, (G3); Ho et al. 2020 eqs. 6-7 for s = t - 1.

    Args:
        x_t: (B, ...) float noisy data at t.
        x0: (B, ...) float clean data (or an estimate of it).
        alpha_bar_t: (B, 1, ..., 1), with alpha_bar_t < alpha_bar_s.
        alpha_bar_s: (B, 1, ..., 1).

    Returns:
        GaussianParams: mean (B, ...), variance (B, 1, ..., 1) (0 where s = 0).
    """
    # Coefficients in the dtype of the alpha_bar arguments (pass float64 to avoid the
    # cancellation in 1 - alpha_{t|s} at small t), cast to the data's dtype before use.
    alpha_ts = alpha_bar_t / alpha_bar_s
    coef_x0 = alpha_bar_s.sqrt() * (1 - alpha_ts) / (1 - alpha_bar_t)
    coef_xt = alpha_ts.sqrt() * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    variance = (1 - alpha_ts) * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    dt = x_t.dtype
    return GaussianParams(coef_x0.to(dt) * x0 + coef_xt.to(dt) * x_t, variance.to(dt))


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), (G4); Ho et al. 2020 eq. 4 solved for x0."""
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t), the inverse of (G4)."""
    return (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v, (G6); Salimans & Ho 2022 sec. 4."""
    return alpha_bar_t.sqrt() * x_t - (1 - alpha_bar_t).sqrt() * v


def v_from_x0(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 with eps from (G4), i.e. (G5)."""
    eps = eps_from_x0(x_t, x0, alpha_bar_t)
    return alpha_bar_t.sqrt() * eps - (1 - alpha_bar_t).sqrt() * x0


def ddim_reverse(x_t: Tensor, x0_hat: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, eta: float) -> GaussianParams:
    """DDIM's generalized reverse step (Song et al. 2021 eq. 12), any s < t.

        sigma^2 = eta^2 var,  var from (G3)
        mean    = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat

    eta = 1 gives exactly q(x_s | x_t, x0_hat) of (G3); eta = 0 is the deterministic DDIM step.
    Written as mean = c0 x0_hat + ct x_t with ct = d / sqrt(1 - alpha_bar_t) and
    c0 = sqrt(alpha_bar_s) - ct sqrt(alpha_bar_t), d = sqrt(1 - alpha_bar_s - sigma^2): the
    coefficients are formed in the alpha_bar arguments' dtype (pass float64) and cast to x_t's.
    """
    alpha_ts = alpha_bar_t / alpha_bar_s
    variance = eta**2 * (1 - alpha_ts) * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    ct = (1 - alpha_bar_s - variance).clamp_min(0).sqrt() / (1 - alpha_bar_t).sqrt()
    c0 = alpha_bar_s.sqrt() - ct * alpha_bar_t.sqrt()
    dt = x_t.dtype
    return GaussianParams(c0.to(dt) * x0_hat + ct.to(dt) * x_t, variance.to(dt))


def gaussian_kl(q: GaussianParams, p: GaussianParams) -> Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per element, nats.

    KL = 0.5 (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1).
    Variances are clamped at the dtype's smallest normal number so a zero posterior variance
    (s = 0) stays finite; the ELBO selects the decoder term there.
    """
    tiny = torch.finfo(q.mean.dtype).tiny
    var_q = q.variance.clamp_min(tiny)
    var_p = p.variance.clamp_min(tiny)
    return 0.5 * (var_p.log() - var_q.log() + (var_q + (q.mean - p.mean) ** 2) / var_p - 1)


def gaussian_nll(x: Tensor, p: GaussianParams) -> Tensor:
    """-log N(x; mean, variance) per element, nats (a density: can be negative)."""
    var = p.variance.clamp_min(torch.finfo(x.dtype).tiny)
    return 0.5 * (math.log(2 * math.pi) + var.log() + (x - p.mean) ** 2 / var)
