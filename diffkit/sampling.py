"""The one reverse loop: from the prior through any decreasing list of times down to t = 0.

Each step is x_s ~ p(x_s | x_t) with p derived from the network's output through the
parametrization (docs/design.md (1)); x0-based parametrizations take any s < t, so the same trained
network samples with every step or with a stride. The loop is the same for every process,
Gaussian, categorical or a ProductProcess of both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from diffkit._checks import trusted_values
from diffkit.guidance import check_cond, check_guidance_scale, guided_output
from diffkit.infill import check_known, check_resample_rounds, impose_known, renoise
from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess, sampling_timesteps
from diffkit.sampling_cache import CachingDenoiser, SamplingStats, counting_denoiser
from diffkit.solvers import SAMPLERS, SamplerName

__all__ = ["sampling_timesteps", "sample", "check_grid", "SamplingStats"]

Denoiser = Callable[[Any, Tensor], Any]


def check_grid(timesteps: Sequence[int], num_steps: int) -> list[int]:
    """Validate an explicit time grid: ints, strictly decreasing from T to 0.

    Raises:
        ValueError: naming the grid and what was expected (a grid that starts below T would
            start from noise the network was not trained to see at that t).
    """
    ts = [int(t) for t in timesteps]
    if len(ts) < 2 or ts[0] != num_steps or ts[-1] != 0 or any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(
            f"timesteps: expected a strictly decreasing list of ints from T = {num_steps} down to 0, got {ts}"
        )
    return ts


def check_can_stride(param: Parametrization | dict, grid: Sequence[int]) -> None:
    """Raise if the grid has a jump of more than one step and a parametrization cannot stride."""
    params = param.values() if isinstance(param, dict) else [param]
    jump = max(a - b for a, b in zip(grid, grid[1:], strict=False))
    bad = [p.name for p in params if not p.can_stride]
    if jump > 1 and bad:
        raise ValueError(
            f"num_steps: parametrization {bad[0]!r} predicts p(x_{{t-1}} | x_t) directly and cannot jump from t to "
            f"s < t - 1 (the grid has a jump of {jump} steps); sample with all T steps (num_steps=None) or train "
            "an x0-based parametrization ('eps', 'x0', 'v') to stride"
        )


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
    cond: Tensor | int | None = None,
    guidance_scale: float = 0.0,
    known: Any = None,
    known_mask: Any = None,
    resample_rounds: int = 1,
    sampler: SamplerName = "ancestral",
    cache: bool | None = None,
    stats: SamplingStats | None = None,
) -> Any:
    """Run the reverse chain x_T -> ... -> x_0.

    Calls, in order, the process's public hooks ``get_parametrization``, ``sampling_grid`` (unless
    ``timesteps`` is given), ``prior_sample`` and, for each jump t -> s of the grid, the denoiser
    and ``step(output, x_t, t, s, ...)`` with t and s Python ints. Inputs are checked once here;
    the loop runs inside :func:`~diffkit._checks.trusted_values`.

    Args:
        process: the forward process the denoiser was trained for.
        denoiser: called as ``denoiser(x_t, t)`` with t a (B,) int64 tensor, or
            ``denoiser(x_t, t, cond)`` when ``cond`` is given (docs/conditioning.md).
        shape: data shape (B, ...), or for a ProductProcess a dict field -> shape.
        parametrization: how to read the denoiser's output (a dict per field for a ProductProcess).
        num_steps: number of reverse steps, evenly strided; None = all T.
        timesteps: an explicit strictly decreasing list [T, ..., 0] (overrides num_steps).
        generator: makes the run reproducible; its device is the sampling device.
        eta: DDIM's eta for Gaussian fields (None: ancestral with the process's variance).
        mask: (B, N) bool node mask for padded data (ProductProcess).
        device: where to sample (default: the generator's device, else CPU).
        progress: show a tqdm bar over the steps.
        cond: the condition, checked against ``denoiser.cond_spec``: int64 class ids (B,) (an int
            is broadcast) or float features (B, C); None samples unconditionally.
        guidance_scale: classifier-free guidance w >= 0 (0: the plain conditional model); each
            field's outputs combine by its parametrization's ``guidance`` (diffkit.guidance).
        known: infilling: values of the known elements, shaped like the samples (a dict of some
            fields for a ProductProcess); values where ``known_mask`` is False are ignored.
        known_mask: bool, like ``known``: True where the element is known (diffkit.infill).
        resample_rounds: RePaint's number of passes per jump for re-noised (not exact) fields; 1: none.
        sampler: "ancestral" (this loop: x_s ~ p(x_s | x_t) at every jump, strided or not; every
            process), or a deterministic solver for Gaussian fields (``diffkit.solvers``): "ddim"
            (eta = 0) or "dpmpp_2m" (DPM-Solver++(2M)), one network call per jump over the same grid.
        cache: reuse the denoiser's output for every example whose x_t did not change since its
            last call (MDLM's caching sampler); only valid, and allowed, for a process with
            ``x0_prediction_time_independent``. None: on exactly for such processes.
        stats: a :class:`SamplingStats` to fill with the number of denoiser calls and evaluations.

    Returns:
        x0 samples: a Tensor (B, ...) or a dict of Tensors.

    Raises:
        ValueError: a grid that does not run from T down to 0, or a stride the parametrization
            cannot take; an unknown sampler (the message lists them), ``eta`` or ``known`` with a
            deterministic solver, or a solver on a process without ``supports_gaussian_solvers``.
        ValueError / TypeError: a bad ``cond``, ``guidance_scale``, ``known`` or ``known_mask``,
            each named (see :func:`diffkit.guidance.check_cond`, :func:`diffkit.infill.check_known`).
    """
    solver = _resolve_sampler(process, sampler, eta)
    grid = process.sampling_grid(num_steps) if timesteps is None else process.check_sampling_grid(timesteps)
    param = process.get_parametrization(parametrization)
    check_can_stride(param, grid)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    batch = next(iter(shape.values()))[0] if isinstance(shape, dict) else shape[0]
    cond = check_cond(denoiser, cond, batch, device)
    guidance_scale = check_guidance_scale(guidance_scale, cond)
    known = check_known(process, shape, known, known_mask, device)
    rounds = check_resample_rounds(resample_rounds)
    x = process.prior_sample(shape, device=device, generator=generator, mask=None if mask is None else mask.to(device))
    jumps = list(zip(grid[:-1], grid[1:], strict=True))
    if progress:
        from tqdm.auto import tqdm

        jumps = tqdm(jumps, desc="sampling", leave=False)
    if solver is not None:
        if known is not None:
            raise ValueError(
                f"known: infilling re-noises along the ancestral chain; use sampler='ancestral', not {sampler!r}"
            )
        with trusted_values():
            return solver(
                process,
                lambda x_t, t: guided_output(denoiser, x_t, t, cond, guidance_scale, param),
                x,
                param,
                grid,
                x0_transform=getattr(process, "clamp_x0", None),  # GaussianProcess(clip_x0=c)
            )
    denoiser = _wrap_denoiser(process, denoiser, cache, stats, conditional=cond is not None)
    with trusted_values():
        if known is not None:
            x = impose_known(process, x, known, grid[0], generator)
        for t, s in jumps:
            if known is None:
                x = denoise_step(process, denoiser, x, t, s, batch, param, generator, eta, cond, guidance_scale)
                continue
            for r in range(rounds):  # RePaint (Lugmayr et al. 2022, Alg. 1); one pass when rounds = 1
                x_s = denoise_step(process, denoiser, x, t, s, batch, param, generator, eta, cond, guidance_scale)
                x_s = impose_known(process, x_s, known, s, generator)
                if r + 1 < rounds:
                    x = renoise(process, x_s, t, s, generator)
            x = x_s
    return x


def denoise_step(
    process: ForwardProcess,
    denoiser: Denoiser,
    x: Any,
    t: int,
    s: int,
    batch: int,
    param: Any,
    generator: torch.Generator | None,
    eta: float | None,
    cond: Tensor | None = None,
    guidance_scale: float = 0.0,
) -> Any:
    """One jump of :func:`sample`: the denoiser at (x_t, t) through
    :func:`diffkit.guidance.guided_output` (cond and guidance), then ``process.step`` to x_s.
    ``benchmarks/speed.py`` times this."""
    # int64 times for discrete processes, floats in [0, 1] for continuous-time ones
    dtype = torch.get_default_dtype() if process.is_continuous_time else torch.long
    t_batch = torch.full((batch,), t, dtype=dtype, device=process_device(x))
    output = guided_output(denoiser, x, t_batch, cond, guidance_scale, param)
    return process.step(output, x, t, s, param, generator=generator, eta=eta)


def process_device(x: Any) -> torch.device:
    """The device of a sample or batch (a Tensor, or the first Tensor of a dict / Mapping)."""
    return next(v for v in x.values() if isinstance(v, Tensor)).device if isinstance(x, Mapping) else x.device


def _resolve_sampler(process: ForwardProcess, sampler: str, eta: float | None) -> Callable[..., Any] | None:
    """The solver of :data:`diffkit.solvers.SAMPLERS` named ``sampler`` (None: the ancestral loop)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)}")
    solver = SAMPLERS[sampler]
    if solver is None:
        return None
    if eta is not None:
        raise ValueError(
            f"eta: sampler {sampler!r} is deterministic and takes no eta (got {eta}); use sampler='ancestral' with "
            "eta for DDIM's stochastic steps"
        )
    if not process.supports_gaussian_solvers:
        raise ValueError(
            f"sampler: {sampler!r} solves the probability-flow ODE of a Gaussian field; {type(process).__name__} "
            "does not support it (categorical and product processes sample with sampler='ancestral', strided or not)"
        )
    return solver


def _wrap_denoiser(
    process: ForwardProcess, denoiser: Denoiser, cache: bool | None, stats: SamplingStats | None, conditional: bool
) -> Denoiser:
    """The denoiser as :func:`sample` calls it: cached (``cache``) and / or counted (``stats``).
    Conditional sampling is never cached (guidance calls the denoiser with two conditions per jump)."""
    if cache and conditional:
        raise ValueError("cache: conditional sampling (cond given) is not cached; use cache=None or False")
    allowed = process.x0_prediction_time_independent and not conditional
    if cache and not allowed:
        raise ValueError(
            f"cache: {type(process).__name__} does not declare x0_prediction_time_independent, so a denoiser output "
            "cannot be reused at another t; use cache=None or False"
        )
    if allowed if cache is None else cache:
        return CachingDenoiser(denoiser, stats)
    return denoiser if stats is None else counting_denoiser(denoiser, stats)
