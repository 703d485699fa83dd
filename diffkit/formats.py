"""Sample formats: what a checkpoint stores to give samples back in the user's own units and file format.

A file data module (``diffkit.data.ArrayDataModule`` and friends) builds a :class:`SampleFormat` from
its training split: standardization statistics, vocabularies, column names, the input file's kind.
Its ``state()`` is a dict of plain values that the data module's ``state_dict`` puts in every
checkpoint under ``"diffkit_sample_format"``; ``diffkit sample`` rebuilds it with
:func:`sample_format_from_checkpoint` and writes the samples beside its picture:

    ArrayFormat   -> .npy / .npz / .pt / .csv in the original units (standardization inverted)
    TokenFormat   -> .txt, one decoded sequence a line (or .npy / .pt of ids, -1 for padding)
    TableFormat   -> .csv with the original column names and category values
    GraphFormat   -> .g6 / .s6 / .pkl in the input's format (diffkit.data.graph_files)
    DigitsFormat  -> .npy of 8x8 gray levels 0..16 (diffkit.data.digits), and a PNG grid

Every format has ``decode(samples)`` (tensors -> the user's values), ``write(samples, path)`` and
``suffix`` (the file suffix it writes); a format that draws its own picture declares
``draws_samples = True`` and has ``plot(samples, path)``.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SAMPLE_FORMAT_KEY",
    "SampleFormat",
    "ArrayFormat",
    "TokenFormat",
    "TableFormat",
    "register_format",
    "format_from_state",
    "sample_format_from_checkpoint",
    "write_csv",
    "read_csv",
]

SAMPLE_FORMAT_KEY = "diffkit_sample_format"
_FORMATS: dict[str, type[SampleFormat]] = {}


def register_format(cls: type[SampleFormat]) -> type[SampleFormat]:
    """Class decorator: make ``cls`` rebuildable from its ``state()`` by :func:`format_from_state`."""
    _FORMATS[cls.kind] = cls
    return cls


@dataclasses.dataclass
class SampleFormat(abc.ABC):
    """Decoder and writer of samples (module docstring). Subclasses are dataclasses of plain fields."""

    kind: ClassVar[str] = ""
    draws_samples: ClassVar[bool] = False
    label_vocab: list | None = None  # class label values, id i <-> label_vocab[i] (None: no labels)

    @property
    @abc.abstractmethod
    def suffix(self) -> str:
        """The file suffix :meth:`write` uses, e.g. ".npy"."""

    @abc.abstractmethod
    def decode(self, samples: Any) -> Any:
        """Samples as the model gives them (tensors) -> the user's values."""

    @abc.abstractmethod
    def write(self, samples: Any, path: str | Path) -> Path:
        """Decode and write the samples to ``path`` (parent folders are created); returns the path."""

    def plot(self, samples: Any, path: str | Path, title: str = "") -> Path:  # pragma: no cover - only if draws_samples
        """Draw the samples (formats with ``draws_samples = True``)."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Plain values (``weights_only``-loadable) from which :func:`format_from_state` rebuilds the format."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


def format_from_state(state: Mapping[str, Any]) -> SampleFormat:
    """Rebuild a format from :meth:`SampleFormat.state`.

    Raises:
        ValueError: an unknown ``kind`` (the message lists the known ones).
    """
    import diffkit.data  # noqa: F401  (registers the graph and digits formats)

    state = dict(state)
    kind = state.pop("kind", None)
    if kind not in _FORMATS:
        raise ValueError(f"sample format: unknown kind {kind!r}; expected one of {sorted(_FORMATS)}")
    return _FORMATS[kind](**state)


def sample_format_from_checkpoint(checkpoint: Mapping[str, Any]) -> SampleFormat | None:
    """The sample format stored by a file data module's ``state_dict`` in a loaded checkpoint dict, or None."""
    for value in checkpoint.values():
        if isinstance(value, Mapping) and SAMPLE_FORMAT_KEY in value:
            return format_from_state(value[SAMPLE_FORMAT_KEY])
    return None


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------ CSV


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows of strings and their 1-based line numbers of a CSV file with a header line.

    Raises:
        ValueError: no header, an empty or duplicate column name, no data row, or a row with
            another number of cells than the header (its line number).
    """
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"path: {path} has no header line")
        header = [h.strip() for h in header]
        if "" in header or len(set(header)) != len(header):
            raise ValueError(f"path: {path} has empty or duplicate column names: {header}")
        rows, lines = [], []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"path: {path} line {reader.line_num} has {len(row)} cells, the header has {len(header)}"
                )
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    if not rows:
        raise ValueError(f"path: {path} has a header but no data row")
    return header, rows, lines


def write_csv(path: str | Path, header: list[str], rows: list[list[Any]]) -> Path:
    """Write a CSV with a header line; returns the path."""
    path = _prepare(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------ arrays


@register_format
@dataclasses.dataclass
class ArrayFormat(SampleFormat):
    """Numeric arrays: samples (B, *shape) in standardized units -> original units, x * std + mean.

    Attributes:
        file_suffix: the input's suffix (".npy", ".npz", ".pt" or ".csv"); samples are written in it.
        mean, std: per-feature statistics (nested lists of the example shape), or None without standardization.
        key: the array's key in an .npz (written under the same key).
        columns: the CSV column names (written as the header).
    """

    kind: ClassVar[str] = "array"
    file_suffix: str = ".npy"
    mean: list | None = None
    std: list | None = None
    key: str | None = None
    columns: list | None = None

    @property
    def suffix(self) -> str:
        return self.file_suffix

    def decode(self, samples: Tensor) -> np.ndarray:
        """(B, *shape) float -> (B, *shape) float64 in the data's units."""
        x = _numpy(samples).astype(np.float64)
        if self.mean is not None:
            x = x * np.asarray(self.std) + np.asarray(self.mean)
        return x

    def write(self, samples: Tensor, path: str | Path) -> Path:
        x, path = self.decode(samples), _prepare(path)
        if self.file_suffix == ".csv":
            return write_csv(path, list(self.columns), [[repr(float(v)) for v in row] for row in x.reshape(len(x), -1)])
        if self.file_suffix == ".npz":
            np.savez(path, **{self.key or "arr_0": x})
        elif self.file_suffix == ".pt":
            torch.save(torch.from_numpy(x), path)
        else:
            np.save(path, x)
        return path


