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
from diffkit.sampling_cache import CachingDenoiser, SamplingStats, counting_denoiser

__all__ = ["sampling_timesteps", "sample", "SamplingStats"]

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
    cache: bool | None = None,
    stats: SamplingStats | None = None,
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
        cache: reuse the denoiser's output for every example whose x_t did not change since its
            last call (MDLM's caching sampler); only valid, and allowed, for a process with
            ``x0_prediction_time_independent``. None: on exactly for such processes.
        stats: a :class:`SamplingStats` to fill with the number of denoiser calls and evaluations.

    Returns:
        x0 samples: a Tensor (B, ...) or a dict of Tensors.
    """
    ts = process.check_sampling_grid(timesteps) if timesteps is not None else process.sampling_grid(num_steps)
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
    denoiser = _wrap_denoiser(process, denoiser, cache, stats)
    # int64 times for discrete processes, float32 ones in [0, 1] for continuous-time ones.
    t = torch.full((batch,), ts[0], dtype=torch.get_default_dtype() if process.is_continuous_time else torch.long, device=device)
    for t_i, s_i in pairs:
        x, t = _jump(process, denoiser, x, t, t_i, s_i, param, generator, eta)
    return x


def _jump(process: ForwardProcess, denoiser: Denoiser, x: Any, t: Tensor, t_i: int, s_i: int, param: Any, generator: torch.Generator | None, eta: float | None) -> tuple[Any, Tensor]:
    """One iteration of :func:`sample`'s loop: x_t -> x_s for ints 0 <= s_i < t_i <= T (checked by
    the caller), ``t`` the (B,) int64 tensor of t_i. Returns (x_s, s as a (B,) tensor), so the next
    jump reuses s as its t: one new time tensor per step. ``benchmarks/speed.py`` times this."""
    s = torch.full(t.shape, s_i, dtype=t.dtype, device=t.device)
    return process._step(denoiser(x, t), x, t, s, param, generator, eta, (t_i, s_i)), s


def _wrap_denoiser(process: ForwardProcess, denoiser: Denoiser, cache: bool | None, stats: SamplingStats | None) -> Denoiser:
    """The denoiser as :func:`sample` calls it: cached (``cache``) and / or counted (``stats``)."""
    allowed = process.x0_prediction_time_independent
    if cache and not allowed:
        raise ValueError(
            f"cache: {type(process).__name__} does not declare x0_prediction_time_independent, so a denoiser output "
            "cannot be reused at another t; use cache=None or False"
        )
    if allowed if cache is None else cache:
        return CachingDenoiser(denoiser, stats)
    return denoiser if stats is None else counting_denoiser(denoiser, stats)
