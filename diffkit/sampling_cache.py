"""Counting and caching denoiser calls in :func:`diffkit.sample` (MDLM's caching sampler).

Under masked noise the optimal x0 prediction q(x0 | x_t) does not depend on t given x_t, and most
reverse jumps leave most sequences unchanged (a token is unmasked at a jump with probability
(alpha(s) - alpha(t)) / (1 - alpha(t))). So a denoiser output can be reused for every example
whose x_t is the same as at its last evaluation (Sahoo et al. 2024, sec. 4.2). The caching wrapper
evaluates the denoiser on the changed examples only; with many steps a sequence of L tokens costs
at most L + 1 evaluations, however fine the grid.

Caching changes nothing in the result when the denoiser's output for an example depends only on
that example's (x_t, t) and not on t given x_t (MDLM's denoiser is not time-conditioned), up to
floating-point kernel choices that depend on the batch size. The random draws of the reverse
steps are the same with and without caching (every step still runs), so a generator reproduces
the same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["SamplingStats", "CachingDenoiser", "counting_denoiser"]


@dataclass
class SamplingStats:
    """What one :func:`diffkit.sample` run cost; pass an instance as ``sample(..., stats=...)``.

    A mutable accumulator (the sampler adds to it), so one object can also sum several runs.

    Attributes:
        jumps: reverse jumps taken (calls the sampler made to the, possibly cached, denoiser).
        network_calls: times the network itself ran (a batched forward pass each).
        evaluations: examples the network evaluated, summed over its calls.
        num_samples: examples per batch (B) of the last run.
    """

    jumps: int = 0
    network_calls: int = 0
    evaluations: int = 0
    num_samples: int = 0

    @property
    def evaluations_per_sample(self) -> float:
        """evaluations / num_samples: network evaluations each sample cost (= jumps without caching)."""
        return self.evaluations / max(self.num_samples, 1)

    def record(self, batch: int, evaluated: int) -> None:
        """Add one jump on a batch of ``batch`` examples, ``evaluated`` of them run through the network."""
        self.jumps += 1
        self.num_samples = batch
        self.evaluations += evaluated
        self.network_calls += evaluated > 0


def counting_denoiser(denoiser: Callable[[Any, Tensor], Any], stats: SamplingStats) -> Callable[[Any, Tensor], Any]:
    """``denoiser`` unchanged, each call recorded in ``stats`` as a full batch evaluation."""

    def call(x_t: Any, t: Tensor, *cond: Any) -> Any:  # cond passes through (conditional sampling)
        stats.record(t.shape[0], t.shape[0])
        return denoiser(x_t, t, *cond)

    return call


class CachingDenoiser:
    """Calls ``denoiser`` only on the examples whose x_t changed since their last evaluation.

    Args:
        denoiser: ``denoiser(x_t, t)`` -> output (B, ...), x_t a (B, ...) Tensor.
        stats: optional :class:`SamplingStats` to record the calls in.
    """

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor], stats: SamplingStats | None = None) -> None:
        self.denoiser = denoiser
        self.stats = stats
        self._x: Tensor | None = None
        self._out: Tensor | None = None

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if not isinstance(x_t, Tensor):
            raise TypeError(f"cache: the caching sampler takes a Tensor x_t, got {type(x_t).__name__}")
        B = x_t.shape[0]
        if self._x is None or self._x.shape != x_t.shape:
            out, evaluated = self.denoiser(x_t, t), B
        else:
            changed = (x_t != self._x).reshape(B, -1).any(1)
            evaluated = int(changed.sum())
            if evaluated == B:
                out = self.denoiser(x_t, t)
            elif evaluated == 0:
                out = self._out
            else:
                rows = changed.nonzero().squeeze(1)
                out = self._out.clone()
                out[rows] = self.denoiser(x_t[rows], t[rows])
        self._x, self._out = x_t, out
        if self.stats is not None:
            self.stats.record(B, evaluated)
        return out
