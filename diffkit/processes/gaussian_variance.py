"""Learned reverse variances for Gaussian fields (Nichol & Dhariwal 2021, "Improved DDPM", sec. 3.1).

With ``GaussianProcess(reverse_variance="learned")`` the denoiser emits twice the channels of the
data along dim 1: the first half is the parametrization's usual output (eps, x0 or v), the second
half v_raw in [-1, 1] (roughly; it is not clamped) interpolating, per element, between the two
natural variances of a jump t -> s (Nichol & Dhariwal eq. 15, generalized from s = t - 1):

    beta_{t|s}       = 1 - alpha_bar_t / alpha_bar_s                     (forward jump variance)
    beta_tilde_{t|s} = beta_{t|s} (1 - alpha_bar_s) / (1 - alpha_bar_t)  (posterior variance, (G3))
    frac             = (v_raw + 1) / 2
    log var          = frac log beta_{t|s} + (1 - frac) log beta_tilde_{t|s}

beta_tilde_{t|0} = 0, so its log is clipped at log beta_tilde_{2|1} (improved-diffusion's
``posterior_log_variance_clipped``: the t = 1 row takes the t = 2 value).

Training uses the hybrid loss L_simple + lambda L_vlb where, in L_vlb, the mean half of the output
is detached (``stop_gradient``, Nichol & Dhariwal sec. 3.1): the KL terms train only the
variance, the simple loss only the mean. ``loss="kl"`` trains both through the KL.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "split_learned_output",
    "interpolated_log_variance",
    "frozen_mean_output",
    "check_learned_output",
    "learned_reverse",
]


def check_learned_output(output: Tensor, x_t: Tensor) -> None:
    """Raise unless ``output`` has x_t's shape with dim 1 doubled (mean channels, then variance channels).

    Raises:
        ValueError: naming the shapes found and expected.
    """
    expected = (x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:]) if x_t.ndim >= 2 else None
    if expected is None or tuple(output.shape) != expected:
        raise ValueError(
            f"denoiser output: reverse_variance='learned' needs the mean channels and as many variance channels "
            f"along dim 1, shape {expected} for x_t of shape {tuple(x_t.shape)}, got {tuple(output.shape)}; "
            "build the denoiser with twice the output channels (e.g. MLPDenoiser(..., learn_variance=True))"
        )


def split_learned_output(output: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor]:
    """(mean output, v_raw): the two halves of a learned-variance output along dim 1, each x_t's shape."""
    check_learned_output(output, x_t)
    mean, v = output.chunk(2, dim=1)
    return mean, v


def frozen_mean_output(output: Tensor) -> Tensor:
    """The output with its mean half detached: the KL term of the hybrid loss reaches the variance only."""
    mean, v = output.chunk(2, dim=1)
    return torch.cat([mean.detach(), v], dim=1)


def interpolated_log_variance(
    v_raw: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, min_log_posterior: float
) -> Tensor:
    """log var = frac log beta_{t|s} + (1 - frac) log max(beta_tilde_{t|s}, exp(min)), frac = (v_raw + 1) / 2.

    Args:
        v_raw: (B, ...) network output.
        alpha_bar_t, alpha_bar_s: (B, 1, ..., 1) float64 (or the data's dtype), s < t.
        min_log_posterior: the clip of log beta_tilde (log beta_tilde_{2|1}).

    Returns:
        (B, ...) log variance in v_raw's dtype.
    """
    beta = 1 - alpha_bar_t / alpha_bar_s
    log_beta = beta.log()
    log_tilde = (beta * (1 - alpha_bar_s) / (1 - alpha_bar_t)).clamp_min(math.exp(min_log_posterior)).log()
    frac = (v_raw + 1) / 2
    return frac * log_beta.to(v_raw.dtype) + (1 - frac) * log_tilde.to(v_raw.dtype)


def learned_reverse(process: Any, param: Any, output: Tensor, x_t: Tensor, t: Tensor, s: Tensor) -> Any:
    """p(x_s | x_t) = N(mu(x_t, x0_hat), exp(log var)) with the mean from the parametrization's
    x0 estimate ((G3)) and the interpolated variance; GaussianParams with a per-element variance."""
    from diffkit.processes.gaussian import GaussianParams

    mean_out, v_raw = split_learned_output(output, x_t)
    x0_hat = param.x0_from_output(process, mean_out, x_t, t)
    mean = process.posterior(x_t, x0_hat, t, s).mean
    alpha_bar = process.alpha_bar
    alpha_bar_t = alpha_bar[t].reshape(-1, *([1] * (x_t.ndim - 1)))
    alpha_bar_s = alpha_bar[s].reshape(-1, *([1] * (x_t.ndim - 1)))
    min_log = (
        math.log(float((1 - alpha_bar[2] / alpha_bar[1]) * (1 - alpha_bar[1]) / (1 - alpha_bar[2])))
        if alpha_bar.shape[0] > 2
        else math.log(float(1 - alpha_bar[1]))
    )
    log_var = interpolated_log_variance(v_raw, alpha_bar_t, alpha_bar_s, min_log)
    return GaussianParams(mean, log_var.exp())
