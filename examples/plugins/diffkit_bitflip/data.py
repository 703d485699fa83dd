"""Binary patterns: noisy copies of a few seeded random prototypes, as (B, L) int64 bits.

An example picks one of ``num_prototypes`` fixed bit patterns uniformly and flips each of its L
bits independently with probability ``bit_noise``. The exact data distribution is known:

    p(x) = (1 / P) sum_k bit_noise^d(x, k) (1 - bit_noise)^(L - d(x, k)),   d = Hamming distance

so a trained model's samples should sit close to the prototypes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffkit.data import SampledDataModule

__all__ = ["BinaryPatternsDataModule"]


class BinaryPatternsDataModule(SampledDataModule):
    """Fixed train / val / test draws of noisy binary prototypes; batches are (B, L) int64 in {0, 1}.

    Args:
        length: L, bits per example, >= 1.
        num_prototypes: P, the number of patterns, >= 1.
        bit_noise: probability that a bit differs from its prototype, in [0, 1/2).
        num_train: number of training examples, >= 1.
        num_val: number of validation (and test) examples, >= 1.
        batch_size: examples per batch, >= 1.
        seed: non-negative seed of the prototypes, the splits and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        TypeError: an integer argument is not an int.
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        length: int = 16,
        num_prototypes: int = 4,
        bit_noise: float = 0.05,
        num_train: int = 4096,
        num_val: int = 512,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(num_train, num_val, batch_size, seed, num_workers)
        for name, value in (("length", length), ("num_prototypes", num_prototypes)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value}")
        if not 0 <= bit_noise < 0.5:
            raise ValueError(f"bit_noise: expected a probability in [0, 1/2), got {bit_noise}")
        self.length = length
        self.bit_noise = float(bit_noise)
        # A random stream of its own (a spawned child), independent of the base class's split streams.
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self.prototypes = torch.from_numpy(rng.integers(0, 2, size=(num_prototypes, length)))  # (P, L) int64

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """n i.i.d. examples: (n, L) int64 bits."""
        which = torch.randint(0, self.prototypes.shape[0], (n,), generator=generator)  # (n,)
        flip = torch.rand(n, self.length, generator=generator, dtype=torch.float64) < self.bit_noise  # (n, L)
        x = self.prototypes[which]  # (n, L)
        return torch.where(flip, 1 - x, x)
