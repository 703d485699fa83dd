"""Deterministic few-step solvers for Gaussian fields: DDIM (eta = 0) and DPM-Solver++(2M).

Both walk a decreasing list of integer times t_0 > t_1 > ... > t_M = 0 and read the network only
through the parametrization's public conversion ``x0_from_output`` (so eps, x0 and v models all
work, and a plug-in parametrization with its own conversion too). With

    alpha_t = sqrt(alpha_bar_t),  sigma_t = sqrt(1 - alpha_bar_t),  lambda_t = log(alpha_t / sigma_t)

and x0_i the data prediction at t_i:

* DDIM, eta = 0 (Song et al. 2021 eq. 12):
      x_{t_{i+1}} = alpha_{t_{i+1}} x0_i + sigma_{t_{i+1}} (x_{t_i} - alpha_{t_i} x0_i) / sigma_{t_i}
* DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2; multistep, data prediction):
      h_i = lambda_{t_{i+1}} - lambda_{t_i}
      D_i = x0_i                                                 (first step, and the last: t = 0)
      D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1},   r_i = h_{i-1} / h_i   (otherwise)
      x_{t_{i+1}} = (sigma_{t_{i+1}} / sigma_{t_i}) x_{t_i} - alpha_{t_{i+1}} (exp(-h_i) - 1) D_i
  The step into t = 0 (sigma = 0, lambda = inf) is the first-order one, which returns x0_i itself
  (as ``lower_order_final`` does in the reference implementation).

The first-order DPM-Solver++ step equals the DDIM step: (sigma_s / sigma_t) x_t + alpha_s (1 - sigma_s alpha_t
/ (sigma_t alpha_s)) x0 is the DDIM update rearranged.

Coefficients are formed in float64 from the process's alpha_bar (one grid for the batch) and cast
to the data's dtype.

Time grids (:func:`time_grid`) follow the names of Lin et al. 2024 ("Common diffusion noise
schedules and sample steps are flawed", Table 2), in this library's convention that t = T is
the noisiest step and t = 0 is clean data:

* "linspace": round(linspace(T, 0, M + 1)), the default of :func:`diffkit.sample`;
* "trailing": T, T - T/M, ..., rounded, then 0: starts at T like linspace;
* "leading": k c + 1 for k = M - 1, ..., 0 with c = T // M, then 0: never visits t = T.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from diffkit.parametrizations import Parametrization, X0BasedParametrization

__all__ = [
    "SamplerName",
    "TimeGrid",
    "SAMPLERS",
    "TIME_GRIDS",
    "time_grid",
    "ddim_sample",
    "dpmpp_2m_sample",
    "x0_prediction",
]

SamplerName = Literal["ancestral", "ddim", "dpmpp_2m"]
TimeGrid = Literal["linspace", "trailing", "leading"]
Denoiser = Callable[[Tensor, Tensor], Tensor]
X0Transform = Callable[[Tensor], Tensor]


def _linspace(T: int, steps: int) -> list[int]:
    return torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long().tolist()


def _trailing(T: int, steps: int) -> list[int]:
    ts = [round(T - i * T / steps) for i in range(steps)]
    return ts + [0]


def _leading(T: int, steps: int) -> list[int]:
    c = T // steps
    return [k * c + 1 for k in range(steps - 1, -1, -1)] + [0]


#: name -> (T, steps) -> decreasing list of steps + 1 ints ending at 0.
TIME_GRIDS: dict[str, Callable[[int, int], list[int]]] = {
    "linspace": _linspace,
    "trailing": _trailing,
    "leading": _leading,
}


def time_grid(num_steps: int, steps: int, kind: TimeGrid = "linspace") -> list[int]:
    """A decreasing list of ``steps + 1`` integer times from (at most) T down to 0.

    Args:
        num_steps: T of the process.
        steps: number of jumps M, 1 <= M <= T.
        kind: "linspace" | "trailing" | "leading" (module docstring).

    Raises:
        ValueError: unknown kind (lists the valid ones), or M outside 1..T.
    """
    if kind not in TIME_GRIDS:
        raise ValueError(f"kind: unknown time grid {kind!r}; expected one of {sorted(TIME_GRIDS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_steps:
        raise ValueError(f"steps: expected 1 <= steps <= T = {num_steps}, got {steps!r}")
    return TIME_GRIDS[kind](num_steps, steps)


def _alpha_bar(process: Any, t: int) -> float:
    """alpha_bar_t as a Python float (float64), through the process's public ``alpha_bar_at``."""
    return float(process.alpha_bar_at(torch.tensor([t]), torch.empty(1, dtype=torch.float64)))


