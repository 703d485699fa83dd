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

from diffkit.guidance import check_cond, check_guidance_scale, guided_output
from diffkit.infill import check_known, check_resample_rounds, impose_known, renoise
from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess

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
    cond: Tensor | int | None = None,
    guidance_scale: float = 0.0,
    known: Any = None,
    known_mask: Any = None,
    resample_rounds: int = 1,
) -> Any:
    """Run the reverse chain x_T -> ... -> x_0.

    Args:
        process: the forward process the denoiser was trained for.
        denoiser: called as ``denoiser(x_t, t)`` with t a (B,) int64 tensor, or
            ``denoiser(x_t, t, cond)`` when ``cond`` is given (docs/conditioning.md).
        shape: data shape (B, ...), or for a ProductProcess a dict field -> shape.
        parametrization: how to read the denoiser's output (a dict per field for a ProductProcess).
        num_steps: number of reverse steps, evenly strided; None = all T.
        timesteps: an explicit decreasing list [t_0 = T', ..., 0] (overrides num_steps).
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

    Returns:
        x0 samples: a Tensor (B, ...) or a dict of Tensors.

    Raises:
        ValueError / TypeError: a bad ``cond``, ``guidance_scale``, ``known`` or ``known_mask``,
            each named (see :func:`diffkit.guidance.check_cond`, :func:`diffkit.infill.check_known`).
    """
    ts = _check_timesteps(timesteps, process.num_steps) if timesteps is not None else sampling_timesteps(process.num_steps, num_steps)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    param = process.get_parametrization(parametrization)
    batch = next(iter(shape.values()))[0] if isinstance(shape, dict) else shape[0]
    cond = check_cond(denoiser, cond, batch, device)
    guidance_scale = check_guidance_scale(guidance_scale, cond)
    known = check_known(process, shape, known, known_mask, device)
    rounds = check_resample_rounds(resample_rounds)
    x = process.prior_sample(shape, device=device, generator=generator, mask=None if mask is None else mask.to(device))
    if known is not None:
        x = impose_known(process, x, known, ts[0], generator)
    pairs = list(zip(ts[:-1], ts[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="sampling", leave=False)
    # The schedule was checked once above (ints, 0 <= s < t <= T), so each jump goes to the
    # unchecked step with (t, s) as ints: per-jump scalar coefficients, no per-step validation.
    t = torch.full((batch,), ts[0], dtype=torch.long, device=device)
    for t_i, s_i in pairs:
        if known is None:
            x, t = _jump(process, denoiser, x, t, t_i, s_i, param, generator, eta, cond, guidance_scale)
            continue
        for r in range(rounds):  # RePaint (Lugmayr et al. 2022, Alg. 1); one pass when rounds = 1
            x_s, s = _jump(process, denoiser, x, t, t_i, s_i, param, generator, eta, cond, guidance_scale)
            x_s = impose_known(process, x_s, known, s_i, generator)
            if r + 1 < rounds:
                x = renoise(process, x_s, t_i, s_i, generator)
        x, t = x_s, s
    return x


def _jump(
    process: ForwardProcess, denoiser: Denoiser, x: Any, t: Tensor, t_i: int, s_i: int, param: Any, generator: torch.Generator | None,
    eta: float | None, cond: Tensor | None = None, guidance_scale: float = 0.0,
) -> tuple[Any, Tensor]:
    """One iteration of :func:`sample`'s loop: x_t -> x_s for ints 0 <= s_i < t_i <= T (checked by
    the caller), ``t`` the (B,) int64 tensor of t_i. Returns (x_s, s as a (B,) tensor), so the next
    jump reuses s as its t: one new time tensor per step. ``benchmarks/speed.py`` times this.
    The denoiser is called through :func:`diffkit.guidance.guided_output` (cond and guidance)."""
    s = torch.full(t.shape, s_i, dtype=torch.long, device=t.device)
    output = guided_output(denoiser, x, t, cond, guidance_scale, param)
    return process._step(output, x, t, s, param, generator, eta, (t_i, s_i)), s
