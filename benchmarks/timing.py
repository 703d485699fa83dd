"""Side-by-side timing, bootstrap ratios, CPU peak-allocation measurement and overhead profiles.

Timings are interleaved: every round runs each candidate once (``inner`` calls, so one timed block
lasts at least ~5 ms), in an order rotated from round to round, after a warm-up, with Python's
garbage collector off. A ratio is median(candidate) / median(baseline) with a 95% bootstrap
interval over rounds (paired resampling), so slow drifts of a shared machine hit both alike.
"""

from __future__ import annotations

import cProfile
import gc
import io
import math
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Ratio", "interleaved", "ratio", "peak_allocated_bytes", "profile_diffkit"]

MIN_BLOCK_SECONDS = 0.005


@dataclass(frozen=True)
class Ratio:
    """median(a) / median(b) with a 95% bootstrap interval; medians in seconds."""

    value: float
    low: float
    high: float
    median_a: float
    median_b: float


def _calibrate(fn: Callable[[], object]) -> int:
    start = time.perf_counter()
    fn()
    single = max(time.perf_counter() - start, 1e-7)
    return max(1, math.ceil(MIN_BLOCK_SECONDS / single))


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one entry per round (see module docstring)."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    inner = {name: _calibrate(fn) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                fn, n = fns[name], inner[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - start) / n)
    finally:
        if enabled:
            gc.enable()
    return times


def ratio(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> Ratio:
    """median(a) / median(b), and the 2.5% / 97.5% quantiles of its paired bootstrap."""
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    idx = torch.randint(0, len(a), (resamples, len(a)), generator=torch.Generator().manual_seed(seed))
    boot = ta[idx].median(dim=1).values / tb[idx].median(dim=1).values  # (resamples,)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    ma, mb = statistics.median(a), statistics.median(b)
    return Ratio(ma / mb, low, high, ma, mb)


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak CPU memory allocated while ``fn`` runs, above what was live before, from torch.profiler.

    Allocations are the ops' own (self) memory; an op's self frees, which the profiler folds into
    the op, are placed at the op's end, so the running sum is an upper bound on the true peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    deltas = []
    for event in prof.events():
        change = event.self_cpu_memory_usage
        if change:
            when = event.time_range.end if (change < 0 and event.cpu_children) else event.time_range.start
            deltas.append((when, change))
    running = peak = 0
    for _, change in sorted(deltas, key=lambda d: (d[0], -d[1])):
        running += change
        peak = max(peak, running)
    return peak


def profile_diffkit(fn: Callable[[], object], calls: int, top: int = 12) -> tuple[list[dict], str]:
    """cProfile ``calls`` runs of ``fn``; rows for diffkit's own functions by internal time.

    The denoisers (``diffkit/models``) are left out: the bare baseline runs them too.

    Returns:
        rows (function, calls per step, own ms per step, cumulative ms per step, share of total)
        and the full pstats text, for the report file.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        path = filename.replace("\\", "/")
        if "/diffkit/" in path and "/diffkit/models/" not in path and "/benchmarks/" not in path:
            short = path.split("/diffkit/", 1)[1]
            rows.append(
                {
                    "function": f"diffkit/{short}:{line}({name})",
                    "calls_per_step": ncalls / calls,
                    "own_ms_per_step": 1e3 * tottime / calls,
                    "cum_ms_per_step": 1e3 * cumtime / calls,
                    "cum_share_of_step": cumtime / total if total else float("nan"),
                }
            )
    rows.sort(key=lambda r: r["own_ms_per_step"], reverse=True)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    return rows[:top], text.getvalue()
