"""A mixed table from a CSV file with declared column kinds, as the fields of a ProductProcess.

Every column is declared: ``categorical=[...]`` names the categorical ones, ``numeric=[...]`` the
numeric ones (default: every other column). A column in neither list, or a "numeric" column with a
cell that is not a number, is an error naming it. Batches are dicts

    {"numeric": (B, D) float32 (the numeric columns, standardized with the training split's mean
     and std), <categorical column>: (B,) int64 ids}

so a config pairs a ``GaussianProcess`` with the "numeric" field and a ``CategoricalProcess`` with
K = ``categorical_fields()[name]`` with each categorical column. Category values are kept as
strings; the ids are the sorted distinct values of the *training* split (a value seen only in val /
test is an error naming it). Samples are written back as CSV with the original column names,
order and values (``diffkit.formats.TableFormat``). Empty numeric cells and NaN / inf are an error
naming the first lines, or dropped with ``nonfinite="drop"`` (a warning gives the count).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from diffkit.data._records import RecordDataModule, check_path
from diffkit.data.arrays import NonFinite, check_nonfinite, finite_rows
from diffkit.formats import TableFormat, read_csv

__all__ = ["TableFileDataModule", "NUMERIC_FIELD"]

NUMERIC_FIELD = "numeric"


class TableFileDataModule(RecordDataModule):
    """A CSV table with declared numeric and categorical columns (module docstring).

    Args:
        path: a .csv file with a header line.
        categorical: names of the categorical columns.
        numeric: names of the numeric columns; None: every column not in ``categorical``.
        nonfinite: rows with an empty, NaN or inf numeric cell: "error" or "drop".
        val_fraction: fraction of rows in the val split.
        test_fraction: fraction in the test split.
        batch_size: rows per batch, >= 1.
        seed: non-negative seed of the split and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unknown extension, empty file, a declared column missing from the header, a
            column neither numeric nor categorical, a non-number in a numeric column (its line),
            NaN / inf rows with ``nonfinite="error"``, a categorical column named "numeric" or
            holding a ".", a category seen only outside the training split.
    """

    def __init__(
        self,
        path: str,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] | None = None,
        nonfinite: NonFinite = "error",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(val_fraction, test_fraction, batch_size, seed, num_workers)
        check_nonfinite(nonfinite)
        self.path = check_path(path, (".csv",))
        self.categorical = list(categorical)
        self.numeric = None if numeric is None else list(numeric)
        self.nonfinite = nonfinite
        self.num_dropped = 0
        for name in self.categorical:
            if name == NUMERIC_FIELD or "." in name:
                raise ValueError(
                    f"categorical: column {name!r} cannot be a field name (not {NUMERIC_FIELD!r}, no '.'); rename it"
                )

    def _columns(self, header: list[str]) -> list[str]:
        """The numeric columns, after checking every column is declared once."""
        declared = self.categorical + (self.numeric or [])
        missing = [c for c in declared if c not in header]
        if missing:
            raise ValueError(f"columns: {missing} are not in {self.path}; its columns are {header}")
        both = sorted(set(self.categorical) & set(self.numeric or []))
        if both:
            raise ValueError(f"columns: {both} are declared both numeric and categorical")
        if self.numeric is None:
            return [c for c in header if c not in self.categorical]
        neither = [c for c in header if c not in declared]
        if neither:
            raise ValueError(
                f"columns: {neither} of {self.path} are neither numeric nor categorical; declare them in numeric= or "
                "categorical="
            )
        return list(self.numeric)

    def read_records(self) -> tuple[list[tuple], None]:
        header, rows, lines = read_csv(self.path)
        numeric = self._columns(header)
        self.header, self.numeric_columns = header, numeric
        index = {c: header.index(c) for c in header}
        values = np.empty((len(rows), len(numeric)), dtype=np.float64)
        for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
            for j, name in enumerate(numeric):
                cell = row[index[name]]
                try:
                    values[i, j] = float(cell) if cell else np.nan
                except ValueError:
                    raise ValueError(
                        f"path: {self.path} line {line}, column {name!r}: {cell!r} is not a number; "
                        "declare the column in categorical= if it is one"
                    ) from None
        good = finite_rows(values, self.nonfinite, lines, "line")
        self.num_dropped = int((~good).sum())
        records = [(values[i], [row[index[c]] for c in self.categorical]) for i, row in enumerate(rows) if good[i]]
        if not records:
            raise ValueError(f"path: {self.path} has no row without NaN / inf")
        return records, None

    def build_format(self, train: Sequence[tuple]) -> TableFormat:
        numeric = np.stack([r[0] for r in train]) if self.numeric_columns else np.zeros((len(train), 0))
        std = numeric.std(axis=0)
        categories = {c: sorted({r[1][j] for r in train}) for j, c in enumerate(self.categorical)}
        return TableFormat(
            columns=list(self.header),
            numeric=list(self.numeric_columns),
            mean=numeric.mean(axis=0).tolist(),
            std=np.where(std > 0, std, 1.0).tolist(),
            categories=categories,
        )

    def encode(self, records: Sequence[tuple]) -> dict[str, Tensor]:
        fmt = self._format
        out: dict[str, Tensor] = {}
        if fmt.numeric:
            raw = np.stack([r[0] for r in records]) if records else np.zeros((0, len(fmt.numeric)))
            values = (raw - np.asarray(fmt.mean)) / np.asarray(fmt.std)
            out[NUMERIC_FIELD] = torch.from_numpy(values.astype(np.float32))
        for j, name in enumerate(self.categorical):
            ids = {v: i for i, v in enumerate(fmt.categories[name])}
            unseen = sorted({r[1][j] for r in records} - set(ids))
            if unseen:
                raise ValueError(
                    f"column {name!r}: values {unseen[:5]} occur outside the training split only; use more data or "
                    "another seed"
                )
            out[name] = torch.tensor([ids[r[1][j]] for r in records], dtype=torch.int64)
        return out

    def categorical_fields(self) -> dict[str, int]:
        """Categorical column -> K, its number of distinct training values."""
        return {name: len(vocab) for name, vocab in self.sample_format.categories.items()}

    def numeric_fields(self) -> dict[str, int]:
        """{"numeric": D} (empty without numeric columns)."""
        d = len(self.sample_format.numeric)
        return {NUMERIC_FIELD: d} if d else {}

    def class_marginals(self, field: str) -> Tensor:
        """(K,) float64 training frequencies of a categorical column's values."""
        if field not in self.categorical:
            raise ValueError(f"field: expected one of {self.categorical}, got {field!r}")
        counts = torch.bincount(self.split("train")[field], minlength=self.categorical_fields()[field]).double()
        return counts / counts.sum()
