"""Token sequences from a file: a text file with one sequence a line, or integer ids (.npy / .pt).

Text is tokenized by character (``tokenizer="char"``) or on whitespace (``"whitespace"``). The
vocabulary is the sorted distinct tokens of the *training* split plus a final ``"<unk>"`` token for
tokens that appear only in val / test (their count is reported in a warning); it is saved in
checkpoints and ``diffkit sample`` decodes samples back to text lines.

Integer ids: an (N, L') int array with ids >= 0 and -1 as padding; the vocabulary is 0..max id
(over the whole file).

Every sequence has the fixed length ``seq_len``: longer ones are cropped (``too_long="crop"``, a
warning gives the count) or refused (``"error"``, naming the first line numbers); shorter ones are
padded with one extra class ``pad_id`` (= number of tokens), so ``num_classes`` = tokens + 1 is the
K of the CategoricalProcess. ``mask(x) = x != pad_id`` marks the real tokens; decoding drops the
padding. Batches are (B, seq_len) int64 Tensors. Blank lines are skipped (counted in a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from diffkit._checks import check_positive_int
from diffkit.data._records import RecordDataModule, check_path
from diffkit.data.arrays import read_array
from diffkit.formats import TokenFormat

__all__ = ["TokenDataModule", "read_text_lines", "tokenize"]

TOKEN_SUFFIXES = (".txt", ".npy", ".pt")
UNK = "<unk>"
Tokenizer = Literal["char", "whitespace"]
TooLong = Literal["crop", "error"]


def read_text_lines(path) -> tuple[list[str], list[int]]:
    """Non-blank lines (without their line break) and their 1-based line numbers; warns with the count of blank lines.

    Raises:
        ValueError: the file is not UTF-8 text (the line of the first bad byte), or has no non-blank line.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"path: {path} line {line} is not UTF-8 text ({err.reason})") from None
    lines, numbers, blank = [], [], 0
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            lines.append(line)
            numbers.append(i)
        else:
            blank += 1
    if not lines:
        raise ValueError(f"path: {path} has no non-blank line")
    if blank:
        warnings.warn(f"data: skipped {blank} blank lines of {path}", stacklevel=3)
    return lines, numbers


def tokenize(line: str, tokenizer: Tokenizer) -> list[str]:
    """A line's tokens: its characters ("char") or its whitespace-separated words ("whitespace")."""
    return list(line) if tokenizer == "char" else line.split()


class TokenDataModule(RecordDataModule):
    """Token sequences from a file (module docstring) as (B, seq_len) int64 batches.

    Args:
        path: a .txt file (one sequence a line) or an .npy / .pt (N, L') int array (-1 = padding).
        seq_len: L, the fixed length, >= 1.
        tokenizer: "char" or "whitespace" (text files only).
        too_long: sequences longer than L: "crop" (warns with a count) or "error" (names the lines).
        val_fraction: fraction of sequences in the val split.
        test_fraction: fraction in the test split.
        batch_size: sequences per batch, >= 1.
        seed: non-negative seed of the split and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unknown extension or option, empty file, ids < -1, too-long sequences with
            ``too_long="error"``.
    """

    def __init__(
        self,
        path: str,
        seq_len: int,
        tokenizer: Tokenizer = "char",
        too_long: TooLong = "crop",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(val_fraction, test_fraction, batch_size, seed, num_workers)
        check_positive_int("seq_len", seq_len)
        if tokenizer not in ("char", "whitespace"):
            raise ValueError(f"tokenizer: unknown {tokenizer!r}; expected one of ['char', 'whitespace']")
        if too_long not in ("crop", "error"):
            raise ValueError(f"too_long: unknown {too_long!r}; expected one of ['crop', 'error']")
        self.path = check_path(path, TOKEN_SUFFIXES)
        self.seq_len, self.tokenizer, self.too_long = seq_len, tokenizer, too_long
        self.is_text = self.path.suffix.lower() == ".txt"
        self.num_cropped = 0
        self.num_unknown = 0

    def read_records(self) -> tuple[list[list], None]:
        if self.is_text:
            lines, numbers = read_text_lines(self.path)
            seqs = [tokenize(line, self.tokenizer) for line in lines]
        else:
            ids = read_array(self.path)
            if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(
                    f"path: expected an (N, L) integer array of ids in {self.path}, got {ids.dtype} {ids.shape}"
                )
            if (ids < -1).any():
                raise ValueError(f"path: ids must be >= 0 (-1 = padding) in {self.path}, found {int(ids.min())}")
            seqs = [[int(i) for i in row if i >= 0] for row in ids]
            numbers = list(range(len(seqs)))
            self._max_id = int(ids.max())
        long = [n for n, s in zip(numbers, seqs, strict=True) if len(s) > self.seq_len]
        if long and self.too_long == "error":
            what = "lines" if self.is_text else "rows"
            raise ValueError(
                f"seq_len: {len(long)} sequences of {self.path} are longer than {self.seq_len}, first at {what} "
                f"{long[:5]}; "
                "raise seq_len or pass too_long='crop'"
            )
        if long:
            warnings.warn(
                f"data: cropped {len(long)} of {len(seqs)} sequences to seq_len={self.seq_len} (too_long='crop')",
                stacklevel=2,
            )
        self.num_cropped = len(long)
        return [s[: self.seq_len] for s in seqs], None

    def build_format(self, train: Sequence[list]) -> TokenFormat:
        if not self.is_text:
            return TokenFormat(
                vocab=None, tokenizer=None, pad_id=self._max_id + 1, file_suffix=self.path.suffix.lower()
            )
        vocab = sorted({tok for seq in train for tok in seq} - {UNK}) + [UNK]
        return TokenFormat(vocab=vocab, tokenizer=self.tokenizer, pad_id=len(vocab), file_suffix=".txt")

    def encode(self, records: Sequence[list]) -> Tensor:
        fmt = self._format
        out = torch.full((len(records), self.seq_len), fmt.pad_id, dtype=torch.int64)
        if fmt.vocab is None:
            for i, seq in enumerate(records):
                out[i, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
            return out
        ids = {tok: i for i, tok in enumerate(fmt.vocab)}
        unk, unknown = ids[UNK], 0
        for i, seq in enumerate(records):
            row = [ids.get(tok, unk) for tok in seq]
            unknown += sum(tok not in ids for tok in seq)
            out[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        if unknown:
            self.num_unknown += unknown
            warnings.warn(f"data: {unknown} tokens absent from the training split map to {UNK!r}", stacklevel=2)
        return out

    @property
    def num_classes(self) -> int:
        """K of the CategoricalProcess: tokens + 1 (the padding class)."""
        return self.sample_format.pad_id + 1

    @property
    def pad_id(self) -> int:
        """The padding class id (= number of tokens)."""
        return self.sample_format.pad_id

    def mask(self, x: Tensor) -> Tensor:
        """(B, L) bool: True on real tokens (x != pad_id)."""
        return x != self.pad_id

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one example: (seq_len,)."""
        return (self.seq_len,)

    def class_marginals(self) -> Tensor:
        """(K,) float64 class frequencies of the training split (padding included)."""
        counts = torch.bincount(self.split("train").flatten(), minlength=self.num_classes).double()
        return counts / counts.sum()
