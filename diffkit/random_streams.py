"""The random streams of :class:`~diffkit.DiffusionModule`: where training and validation draw t and noise.

Each stream is a ``torch.Generator`` re-seeded from a key (seed, rank, stream, step) before use, so
a run's draws depend only on that key: DDP ranks draw different noise, resuming needs only the
seed and the step count, and nothing else that uses torch's global RNG changes them. The key is
folded into a seed by a SplitMix64 chain (Steele, Lea & Flood 2014, "Fast splittable pseudorandom
number generators"), so nearby keys (step n and n + 1, rank 0 and 1) give unrelated seeds.
"""

from __future__ import annotations

import os

import torch

__all__ = ["TRAIN_STREAM", "VAL_STREAM", "mix_seed", "resolve_seed"]

#: Stream ids in the key: the training steps' draws, and validation's.
TRAIN_STREAM, VAL_STREAM = 1, 2

_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """SplitMix64's output function applied to state x + golden gamma: a bijective 64-bit mixer."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative ints: h = splitmix64(h ^ part) for each part from h = 0."""
    h = 0
    for part in parts:
        h = splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1


def resolve_seed(noise_seed: int | None) -> int:
    """The seed of a module's streams: ``noise_seed``, else ``PL_GLOBAL_SEED`` (what Lightning's
    ``seed_everything`` set), else ``torch.initial_seed()``."""
    if noise_seed is not None:
        return int(noise_seed)
    env = os.environ.get("PL_GLOBAL_SEED", "").strip()
    if env.lstrip("-").isdigit():
        return int(env) % (1 << 63)
    return torch.initial_seed() % (1 << 63)


def seeded(generator: torch.Generator | None, device: torch.device, seed: int) -> torch.Generator:
    """``generator`` re-seeded with ``seed`` (a new one if None or on another device)."""
    if generator is None or generator.device != device:
        generator = torch.Generator(device)
    return generator.manual_seed(seed)
