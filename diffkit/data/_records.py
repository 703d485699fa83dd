"""What the file-backed data modules share: a seeded split of records, resumable loaders, and the
:class:`~diffkit.formats.SampleFormat` that a checkpoint needs to give samples back in the user's format.

A file data module reads N records (rows of an array, lines of text, CSV rows, graphs), splits them
once by a permutation seeded from ``seed`` (:func:`split_indices`), builds its sample format
(standardization statistics, vocabularies) from the *training* split only, and encodes every split
as tensors. The train loader is diffkit's :class:`~diffkit.data._base.ResumableDataLoader` over an
:class:`~diffkit.data._base.EpochShuffleSampler`, so a run resumed mid-epoch sees the same batches.

Checkpoints: Lightning stores ``datamodule.state_dict()`` under the data module's class name. Ours
holds ``{"diffkit_sample_format": format.state(), "source": {"path", "sha256"}}``: plain values
(``weights_only`` loading works), read back by ``diffkit sample`` through
:func:`diffkit.formats.sample_format_from_checkpoint` without building the data module.
:meth:`RecordDataModule.load_state_dict` (called when a fit resumes) refuses a file whose content
changed since the checkpoint, since the split and the vocabularies would silently differ.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffkit._checks import check_non_negative_int, check_positive_int
from diffkit.data._base import EpochShuffleSampler, ResumableDataLoader, TensorDictDataset, stream_seed
from diffkit.formats import SAMPLE_FORMAT_KEY, SampleFormat

__all__ = ["split_indices", "check_path", "file_sha256", "RecordDataModule", "PairDataset"]

SPLITS = ("train", "val", "test")


def check_path(path: str | Path, suffixes: Sequence[str]) -> Path:
    """The path as a ``Path``, after checking it exists, has a known suffix and is not empty.

    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        ValueError: an unknown suffix (the message lists the known ones), or an empty file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"path: no file at {path}")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"path: unknown extension {path.suffix!r} of {path}; expected one of {list(suffixes)}")
    if path.stat().st_size == 0:
        raise ValueError(f"path: {path} is empty")
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes (a checkpoint records it to detect a changed file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_indices(num_records: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint train / val / test row indices: a permutation seeded by ``seed``, cut into pieces.

    val gets round(N * val_fraction) rows and test round(N * test_fraction), each at least 1 when
    its fraction is positive; train gets the rest. Each split's indices are sorted (file order).

    Args:
        num_records: N >= 1.
        val_fraction: in [0, 1).
        test_fraction: in [0, 1), with val_fraction + test_fraction < 1.
        seed: non-negative seed (its "structure" stream, see ``diffkit.data._base.stream_seed``).

    Returns:
        {"train": (N_train,) int64, "val": (N_val,) int64, "test": (N_test,) int64}.

    Raises:
        ValueError: fractions out of range, or no row left for training.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name}: expected a fraction in [0, 1), got {value!r}")
    sizes = [0 if f == 0 else max(1, round(num_records * f)) for f in (val_fraction, test_fraction)]
    if num_records - sum(sizes) < 1:
        raise ValueError(
            f"val_fraction / test_fraction: {num_records} records leave no training row after {sizes[0]} val and "
            f"{sizes[1]} test rows"
        )
    order = np.random.default_rng(stream_seed(seed, "structure")).permutation(num_records)
    val, test = order[: sizes[0]], order[sizes[0] : sizes[0] + sizes[1]]
    train = order[sizes[0] + sizes[1] :]
    return {name: np.sort(idx).astype(np.int64) for name, idx in zip(SPLITS, (train, val, test), strict=True)}


class PairDataset(Dataset):
    """Items ``(x0[i], cond[i])``: the batches of a data module with labels are ``(x0, cond)`` pairs."""

    def __init__(self, x0: Any, cond: Tensor) -> None:
        self.x0, self.cond = TensorDictDataset(x0), cond
        assert len(self.x0) == len(cond), "x0 and cond of different lengths"

    def __len__(self) -> int:
        return len(self.cond)

    def __getitem__(self, index: int) -> tuple[Any, Tensor]:
        return self.x0[index], self.cond[index]


class RecordDataModule(lightning.LightningDataModule, abc.ABC):
    """Base of the file data modules (module docstring). Subclasses implement :meth:`read_records`,
    :meth:`build_format` and :meth:`encode`.

    Args:
        val_fraction: fraction of the records in the val split.
        test_fraction: fraction of the records in the test split.
        batch_size: examples per batch, >= 1.
        seed: non-negative seed of the split and the shuffling.
        num_workers: DataLoader worker processes, >= 0.
    """

    def __init__(self, val_fraction: float, test_fraction: float, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_non_negative_int("seed", seed)
        check_non_negative_int("num_workers", num_workers)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a fraction in [0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction: expected < 1, got {val_fraction} + {test_fraction}")
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self._splits: dict[str, Any] | None = None
        self._cond: dict[str, Tensor] | None = None
        self._format: SampleFormat | None = None
        self._source: dict[str, str] | None = None

    # -- what a kind of file implements
    @abc.abstractmethod
    def read_records(self) -> tuple[Sequence[Any], Sequence[Any] | None]:
        """All records of the source, and their labels (or None), in file order."""

    @abc.abstractmethod
    def build_format(self, train: Sequence[Any]) -> SampleFormat:
        """The sample format (statistics, vocabularies) built from the training records only."""

    @abc.abstractmethod
    def encode(self, records: Sequence[Any]) -> Any:
        """Records -> a (n, ...) Tensor or dict of (n, ...) Tensors, with :attr:`sample_format`."""

    def source_path(self) -> Path | None:
        """The file the records come from (its hash goes into checkpoints), or None."""
        return getattr(self, "path", None)

    @staticmethod
    def take(records: Sequence[Any], index: np.ndarray) -> Sequence[Any]:
        """The records at ``index`` (arrays are indexed at once, other sequences item by item)."""
        if isinstance(records, np.ndarray):
            return records[index]
        return [records[i] for i in index.tolist()]

    # -- setup and splits
    def setup(self, stage: str | None = None) -> None:
        """Read, split and encode once; later calls reuse the splits."""
        if self._splits is not None:
            return
        path = self.source_path()
        if path is not None:
            self._source = {"path": str(path), "sha256": file_sha256(Path(path))}
        records, labels = self.read_records()
        index = split_indices(len(records), self.val_fraction, self.test_fraction, self.seed)
        self._format = self.build_format(self.take(records, index["train"]))
        self._splits = {name: self.encode(self.take(records, idx)) for name, idx in index.items()}
        if labels is not None:
            self._cond = self._encode_labels(labels, index)

    def _encode_labels(self, labels: Sequence[Any], index: dict[str, np.ndarray]) -> dict[str, Tensor]:
        """Class labels -> int64 ids in the sorted order of the training split's distinct values."""
        values = np.asarray(labels, dtype=object)
        vocab = sorted({_plain(v) for v in values[index["train"]]}, key=lambda v: (str(type(v)), v))
        ids = {v: i for i, v in enumerate(vocab)}
        self._format.label_vocab = vocab
        out = {}
        for name, idx in index.items():
            unknown = [_plain(v) for v in values[idx] if _plain(v) not in ids]
            if unknown:
                raise ValueError(
                    f"labels: the {name} split has labels absent from the training split, e.g. {unknown[:3]}"
                )
            out[name] = torch.tensor([ids[_plain(v)] for v in values[idx]], dtype=torch.int64)
        return out

    def split(self, name: str) -> Any:
        """The whole "train", "val" or "test" split (x0 only, without labels).

        Raises:
            ValueError: if ``name`` is not a split.
        """
        if name not in SPLITS:
            raise ValueError(f"name: expected one of {list(SPLITS)}, got {name!r}")
        self.setup()
        return self._splits[name]

    def labels(self, name: str) -> Tensor | None:
        """(n,) int64 class ids of a split's labels, or None without labels."""
        self.split(name)
        return None if self._cond is None else self._cond[name]

    @property
    def sample_format(self) -> SampleFormat:
        """The decoder / writer of samples (built from the training split at setup)."""
        self.setup()
        return self._format

    # -- loaders
    def _dataset(self, name: str) -> Dataset:
        x0 = self.split(name)
        return TensorDictDataset(x0) if self._cond is None else PairDataset(x0, self._cond[name])

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches in an order fixed by (seed, epoch), resumable mid-epoch (``diffkit.data._base``).
        Batches are x0, or ``(x0, cond)`` pairs when labels are configured."""
        data = self._dataset("train")
        return ResumableDataLoader(
            data,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(data), self.seed),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """Batches of the val split, in order."""
        return DataLoader(self._dataset("val"), batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        """Batches of the test split, in order."""
        return DataLoader(self._dataset("test"), batch_size=self.batch_size, num_workers=self.num_workers)

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``{"diffkit_sample_format": ..., "source": {"path", "sha256"}}``, plain values (module docstring)."""
        self.setup()
        return {SAMPLE_FORMAT_KEY: self._format.state(), "source": self._source}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check that the file is the one the checkpoint was trained on (the data are a function of it).

        Raises:
            ValueError: the file's SHA-256 differs from the checkpoint's.
        """
        saved = (state_dict or {}).get("source")
        self.setup()
        if saved and self._source and saved.get("sha256") != self._source["sha256"]:
            raise ValueError(
                f"path: {self._source['path']} differs from the file this checkpoint was trained on "
                f"({saved.get('path')}); "
                "its split and vocabularies would differ, so resuming is refused. Restore the file or start a new run"
            )


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (hashable, sortable, storable in a checkpoint)."""
    return value.item() if isinstance(value, np.generic) else value
