"""What every diffkit data module shares: argument checks, seeded streams and the split/loader logic.

All data are drawn locally from a seed. One integer ``seed`` gives independent random streams
(:func:`stream_seed`), so that the train, val and test splits, the shuffling order and any
seeded structure of the distribution (a mixture's means, a Markov chain's transition matrix)
never share random numbers, and changing ``num_train`` leaves the val split unchanged.
"""

from __future__ import annotations

import abc
from typing import Union

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "Batch",
    "TensorDictDataset",
    "SampledDataModule",
    "check_positive",
    "check_seed",
    "seeded_generator",
    "stream_seed",
]

Batch = Union[Tensor, dict[str, Tensor]]

# Stream ids under one seed; the "structure" stream seeds a distribution's own parameters.
_STREAMS = {"structure": 0, "train": 1, "val": 2, "test": 3, "shuffle": 4}


def check_positive(name: str, value: int) -> None:
    """Raise unless ``value`` is a positive int.

    Raises:
        TypeError: if ``value`` is not an int (bool is rejected).
        ValueError: if ``value < 1``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int, but got {value}.")


def check_seed(name: str, value: int) -> None:
    """Raise unless ``value`` is a non-negative int (a valid seed).

    Raises:
        TypeError: if ``value`` is not an int (bool is rejected).
        ValueError: if ``value < 0``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative int, but got {value}.")


def stream_seed(seed: int, stream: str) -> int:
    """Seed of one named random stream under ``seed``, via numpy's SeedSequence.

    Args:
        seed: the non-negative user seed.
        stream: one of "structure", "train", "val", "test", "shuffle".

    Returns:
        A 63-bit int, independent across streams and seeds, for ``torch.Generator.manual_seed``
        or ``numpy.random.default_rng``.
    """
    state = np.random.SeedSequence([seed, _STREAMS[stream]]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeded_generator(seed: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``seed`` (global RNG state is never touched)."""
    return torch.Generator().manual_seed(seed)


class TensorDictDataset(Dataset):
    """Rows of a precomputed Tensor, or of a dict of Tensors sharing their first dim.

    Item ``i`` is ``data[i]`` (a Tensor) or ``{name: value[i]}`` (a dict), so the default collate
    gives a (B, ...) Tensor or a dict of (B, ...) Tensors.

    Args:
        data: a (N, ...) Tensor, or a dict of (N, ...) Tensors with the same N.
    """

    def __init__(self, data: Batch) -> None:
        sizes = {len(v) for v in data.values()} if isinstance(data, dict) else {len(data)}
        assert len(sizes) == 1, f"fields of different lengths: {sizes}"
        self.data = data
        self.size = sizes.pop()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Batch:
        if isinstance(self.data, dict):
            return {name: value[index] for name, value in self.data.items()}
        return self.data[index]


class SplitLoaders:
    """train / val / test DataLoaders over ``self.split(name)`` (a Tensor or dict batch).

    Needs ``split(name)``, ``seed``, ``batch_size`` and ``num_workers`` on the data module.
    """

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the train split, in an order fixed by ``seed``."""
        generator = seeded_generator(stream_seed(self.seed, "shuffle"))
        return self._loader("train", shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        """Batches of the val split, in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the test split, in order."""
        return self._loader("test", shuffle=False)

    def _loader(self, name: str, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(
            TensorDictDataset(self.split(name)),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
        )


class SampledDataModule(SplitLoaders, lightning.LightningDataModule, abc.ABC):
    """A data module whose splits are fixed-size draws from a known distribution.

    Subclasses implement :meth:`draw`; this base draws the train, val and test splits once in
    :meth:`setup` (the test split is an independent draw of ``num_val`` examples) and serves them.
    The train loader shuffles with a generator seeded from ``seed``; val and test do not shuffle.

    Args:
        num_train: number of training examples, >= 1.
        num_val: number of validation (and test) examples, >= 1.
        batch_size: examples per batch, >= 1.
        seed: non-negative seed of every random stream of the module.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if a size is not positive, or ``seed`` or ``num_workers`` is negative.
    """

    def __init__(self, num_train: int, num_val: int, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        for name, value in dict(num_train=num_train, num_val=num_val, batch_size=batch_size).items():
            check_positive(name, value)
        check_seed("seed", seed)
        check_seed("num_workers", num_workers)
        self.num_train = num_train
        self.num_val = num_val
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self._splits: dict[str, Batch] | None = None

    @abc.abstractmethod
    def draw(self, n: int, generator: torch.Generator) -> Batch:
        """Draw ``n`` i.i.d. examples of the data distribution with ``generator``.

        Returns:
            A (n, ...) Tensor, or a dict of (n, ...) Tensors.
        """

    def sample_reference(self, n: int, seed: int) -> Batch:
        """Draw ``n`` fresh examples of the true distribution (for metric floors).

        The stream is ``torch.Generator().manual_seed(seed)``, distinct from the module's own
        splits (which use derived seeds) even when ``seed`` equals the module's seed.

        Args:
            n: number of examples, >= 1.
            seed: non-negative seed.

        Returns:
            A (n, ...) Tensor, or a dict of (n, ...) Tensors, as in a batch.
        """
        check_positive("n", n)
        check_seed("seed", seed)
        return self.draw(n, seeded_generator(seed))

    def setup(self, stage: str | None = None) -> None:
        """Draw the train, val and test splits once; later calls reuse them."""
        if self._splits is None:
            sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_val}
            self._splits = {
                split: self.draw(n, seeded_generator(stream_seed(self.seed, split))) for split, n in sizes.items()
            }

    def split(self, name: str) -> Batch:
        """The full "train", "val" or "test" split (drawn on first use).

        Raises:
            ValueError: if ``name`` is not a split.
        """
        self.setup()
        if name not in self._splits:
            raise ValueError(f"Expected `name` to be one of {list(self._splits)}, but got {name!r}.")
        return self._splits[name]
