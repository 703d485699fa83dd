"""Numeric arrays from a file: .npy, .npz (with a key), .pt (a tensor) or a numeric .csv.

Row i of the array (its first dim) is example i; a 1-D array is N scalars, (N, 1). Rows with NaN
or inf are an error naming the first of them (``nonfinite="error"``), or dropped with a warning
that counts them (``nonfinite="drop"``). With ``standardize`` each feature is shifted and scaled
by the mean and std of the training split, x' = (x - mean) / std (std 0 -> 1); the statistics are
saved in checkpoints and ``diffkit sample`` inverts them, so samples come back in the data's units.

Labels (optional) become ``cond``: batches are then ``(x0, cond)`` with cond (B,) int64 class ids,
the sorted distinct labels of the training split (saved as ``label_vocab``).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from diffkit.data._records import RecordDataModule, check_path
from diffkit.formats import ArrayFormat, read_csv

__all__ = ["ArrayDataModule", "read_array", "NonFinite"]

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".csv")
NonFinite = Literal["error", "drop"]


def _load_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"path: cannot read {path} as .npz ({err})") from err
    with archive:
        keys = list(archive.keys())
        if key is None and len(keys) == 1:
            key = keys[0]
        if key not in keys:
            raise ValueError(f"key: {path} holds arrays {keys}; pass key= one of them (got {key!r})")
        return archive[key]


def read_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """The array of an .npy, .npz (``key``: which array; optional if it holds one), .pt or numeric .csv file.

    A .csv needs a header line; every cell must parse as a float (an empty cell is NaN).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unknown extension, empty or unreadable file, a missing key, a non-numeric
            array, or a CSV cell that is not a number (its line and column).
    """
    path = check_path(path, ARRAY_SUFFIXES)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows, lines = read_csv(path)
        return _csv_floats(path, header, rows, lines)[0]
    if suffix == ".npz":
        array = _load_npz(path, key)
    elif suffix == ".pt":
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, dict):
            if key not in loaded:
                raise ValueError(
                    f"key: {path} holds a dict with keys {list(loaded)}; pass key= one of them (got {key!r})"
                )
            loaded = loaded[key]
        if not isinstance(loaded, Tensor):
            raise ValueError(f"path: expected {path} to hold a tensor, got {type(loaded).__name__}")
        array = loaded.numpy()
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"path: cannot read {path} as .npy ({err})") from err
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or array.ndim == 0:
        raise ValueError(
            f"path: expected a numeric array of shape (N, ...) in {path}, got dtype {array.dtype}, shape {array.shape}"
        )
    return array


def _csv_floats(path: Path, header: list[str], rows: list[list[str]], lines: list[int]) -> tuple[np.ndarray, list[str]]:
    """(N, D) float64 of the CSV cells (empty -> NaN) and the column names."""
    out = np.empty((len(rows), len(header)), dtype=np.float64)
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        for j, cell in enumerate(row):
            try:
                out[i, j] = float(cell) if cell else np.nan
            except ValueError:
                raise ValueError(
                    f"path: {path} line {line}, column {header[j]!r}: {cell!r} is not a number "
                    "(ArrayDataModule reads numeric CSVs; use TableFileDataModule for categorical columns)"
                ) from None
    return out, header


def check_nonfinite(nonfinite: str) -> None:
    """Raise ValueError unless ``nonfinite`` is "error" or "drop"."""
    if nonfinite not in ("error", "drop"):
        raise ValueError(f"nonfinite: unknown {nonfinite!r}; expected one of ['drop', 'error']")


def finite_rows(x: np.ndarray, nonfinite: NonFinite, where: Sequence[Any], what: str) -> np.ndarray:
    """(N,) bool: rows without NaN / inf; raise or warn (with a count) when some have them.

    Args:
        x: (N, ...) array.
        nonfinite: "error" raises naming the first rows; "drop" warns with the count.
        where: how to name row i in messages (file line numbers or row indices).
        what: "line" or "row".

    Raises:
        ValueError: with "error" and a non-finite row; or unknown ``nonfinite``.
    """
    check_nonfinite(nonfinite)
    good = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    bad = np.flatnonzero(~good)
    if bad.size and nonfinite == "error":
        first = [where[i] for i in bad[:5].tolist()]
        raise ValueError(
            f"data: {bad.size} {what}s hold NaN or inf, first at {what}s {first}; fix them or pass nonfinite='drop'"
        )
    if bad.size:
        warnings.warn(f"data: dropped {bad.size} {what}s holding NaN or inf (nonfinite='drop')", stacklevel=3)
    return good


class ArrayDataModule(RecordDataModule):
    """Numeric arrays from a file (module docstring), as (B, ...) float32 batches.

    Args:
        path: an .npy, .npz, .pt or numeric .csv file; rows are examples.
        key: which array of an .npz (or of a dict saved in a .pt); optional when it holds one.
        labels: optional class labels: a CSV column name, another array's key in the same .npz,
            or the path of an .npy / .npz / .pt file of N labels. Batches become ``(x0, cond)``.
        standardize: standardize each feature with the training split's mean and std.
        nonfinite: rows with NaN / inf: "error" (names the first) or "drop" (warns with a count).
        val_fraction: fraction of rows in the val split.
        test_fraction: fraction of rows in the test split.
        batch_size: rows per batch, >= 1.
        seed: non-negative seed of the split and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        FileNotFoundError: no file at ``path`` (or at a ``labels`` path).
        ValueError: unknown extension, empty file, non-numeric data, NaN / inf rows with
            ``nonfinite="error"``, labels of another length, bad fractions or sizes.
    """

    def __init__(
        self,
        path: str,
        key: str | None = None,
        labels: str | None = None,
        standardize: bool = True,
        nonfinite: NonFinite = "error",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(val_fraction, test_fraction, batch_size, seed, num_workers)
        check_nonfinite(nonfinite)
        self.path = check_path(path, ARRAY_SUFFIXES)
        self.key, self.label_source, self.standardize, self.nonfinite = key, labels, standardize, nonfinite
        self.columns: list[str] | None = None
        self.num_dropped = 0

    def _read(self) -> tuple[np.ndarray, np.ndarray | None, list[Any]]:
        """(data (N, ...) float64, labels (N,) or None, names of rows for messages)."""
        if self.path.suffix.lower() == ".csv":
            header, rows, lines = read_csv(self.path)
            label_col = None
            if self.label_source is not None:
                if self.label_source not in header:
                    raise ValueError(
                        f"labels: no column {self.label_source!r} in {self.path}; its columns are {header}"
                    )
                label_col = header.index(self.label_source)
            labels = None if label_col is None else np.array([row[label_col] for row in rows], dtype=object)
            keep = [j for j in range(len(header)) if j != label_col]
            data, self.columns = _csv_floats(
                self.path, [header[j] for j in keep], [[r[j] for j in keep] for r in rows], lines
            )
            return data, labels, lines
        data = read_array(self.path, self.key)
        labels = None if self.label_source is None else self._read_labels()
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"labels: {len(labels)} labels for {len(data)} rows of {self.path}")
        return data.astype(np.float64).reshape(len(data), *data.shape[1:] or (1,)), labels, list(range(len(data)))

    def _read_labels(self) -> np.ndarray:
        source = Path(self.label_source).expanduser()
        if source.suffix.lower() in (".npy", ".npz", ".pt") and (source.is_file() or "/" in self.label_source):
            return read_array(source).reshape(-1)
        if self.path.suffix.lower() == ".npz":
            return _load_npz(self.path, self.label_source).reshape(-1)
        raise FileNotFoundError(f"labels: no file at {self.label_source} (nor an array of that key in an .npz path)")

    def read_records(self) -> tuple[np.ndarray, np.ndarray | None]:
        data, labels, where = self._read()
        good = finite_rows(data, self.nonfinite, where, "line" if self.columns is not None else "row")
        self.num_dropped = int((~good).sum())
        if not good.any():
            raise ValueError(f"path: {self.path} has no row without NaN / inf")
        return data[good], (None if labels is None else labels[good])

    def build_format(self, train: np.ndarray) -> ArrayFormat:
        mean = std = None
        if self.standardize:
            mean = train.mean(axis=0)
            std = train.std(axis=0)
            std = np.where(std > 0, std, 1.0)
            mean, std = mean.tolist(), std.tolist()
        suffix = self.path.suffix.lower()
        return ArrayFormat(file_suffix=suffix, mean=mean, std=std, key=self.key, columns=self.columns)

    def encode(self, records: np.ndarray) -> Tensor:
        x = records
        if self._format.mean is not None:
            x = (x - np.asarray(self._format.mean)) / np.asarray(self._format.std)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.split("train").shape[1:])

    @property
    def num_label_classes(self) -> int | None:
        """Number of distinct training labels (``cond`` ids are in [0, this)), or None without labels."""
        vocab = self.sample_format.label_vocab
        return None if vocab is None else len(vocab)
