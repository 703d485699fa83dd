"""What every diffkit data module shares: seeded streams and the split/loader logic.

All data are drawn locally from a seed. One integer ``seed`` gives independent random streams
(:func:`stream_seed`), so that the train, val and test splits, the shuffling order and any
seeded structure of the distribution (a mixture's means, a Markov chain's transition matrix)
never share random numbers, and changing ``num_train`` leaves the val split unchanged.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics import MetricCollection

from diffkit._checks import check_non_negative_int, check_positive_int

__all__ = [
    "Batch",
    "TensorDictDataset",
    "EpochShuffleSampler",
    "ResumableDataLoader",
    "SampledDataModule",
    "seeded_generator",
    "stream_seed",
]

Batch = Tensor | dict[str, Tensor]

# Stream ids under one seed; the "structure" stream seeds a distribution's own parameters.
_STREAMS = {"structure": 0, "train": 1, "val": 2, "test": 3, "shuffle": 4}


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


class EpochShuffleSampler(Sampler[int]):
    """Indices 0..n-1 in a random order that is a pure function of (seed, epoch).

    Epoch ``e``'s order is the ``torch.randperm(n)`` of pass e of a CPU generator seeded with
    ``stream_seed(seed, "shuffle")``, each pass drawing one int64 first (the workers' base seed)
    then the permutation: exactly what ``DataLoader(shuffle=True, generator=that generator)``
    gives in its e-th pass (single-process loading). So an uninterrupted run sees the same batches
    as with that loader, and a run resumed at epoch e sees epoch e's order (not epoch 0's).
    Lightning calls :meth:`set_epoch` at every epoch start (and forwards it through
    ``DistributedSamplerWrapper`` under DDP); iterating again without ``set_epoch`` moves on to
    the next epoch. Consecutive epochs cost one ``randperm``; jumping to epoch e (a resume)
    replays e permutations once.

    Args:
        num_rows: n, the dataset length.
        seed: the data module's non-negative seed.
    """

    def __init__(self, num_rows: int, seed: int) -> None:
        self.num_rows = num_rows
        self.seed = seed
        self.epoch = 0
        self._cache: tuple[int, torch.Generator] | None = None  # (epochs drawn, generator after them)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order for the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def permutation(self, epoch: int) -> Tensor:
        """(n,) int64: epoch ``epoch``'s order."""
        if self._cache is not None and self._cache[0] <= epoch:
            drawn, gen = self._cache
        else:
            drawn, gen = 0, seeded_generator(stream_seed(self.seed, "shuffle"))
        for _ in range(epoch - drawn + 1):
            torch.empty((), dtype=torch.int64).random_(generator=gen)  # a DataLoader pass's base seed
            order = torch.randperm(self.num_rows, generator=gen)
        self._cache = (epoch + 1, gen)
        return order

    def __iter__(self) -> Iterator[int]:
        order = self.permutation(self.epoch)
        self.epoch += 1
        return iter(order.tolist())


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that Lightning can resume in the middle of an epoch.

    It counts the batches it has yielded in the current pass; Lightning 2.6 saves
    :meth:`state_dict` in every checkpoint (``loops.fit_loop.state_dict.combined_loader``) and,
    on ``fit(ckpt_path=...)``, calls :meth:`load_state_dict` before the first pass, which then
    skips the batches the interrupted run had already used (their indices only: no data is
    loaded for them). The skip applies only when the resumed pass is the same epoch as the saved
    one (the sampler's ``epoch``, set by Lightning's ``set_epoch``) and the saved pass was not
    finished, so a checkpoint written at an epoch end resumes at the next epoch's first batch.
    Exact for map-style datasets, whose batches depend only on the sampler's indices. With a
    sampler that has no ``epoch`` (no ``set_epoch``), epochs cannot be told apart: a pass cut
    short by ``limit_train_batches`` and saved at its end would be skipped into the next pass.
    """

    _batches_yielded: int = 0
    _pass_epoch: Any = None
    _resume: dict[str, Any] | None = None
    _skip_now: int = 0

    def _sampler_epoch(self) -> Any:
        return getattr(self.sampler, "epoch", None)

    def state_dict(self) -> dict[str, Any]:
        """{"epoch": the current pass's sampler epoch (or None), "batches": batches yielded in it}."""
        return {"epoch": self._pass_epoch, "batches": self._batches_yielded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Skip ``state_dict["batches"]`` batches at the start of the next pass if it is the same epoch."""
        self._resume = dict(state_dict)

    @property
    def _index_sampler(self):  # noqa: ANN202 (DataLoader's own private hook)
        base = super()._index_sampler
        return _SkipFirst(base, self._skip_now) if self._skip_now else base

    def __iter__(self):  # noqa: ANN204
        return self._counting_iter()

    def _counting_iter(self) -> Iterator[Any]:
        # A generator: runs at the first next(), after Lightning's set_epoch for this epoch.
        epoch = self._sampler_epoch()
        skip, resume, self._resume = 0, self._resume, None
        if resume is not None and resume.get("epoch") == epoch and 0 < resume.get("batches", 0) < len(self):
            skip = int(resume["batches"])
        self._pass_epoch, self._batches_yielded = epoch, skip
        self._skip_now = skip
        try:
            iterator = super().__iter__()
        finally:
            self._skip_now = 0
        for batch in iterator:
            self._batches_yielded += 1
            yield batch


class _SkipFirst:
    """An index (batch) sampler whose first pass drops its first ``skip`` items (later passes are whole)."""

    def __init__(self, base: Any, skip: int) -> None:
        self.base, self.skip = base, skip

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        iterator = iter(self.base)
        for _ in range(skip):
            next(iterator, None)
        return iterator


class SplitLoaders:
    """train / val / test DataLoaders over ``self.split(name)`` (a Tensor or dict batch).

    Needs ``split(name)``, ``seed``, ``batch_size`` and ``num_workers`` on the data module.
    """

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the train split, in an order fixed by (``seed``, epoch).

        A :class:`ResumableDataLoader` over an :class:`EpochShuffleSampler`: a run resumed from
        a checkpoint (at an epoch end or in the middle of an epoch) sees the same batches as an
        uninterrupted one.
        """
        data = TensorDictDataset(self.split("train"))
        return ResumableDataLoader(
            data,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(data), self.seed),
            num_workers=self.num_workers,
        )

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
    The train loader shuffles in an order fixed by (``seed``, epoch) and resumes mid-epoch
    (:class:`ResumableDataLoader`); val and test do not shuffle.

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
            check_positive_int(name, value)
        check_non_negative_int("seed", seed)
        check_non_negative_int("num_workers", num_workers)
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
        check_positive_int("n", n)
        check_non_negative_int("seed", seed)
        return self.draw(n, seeded_generator(seed))

    def sample_metrics(self) -> MetricCollection:
        """The sample-quality metrics that fit this data, which ``DiffusionModule`` updates with its
        samples and held-out examples at every validation / test epoch end (and, for the floor,
        with two draws of real data).

        Default: :func:`diffkit.metrics.quality.default_sample_metrics` for one drawn example
        (MMD and sliced Wasserstein for float data). Data modules of ids or structured data
        override it.

        Returns:
            A fresh ``MetricCollection``; metrics with ``two_sample = True`` (or without the
            attribute) take ``update(samples, reference)``, others ``update(samples)``.
        """
        from diffkit.metrics.quality import default_sample_metrics

        return default_sample_metrics(self.draw(2, seeded_generator(0)))

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
            raise ValueError(f"name: expected one of {list(self._splits)}, got {name!r}")
        return self._splits[name]
