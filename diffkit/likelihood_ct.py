"""The NLL bound of a continuous-time process: a stratified Monte Carlo estimate of the ELBO's integral.

    -log p(x0) <= L_prior + int_0^1 E_{x_t ~ q(x_t | x0)} [ l(x_t, x0, t) ] dt

(``ContinuousTimeProcess``; l is ``process.vlb``'s integrand). With N points and, per example, one
shift u ~ U[0, 1), the times are t_k = (k + 1 - u) / N for k = 0..N-1 (one in each stratum
((k) / N, (k + 1) / N]) and x_{t_k} ~ q(x_t | x0) is drawn independently at each:

    I_hat = (1 / N) sum_k l(x_{t_k}, x0, t_k)

is unbiased for the integral (each t_k is uniform on its stratum). Its variance is
(1 / N^2) sum_k Var_k, Var_k the variance of l over t uniform in stratum k and x_t: the part due
to t shrinks like O(1 / N^3) for a smooth mean integrand, the part due to the x_t draws like
O(1 / N) (each draw is used once). Averaged over many held-out examples the bound's Monte Carlo
error is small next to model differences (see docs/benchmarks.md, "Continuous time").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffkit.likelihood import NLLBound
from diffkit.parametrizations import ParametrizationLike
from diffkit.processes.base import ForwardProcess

__all__ = ["continuous_nll_bound", "DEFAULT_NUM_POINTS"]

#: Integration points of the continuous ELBO when ``nll_bound(num_points=None)``.
DEFAULT_NUM_POINTS = 128


@torch.no_grad()
def continuous_nll_bound(
    process: ForwardProcess,
    denoiser: Callable[[Any, Tensor], Any],
    x0: Tensor,
    parametrization: ParametrizationLike = "x0",
    generator: torch.Generator | None = None,
    per_step: bool = False,
    num_points: int | None = None,
) -> NLLBound:
    """Stratified estimate of the continuous-time bound (module docstring); N denoiser calls.

    Args:
        process: a process with ``is_continuous_time``.
        denoiser: ``denoiser(x_t, t)`` with t a (B,) float32 tensor in (0, 1].
        x0: (B, ...) clean batch.
        parametrization: how to read the denoiser's output.
        generator: for the shifts u and the x_t draws.
        per_step: keep the N terms (1 / N) l(x_{t_k}, x0, t_k) summed over elements as
            ``NLLBound.steps`` (B, N), column k the stratum ((k) / N, (k + 1) / N].
        num_points: N >= 1 (default :data:`DEFAULT_NUM_POINTS`).

    Returns:
        NLLBound(prior, diffusion = the integral's estimate, decoder = 0, ...): alpha(0) = 1, so
        the discrete chain's decoder term has no continuous-time counterpart.
    """
    n = DEFAULT_NUM_POINTS if num_points is None else num_points
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_points: expected an int >= 1, got {num_points!r}")
    process.validate_x0(x0)
    param = process.get_parametrization(parametrization)
    prior = process.prior_term(x0)
    batch, device = prior.shape[0], prior.device
    u = torch.rand(batch, dtype=torch.float64, device=device, generator=generator)
    diffusion = torch.zeros_like(prior)
    terms = []
    for k in range(n):
        t = ((k + 1 - u) / n).to(torch.get_default_dtype())
        x_t = process.q_sample(x0, t, generator=generator).x_t
        term = process.vlb(denoiser(x_t, t), x0, x_t, t, param) / n
        diffusion = diffusion + term
        if per_step:
            terms.append(term)
    steps = torch.stack(terms, 1) if per_step else None
    return NLLBound(prior, diffusion, torch.zeros_like(prior), process.num_elements(x0), steps)
