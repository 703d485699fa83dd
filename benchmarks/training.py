"""One plain-torch training loop and evaluation helpers on diffkit's public API, shared by the
Gaussian and categorical suites so every row of a table gets exactly the same budget.

Training step: ``process.sample_timesteps`` -> ``process.q_sample`` -> ``denoiser`` ->
``process.loss`` (the parametrization's simple loss) -> backward -> AdamW step. The learning rate
warms up linearly over the first 5% of steps and then decays to 0 on a cosine, the same for every
row; optionally gradients are clipped and the weights averaged (``Budget``). All randomness comes
from explicit generators derived from the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import diffkit
from benchmarks.common import LOG2, generator
from diffkit.guidance import drop_cond

__all__ = ["Budget", "TrainResult", "train", "draw_samples", "nll_bits", "zero_output_loss"]

# Random streams of one seed (see common.generator).
STREAM_INIT, STREAM_TRAIN, STREAM_SAMPLE, STREAM_NLL, STREAM_METRIC = range(5)


@dataclass(frozen=True)
class Budget:
    """The training budget every row of a suite gets."""

    steps: int
    batch_size: int
    lr: float
    warmup_fraction: float = 0.05
    grad_clip: float | None = None  # max global gradient norm (torch.nn.utils.clip_grad_norm_), or None
    # decay of an exponential moving average of the parameters updated after every optimizer step (torch's
    # AveragedModel with get_ema_multi_avg_fn, what Lightning's EMAWeightAveraging and the configs' ema_decay
    # use); the trained denoiser ends with the average's parameters. None: the last iterate.
    ema_decay: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """Wall time of the training loop (seconds) and the mean loss over its last 10% of steps."""

    seconds: float
    final_loss: float


def _lr_factor(step: int, budget: Budget) -> float:
    warmup = max(1, int(budget.warmup_fraction * budget.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, budget.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _batches(num: int, batch_size: int, gen: torch.Generator):
    """Endless index batches: a fresh permutation of the training set each epoch."""
    while True:
        perm = torch.randperm(num, generator=gen)
        for start in range(0, num - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


def train(
    process: diffkit.ForwardProcess,
    denoiser: nn.Module,
    data: Tensor | Mapping[str, Tensor],
    parametrization: str,
    budget: Budget,
    seed: int,
    cond: Tensor | None = None,
    cond_drop_prob: float = 0.0,
    loss: str = "simple",
    hybrid_weight: float = 1e-3,
) -> TrainResult:
    """Train ``denoiser`` in place on the rows of ``data`` (x0 examples: a (N, ...) Tensor, or a dict
    of (N, ...) Tensors such as dense graph batches) for ``budget.steps`` steps with ``process.loss``
    of kind ``loss`` ("simple", "kl" or "hybrid"). With ``cond`` (N,) or (N, C), the denoiser is
    called ``denoiser(x_t, t, cond)`` with each example's condition dropped to the null one with
    probability ``cond_drop_prob`` (as DiffusionModule does)."""
    gen = generator(seed, STREAM_TRAIN)
    param = process.get_parametrization(parametrization)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=budget.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, budget))
    num = next(iter(data.values())).shape[0] if isinstance(data, Mapping) else data.shape[0]
    batches = _batches(num, min(budget.batch_size, num), gen)
    losses = []
    average = None
    if budget.ema_decay is not None:
        average = AveragedModel(denoiser, multi_avg_fn=get_ema_multi_avg_fn(budget.ema_decay), use_buffers=False)
    denoiser.train()
    start = time.perf_counter()
    for _ in range(budget.steps):
        index = next(batches)
        x0 = {k: v[index] for k, v in data.items()} if isinstance(data, Mapping) else data[index]
        t = process.sample_timesteps(index.shape[0], generator=gen)
        x_t, noise = process.q_sample(x0, t, generator=gen)
        if cond is None:
            output = denoiser(x_t, t)
        else:
            drop = torch.rand(index.shape[0], generator=gen) < cond_drop_prob
            output = denoiser(x_t, t, drop_cond(cond[index], drop))
        value = process.loss(output, x0, x_t, t, noise, param, kind=loss, hybrid_weight=hybrid_weight).mean()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if budget.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), budget.grad_clip)
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(denoiser)
        losses.append(value.detach())
    seconds = time.perf_counter() - start
    if average is not None:
        with torch.no_grad():
            for weight, averaged in zip(denoiser.parameters(), average.module.parameters(), strict=True):
                weight.copy_(averaged)
    denoiser.eval()
    tail = torch.stack(losses[-max(1, len(losses) // 10) :])
    return TrainResult(seconds, float(tail.mean()))


def draw_samples(
    process: diffkit.ForwardProcess,
    denoiser: nn.Module,
    shape: tuple[int, ...],
    parametrization: str,
    num_steps: int | None,
    eta: float | None,
    seed: int,
) -> Tensor:
    """``diffkit.sample`` with ``num_steps`` evenly strided steps (None: all T) and DDIM's eta."""
    gen = generator(seed, STREAM_SAMPLE)
    return diffkit.sample(process, denoiser, shape, parametrization, num_steps=num_steps, eta=eta, generator=gen)


def nll_bits(
    process: diffkit.ForwardProcess, denoiser: nn.Module, x0: Tensor, parametrization: str, seed: int, chunk: int = 1000
) -> float:
    """Mean ``diffkit.nll_bound`` over x0 in bits per element (dimension or token)."""
    return nll_terms_bits(process, denoiser, x0, parametrization, seed, chunk)[0]


def nll_terms_bits(
    process: diffkit.ForwardProcess, denoiser: nn.Module, x0: Tensor, parametrization: str, seed: int, chunk: int = 1000
) -> tuple[float, Tensor]:
    """:func:`nll_bits` and where it is spent: (bound, (T,) float64 mean term of the denoiser call at
    each t = 1..T), both in bits per element; the terms sum to the bound without its prior term."""
    gen = generator(seed, STREAM_NLL)
    total, count, steps = 0.0, 0, torch.zeros(process.num_steps, dtype=torch.float64)
    for part in x0.split(chunk):
        bound = diffkit.nll_bound(process, denoiser, part, parametrization, generator=gen, per_step=True)
        total += float(bound.total.sum())
        count += int(bound.num_elements.sum())
        steps += bound.steps.double().sum(0)
    return total / count / LOG2, steps / count / LOG2


@torch.no_grad()
def zero_output_loss(
    process: diffkit.ForwardProcess,
    data: Tensor,
    output_shape: tuple[int, ...],
    parametrization: str,
    seed: int,
    batches: int = 20,
    batch_size: int = 256,
) -> float:
    """The simple loss of a network that always outputs 0 (a trivial baseline for ``final_loss``).

    Args:
        output_shape: per-example output shape (the data's shape, or (L, K) logits).
    """
    gen = generator(seed, STREAM_METRIC)
    param = process.get_parametrization(parametrization)
    total = 0.0
    for _ in range(batches):
        x0 = data[torch.randint(0, data.shape[0], (batch_size,), generator=gen)]
        t = process.sample_timesteps(batch_size, generator=gen)
        x_t, noise = process.q_sample(x0, t, generator=gen)
        zeros = torch.zeros(batch_size, *output_shape)
        total += float(process.loss(zeros, x0, x_t, t, noise, param).mean())
    return total / batches