# ------------------------------------------------------------------------------------ tokens


@register_format
@dataclasses.dataclass
class TokenFormat(SampleFormat):
    """Token sequences: ids -> text (a vocabulary) or ids; padding is one extra class, ``pad_id``.

    Attributes:
        vocab: token strings, id i <-> vocab[i]; None for integer-id input.
        tokenizer: "char" (joined with "") or "whitespace" (joined with " "); None for ids.
        pad_id: the padding class (= number of tokens); its positions are dropped when decoding.
        file_suffix: ".txt" for text, else the ids' input suffix (".npy" or ".pt").
    """

    kind: ClassVar[str] = "tokens"
    vocab: list | None = None
    tokenizer: str | None = None
    pad_id: int = 0
    file_suffix: str = ".txt"

    @property
    def suffix(self) -> str:
        return self.file_suffix

    def decode(self, samples: Tensor) -> list:
        """(B, L) int64 ids -> B strings (text) or B lists of ids, padding dropped."""
        ids = _numpy(samples).astype(np.int64)
        rows = [[int(i) for i in row if i != self.pad_id] for row in ids]
        if self.vocab is None:
            return rows
        sep = "" if self.tokenizer == "char" else " "
        return [sep.join(self.vocab[i] for i in row) for row in rows]

    def write(self, samples: Tensor, path: str | Path) -> Path:
        path = _prepare(path)
        if self.vocab is not None:
            path.write_text("".join(line + "\n" for line in self.decode(samples)), encoding="utf-8")
            return path
        ids = _numpy(samples).astype(np.int64)
        ids = np.where(ids == self.pad_id, -1, ids)
        torch.save(torch.from_numpy(ids), path) if self.file_suffix == ".pt" else np.save(path, ids)
        return path


# ------------------------------------------------------------------------------------ tables


@register_format
@dataclasses.dataclass
class TableFormat(SampleFormat):
    """Mixed tables: samples {"numeric": (B, D) standardized, <categorical column>: (B,) ids} -> CSV rows.

    Attributes:
        columns: all column names in the input's order (written in that order).
        numeric: numeric column names, the order of the "numeric" field's D entries.
        mean, std: (D,) statistics of the numeric columns (training split).
        categories: categorical column -> its values (strings) in id order.
    """

    kind: ClassVar[str] = "table"
    columns: list = dataclasses.field(default_factory=list)
    numeric: list = dataclasses.field(default_factory=list)
    mean: list = dataclasses.field(default_factory=list)
    std: list = dataclasses.field(default_factory=list)
    categories: dict = dataclasses.field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return ".csv"

    def decode(self, samples: Mapping[str, Tensor]) -> list[dict[str, Any]]:
        """The sample dict -> B rows {column: float or category string}."""
        columns: dict[str, list] = {}
        if self.numeric:
            values = _numpy(samples["numeric"]).astype(np.float64) * np.asarray(self.std) + np.asarray(self.mean)
            for j, name in enumerate(self.numeric):
                columns[name] = values[:, j].tolist()
        for name, vocab in self.categories.items():
            columns[name] = [vocab[int(i)] for i in _numpy(samples[name])]
        size = len(next(iter(columns.values())))
        return [{name: columns[name][b] for name in self.columns} for b in range(size)]

    def write(self, samples: Mapping[str, Tensor], path: str | Path) -> Path:
        rows = self.decode(samples)
        cells = [[repr(row[c]) if c in self.numeric else row[c] for c in self.columns] for row in rows]
        return write_csv(path, list(self.columns), cells)