def x0_prediction(
    process: Any, denoiser: Denoiser, param: Parametrization, x: Tensor, t: int, x0_transform: X0Transform | None = None
) -> Tensor:
    """x0_hat = param.x0_from_output(process.mean_output(denoiser(x_t, t))), then ``x0_transform`` (clipping,
    thresholding) if given; ``mean_output`` drops the variance channels of a learned-variance model."""
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    x0 = param.x0_from_output(process, process.mean_output(denoiser(x, tt), x), x, tt)
    return x0 if x0_transform is None else x0_transform(x0)


def _check(param: Parametrization, sampler: str) -> None:
    if not isinstance(param, X0BasedParametrization):
        raise ValueError(
            f"sampler: {sampler!r} needs an x0 estimate from the network; parametrization {param.name!r} "
            "predicts the previous step only: use sampler='ancestral' with all T steps"
        )


def ddim_sample(
    process: Any,
    denoiser: Denoiser,
    x: Tensor,
    param: Parametrization,
    timesteps: Sequence[int],
    x0_transform: X0Transform | None = None,
) -> Tensor:
    """Deterministic DDIM (eta = 0) from x = x_{t_0} through ``timesteps`` down to 0 (module docstring).

    Args:
        process: a Gaussian process (``alpha_bar_at``).
        denoiser: ``denoiser(x_t, t)``.
        x: (B, ...) float x_{t_0} (the prior draw).
        param: an x0-based parametrization.
        timesteps: decreasing ints ending at 0.
        x0_transform: optional map applied to every x0 estimate (e.g. clipping).

    Returns:
        (B, ...) x_0, the last x0 estimate.
    """
    _check(param, "ddim")
    for t, s in zip(timesteps[:-1], timesteps[1:], strict=True):
        x0 = x0_prediction(process, denoiser, param, x, t, x0_transform)
        alpha_bar_t, alpha_bar_s = _alpha_bar(process, t), _alpha_bar(process, s)
        c_eps = math.sqrt(max(1 - alpha_bar_s, 0.0) / (1 - alpha_bar_t))
        # x_s = alpha_s x0 + sigma_s (x_t - alpha_t x0) / sigma_t
        x = torch.add(x * c_eps, x0, alpha=math.sqrt(alpha_bar_s) - c_eps * math.sqrt(alpha_bar_t))
    return x


def _lambda(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(alpha_bar / (1 - alpha_bar)); inf at alpha_bar = 1."""
    return math.inf if alpha_bar >= 1 else 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


def dpmpp_2m_sample(
    process: Any,
    denoiser: Denoiser,
    x: Tensor,
    param: Parametrization,
    timesteps: Sequence[int],
    x0_transform: X0Transform | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022 Algorithm 2) from x = x_{t_0} through ``timesteps`` to 0.

    One network call per jump; second order from the second jump on, first order into t = 0.
    Arguments and result as :func:`ddim_sample`.
    """
    _check(param, "dpmpp_2m")
    prev_x0: Tensor | None = None
    prev_h = 0.0
    for t, s in zip(timesteps[:-1], timesteps[1:], strict=True):
        x0 = x0_prediction(process, denoiser, param, x, t, x0_transform)
        alpha_bar_t, alpha_bar_s = _alpha_bar(process, t), _alpha_bar(process, s)
        h = _lambda(alpha_bar_s) - _lambda(alpha_bar_t)
        if math.isinf(h):  # into t = 0: the first-order step returns x0 itself
            return x0
        if prev_x0 is None:
            d = x0
        else:
            r = prev_h / h
            d = torch.add(x0 * (1 + 1 / (2 * r)), prev_x0, alpha=-1 / (2 * r))
        sigma_ratio = math.sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t))
        x = torch.add(x * sigma_ratio, d, alpha=-math.sqrt(alpha_bar_s) * math.expm1(-h))
        prev_x0, prev_h = x0, h
    return x


#: sampler name -> solver, None for the ancestral chain of :func:`diffkit.sample` itself.
SAMPLERS: dict[str, Callable[..., Tensor] | None] = {
    "ancestral": None,
    "ddim": ddim_sample,
    "dpmpp_2m": dpmpp_2m_sample,
}
