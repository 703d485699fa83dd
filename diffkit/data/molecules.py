"""Molecules as dense labelled graphs for DiGress-style diffusion: MOSES or a user's SMILES file.

:class:`MoleculeDataModule` serves dense batches {"X": atom classes, "E": bond classes, "mask"}
(encoding in ``diffkit.molecules``) through the same loaders as ``GraphDataModule``
(``SplitLoaders``: the train loader shuffles in an order fixed by (seed, epoch) and resumes
mid-epoch). Splits:

- ``source="moses"``: train and val are the first ``num_train`` and the next ``num_val`` usable
  molecules of MOSES's train file, test the first ``num_test`` of its test file (the files are
  read from the installed molsets wheel, ``diffkit.molecules.moses_file``);
- ``source=<path>``: a SMILES file (``.smi`` / ``.txt`` / ``.csv``, optionally gzipped; one
  molecule a line), shuffled with ``seed`` and cut into ``num_train`` / ``num_val`` / ``num_test``
  (None for train: all the rest).

Bad molecules (unparsable, atom type outside ``atom_types``, more than ``max_nodes`` heavy atoms)
are skipped with a warning that counts them and names the first few, or raise with
``on_error="raise"``; :attr:`MoleculeDataModule.skipped` keeps the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning
import numpy as np
import torch
from torch import Tensor
from torchmetrics import MetricCollection

from diffkit._checks import check_non_negative_int, check_positive_int
from diffkit.data._base import SplitLoaders, stream_seed
from diffkit.graphs import node_count_distribution, to_networkx, type_marginals
from diffkit.molecules import (
    BOND_TYPES,
    MOSES_ATOMS,
    AtomVocabulary,
    SkipReport,
    load_moses,
    moses_file,
    read_smiles_file,
)

__all__ = ["MoleculeDataModule"]


def _take(batch: dict[str, Tensor], index: Sequence[int] | slice) -> dict[str, Tensor]:
    return {k: v[index] for k, v in batch.items()}


class MoleculeDataModule(SplitLoaders, lightning.LightningDataModule):
    """MOSES (a subset) or a SMILES file as dense molecule batches (module docstring).

    Args:
        source: "moses" or the path of a SMILES file.
        num_train: training molecules (None: all the file's rest; for MOSES, all 1.6 M).
        num_val: validation molecules.
        num_test: test molecules.
        atom_types: the node classes (e.g. ["C", "N", "O", "N+", "O-"]); default ``MOSES_ATOMS``
            for MOSES, else the types present in the file, most frequent first.
        max_nodes: N, the padded size (heavy atoms).
        batch_size: molecules per batch.
        seed: seed of the file split and the shuffling.
        on_error: "skip" (count and report bad molecules) or "raise".
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        source: str = "moses",
        num_train: int | None = 10000,
        num_val: int = 256,
        num_test: int = 1000,
        atom_types: list[str] | None = None,
        max_nodes: int = 27,
        batch_size: int = 64,
        seed: int = 0,
        on_error: Literal["skip", "raise"] = "skip",
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if num_train is not None:
            check_positive_int("num_train", num_train)
        check_positive_int("num_val", num_val)
        check_positive_int("num_test", num_test)
        check_positive_int("max_nodes", max_nodes)
        check_positive_int("batch_size", batch_size)
        check_non_negative_int("seed", seed)
        check_non_negative_int("num_workers", num_workers)
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error: expected one of ['raise', 'skip'], got {on_error!r}")
        if source != "moses" and not Path(source).is_file():
            raise ValueError(f"source: expected 'moses' or a SMILES file, got {source!r}, which is neither")
        self.source, self.num_train, self.num_val, self.num_test = source, num_train, num_val, num_test
        self.vocab = None if atom_types is None else AtomVocabulary(tuple(atom_types))
        if self.vocab is None and source == "moses":
            self.vocab = AtomVocabulary(MOSES_ATOMS)
        self.max_nodes_arg = max_nodes
        self.batch_size, self.seed, self.on_error, self.num_workers = batch_size, seed, on_error, num_workers
        self.skipped: tuple[SkipReport, ...] = ()
        self._splits: dict[str, dict[str, Tensor]] | None = None
        self._smiles: dict[str, list[str]] = {}

    # -- data
    def prepare_data(self) -> None:
        """Check that the MOSES files are installed (nothing is downloaded)."""
        if self.source == "moses":
            moses_file("train")

    def setup(self, stage: str | None = None) -> None:
        """Read and encode the molecules once; later calls reuse them."""
        if self._splits is not None:
            return
        if self.source == "moses":
            self._setup_moses()
        else:
            self._setup_file()

    def _setup_moses(self) -> None:
        n_train = None if self.num_train is None else self.num_train + self.num_val
        train = load_moses("train", n_train, self.max_nodes_arg, self.vocab, self.on_error)
        test = load_moses("test", self.num_test, self.max_nodes_arg, self.vocab, self.on_error)
        self.skipped = train.skipped + test.skipped
        n_fit = len(train.smiles) - self.num_val
        if n_fit < 1:
            raise ValueError(
                f"num_val: expected more usable MOSES training molecules than num_val = {self.num_val}, got "
                f"{len(train.smiles)}"
            )
        self._splits = {
            "train": _take(train.batch, slice(0, n_fit)),
            "val": _take(train.batch, slice(n_fit, None)),
            "test": test.batch,
        }
        self._smiles = {"train": train.smiles[:n_fit], "val": train.smiles[n_fit:], "test": test.smiles}

    def _setup_file(self) -> None:
        encoded, vocab = read_smiles_file(self.source, self.vocab, self.max_nodes_arg, None, self.on_error)
        self.vocab, self.skipped = vocab, encoded.skipped
        m = len(encoded.smiles)
        n_train = m - self.num_val - self.num_test if self.num_train is None else self.num_train
        if n_train < 1 or n_train + self.num_val + self.num_test > m:
            raise ValueError(
                f"num_train, num_val, num_test: expected a sum <= {m} usable molecules in {self.source!r} "
                f"(train >= 1), got {self.num_train}, {self.num_val}, {self.num_test}"
            )
        order = np.random.default_rng(stream_seed(self.seed, "structure")).permutation(m).tolist()
        cuts = {
            "train": order[:n_train],
            "val": order[n_train : n_train + self.num_val],
            "test": order[n_train + self.num_val : n_train + self.num_val + self.num_test],
        }
        self._splits = {k: _take(encoded.batch, idx) for k, idx in cuts.items()}
        self._smiles = {k: [encoded.smiles[i] for i in idx] for k, idx in cuts.items()}

    def split(self, name: Literal["train", "val", "test"]) -> dict[str, Tensor]:
        """A whole split as one dense batch {"X": (M, N) int64, "E": (M, N, N) int64, "mask": (M, N) bool}."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"name: expected one of ['train', 'val', 'test'], got {name!r}")
        self.setup()
        return self._splits[name]

    def smiles(self, name: Literal["train", "val", "test"]) -> list[str]:
        """The input SMILES of a split, in the split's order."""
        self.split(name)
        return list(self._smiles[name])

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records of the data: enough to rebuild the splits for an evaluation."""
        return {
            "source": self.source,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_test": self.num_test,
            "atom_types": None if self.vocab is None else list(self.vocab.names),
            "max_nodes": self.max_nodes_arg,
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the data are a function of the constructor's arguments."""

    # -- dataset facts
    @property
    def max_nodes(self) -> int:
        """N: every batch is padded to it."""
        return self.max_nodes_arg

    @property
    def num_node_types(self) -> int:
        """K_X: the atom classes."""
        self.setup()
        return len(self.vocab)

    @property
    def num_edge_types(self) -> int:
        """K_E = 4: none, single, double, triple."""
        return len(BOND_TYPES)

    @property
    def validity(self) -> None:
        """Molecules have no graph validity rule: use :meth:`sample_metrics` (RDKit)."""
        return None

    def node_count_distribution(self) -> Tensor:
        """(max_nodes + 1,) float64: the train split's heavy-atom-count frequencies."""
        dist = node_count_distribution(to_networkx(self.split("train")))
        return torch.cat([dist, dist.new_zeros(self.max_nodes + 1 - dist.numel())])

    def class_marginals(self, field: Literal["X", "E"]) -> Tensor:
        """Train-split class frequencies: "X" (K_X,) over real atoms, "E" (4,) over real pairs i < j."""
        if field not in ("X", "E"):
            raise ValueError(f"field: expected 'X' or 'E', got {field!r}")
        node_freq, edge_freq = type_marginals(self.split("train"), self.num_node_types, self.num_edge_types)
        return node_freq if field == "X" else edge_freq

    def sample_metrics(self, **kwargs: Any) -> MetricCollection:
        """``{"molecules": MoleculeMetrics}``: RDKit validity, uniqueness, novelty, ... against this
        module's training molecules (:class:`diffkit.metrics.molecules.MoleculeMetrics`)."""
        from diffkit.metrics.molecules import MoleculeMetrics

        return MetricCollection(
            {
                "molecules": MoleculeMetrics(
                    self.atom_vocabulary, self.smiles("train"), self.split("train"), self.max_nodes, **kwargs
                )
            }
        )

    @property
    def atom_vocabulary(self) -> AtomVocabulary:
        """The node classes (built from the file at :meth:`setup` when ``atom_types`` is None)."""
        self.setup()
        return self.vocab
