"""The one reverse loop: from the prior through any decreasing list of times down to t = 0.

Each step is x_s ~ p(x_s | x_t) with p derived from the network's output through the
parametrization (DESIGN.md (1)); x0-based parametrizations take any s < t, so the same trained
network samples with every step or with a stride. The loop is the same for every process,
Gaussian, categorical or a ProductProcess of both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess
from diffkit.solvers import SAMPLERS, SamplerName

__all__ = ["sampling_timesteps", "sample"]

Denoiser = Callable[[Any, Tensor], Any]


def sampling_timesteps(num_steps: int, steps: int | None = None) -> list[int]:
    """Evenly strided decreasing times [T, ..., 0] with ``steps`` jumps.

    Args:
        num_steps: T of the process.
        steps: number of reverse steps (1..T); None means all T (every s = t - 1).

    Returns:
        A list of ``steps + 1`` distinct ints, first T, last 0.

    Raises:
        ValueError: if steps is outside 1..T.
    """
    steps = num_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_steps:
        raise ValueError(f"num_steps: expected 1 <= number of sampling steps <= T = {num_steps}, got {steps!r}")
    ts = torch.linspace(num_steps, 0, steps + 1, dtype=torch.float64).round().long()
    return ts.tolist()


def _check_timesteps(timesteps: Sequence[int], num_steps: int) -> list[int]:
    ts = [int(t) for t in timesteps]
    if len(ts) < 2 or ts[-1] != 0 or ts[0] > num_steps or any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps: expected a strictly decreasing list from <= T = {num_steps} down to 0, got {ts}")
    return ts


@torch.no_grad()
def sample(
    process: ForwardProcess,
    denoiser: Denoiser,
    shape: Any,
    parametrization: str | Parametrization | dict = "x0",
    *,
    num_steps: int | None = None,
    timesteps: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    mask: Tensor | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    sampler: SamplerName = "ancestral",
) -> Any:
    """Run the reverse chain x_T -> ... -> x_0.

    Args:
        process: the forward process the denoiser was trained for.
        denoiser: called as ``denoiser(x_t, t)`` with t a (B,) int64 tensor.
        shape: data shape (B, ...), or for a ProductProcess a dict field -> shape.
        parametrization: how to read the denoiser's output (a dict per field for a ProductProcess).
        num_steps: number of reverse steps, evenly strided; None = all T.
        timesteps: an explicit decreasing list [t_0 = T', ..., 0] (overrides num_steps).
        generator: makes the run reproducible; its device is the sampling device.
        eta: DDIM's eta for Gaussian fields (None: ancestral with the process's variance).
        mask: (B, N) bool node mask for padded data (ProductProcess).
        device: where to sample (default: the generator's device, else CPU).
        progress: show a tqdm bar over the steps.
        sampler: "ancestral" (this loop: x_s ~ p(x_s | x_t) at every jump, strided or not; every
            process), or a deterministic solver for Gaussian fields (``diffkit.solvers``): "ddim"
            (eta = 0) or "dpmpp_2m" (DPM-Solver++(2M)), one network call per jump over the same grid.

    Returns:
        x0 samples: a Tensor (B, ...) or a dict of Tensors.

    Raises:
        ValueError: an unknown sampler (the message lists them), ``eta`` with a deterministic
            solver, or a solver on a process that does not declare ``supports_gaussian_solvers``.
    """
    solver = _resolve_sampler(process, sampler, eta)
    ts = _check_timesteps(timesteps, process.num_steps) if timesteps is not None else sampling_timesteps(process.num_steps, num_steps)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    param = process.get_parametrization(parametrization)
    x = process.prior_sample(shape, device=device, generator=generator, mask=None if mask is None else mask.to(device))
    batch = next(iter(shape.values()))[0] if isinstance(shape, dict) else shape[0]
    pairs = list(zip(ts[:-1], ts[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="sampling", leave=False)
    # The schedule was checked once above (ints, 0 <= s < t <= T), so each jump goes to the
    # unchecked step with (t, s) as ints: per-jump scalar coefficients, no per-step validation.
    if solver is not None:
        return solver(process, denoiser, x, param, ts)
    t = torch.full((batch,), ts[0], dtype=torch.long, device=device)
    for t_i, s_i in pairs:
        x, t = _jump(process, denoiser, x, t, t_i, s_i, param, generator, eta)
    return x


def _resolve_sampler(process: ForwardProcess, sampler: str, eta: float | None) -> Callable[..., Any] | None:
    """The solver of :data:`diffkit.solvers.SAMPLERS` named ``sampler`` (None: the ancestral loop)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)}")
    solver = SAMPLERS[sampler]
    if solver is None:
        return None
    if eta is not None:
        raise ValueError(f"eta: sampler {sampler!r} is deterministic and takes no eta (got {eta}); use sampler='ancestral' with eta for DDIM's stochastic steps")
    if not process.supports_gaussian_solvers:
        raise ValueError(
            f"sampler: {sampler!r} solves the probability-flow ODE of a Gaussian field; {type(process).__name__} "
            "does not support it (categorical and product processes sample with sampler='ancestral', strided or not)"
        )
    return solver


def _jump(process: ForwardProcess, denoiser: Denoiser, x: Any, t: Tensor, t_i: int, s_i: int, param: Any, generator: torch.Generator | None, eta: float | None) -> tuple[Any, Tensor]:
    """One iteration of :func:`sample`'s loop: x_t -> x_s for ints 0 <= s_i < t_i <= T (checked by
    the caller), ``t`` the (B,) int64 tensor of t_i. Returns (x_s, s as a (B,) tensor), so the next
    jump reuses s as its t: one new time tensor per step. ``benchmarks/speed.py`` times this."""
    s = torch.full(t.shape, s_i, dtype=torch.long, device=t.device)
    return process._step(denoiser(x, t), x, t, s, param, generator, eta, (t_i, s_i)), s
