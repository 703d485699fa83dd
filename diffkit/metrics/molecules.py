"""Molecule metrics judged by RDKit: validity, uniqueness, novelty, connectivity, type distributions.

Functional cores take RDKit molecules (``diffkit.molecules.dense_to_mols`` builds them from dense
samples, unsanitized) and :class:`MoleculeMetrics` wraps them as a torchmetrics ``Metric`` over dense
batches. The definitions, for S generated molecules (an empty graph is invalid):

- **valid**: ``Chem.SanitizeMol`` succeeds on the whole molecule. This is DiGress's validity (its
  ``compute_validity``) and what MOSES's "valid" measures on the SMILES DiGress hands it: a
  molecule made of several fragments is valid if each fragment is.
- **valid_connected**: valid and one fragment (a stricter rule, reported beside it).
- **relaxed_valid**: the largest fragment (most atoms) sanitizes, whatever the others do.
  (DiGress's "relaxed validity" on QM9 instead allows partial charges; it is not this.)
- **connected**: one fragment, valid or not.
- **unique**: distinct canonical SMILES (no stereo) of the largest fragments of the valid
  molecules, divided by the number of valid molecules (DiGress, MOSES's unique@k with k = S).
- **novel**: unique SMILES not in the training set, divided by the number of unique ones (DiGress;
  MOSES's novelty). The training SMILES are canonicalized the same way.
- **vun**: valid, unique and novel, divided by S (the graph benchmarks' V.U.N.).
- **filters**: of the valid molecules (largest fragment), the fraction passing MOSES's filters
  (``moses.metrics.utils.mol_passes_filters``: no ring of 8 or more atoms, no charge, only C, N,
  S, O, F, Cl, Br, H, and no match of its MCF and PAINS SMARTS, read from the molsets wheel's
  ``mcf.csv`` / ``wehi_pains.csv``); NaN when molsets is not installed or nothing is valid.
- **atom_tv** / **bond_tv**: total variation distance (half the L1 distance) between the
  generated and the training frequencies of atom classes (over real nodes) and of bond classes
  1.. (over bonds: "no bond" is left out), as in DiGress's sampling metrics.

The ratios are NaN when their denominator is 0 (no valid or no unique molecule).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from diffkit.molecules import BOND_TYPES, AtomVocabulary, _rdkit, canonical_smiles, dense_to_mols

__all__ = [
    "MoleculeStats",
    "fragments",
    "moses_filter_patterns",
    "passes_moses_filters",
    "filters_fraction",
    "molecule_stats",
    "canonical_set",
    "type_frequencies",
    "total_variation",
    "MoleculeMetrics",
]


class MoleculeStats(NamedTuple):
    """Fractions of :func:`molecule_stats` (module docstring), and the counts they come from."""

    valid: float
    valid_connected: float
    relaxed_valid: float
    connected: float
    unique: float
    novel: float
    vun: float
    num_samples: int
    num_valid: int
    num_unique: int
    num_novel: int


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def fragments(mol: Any) -> list[Any]:
    """The connected fragments of ``mol`` as unsanitized molecules, largest (most atoms) first; [] for no atom."""
    Chem = _rdkit()
    if mol.GetNumAtoms() == 0:
        return []
    frags = list(Chem.GetMolFrags(Chem.Mol(mol), asMols=True, sanitizeFrags=False))
    return sorted(frags, key=lambda m: -m.GetNumAtoms())


def canonical_set(smiles: Iterable[str]) -> set[str]:
    """Canonical SMILES (no stereo) of the parsable ``smiles``, the form :func:`molecule_stats` compares."""
    Chem = _rdkit()
    out = set()
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        if mol is not None:
            out.add(Chem.MolToSmiles(mol, isomericSmiles=False))
    return out


def molecule_stats(mols: Sequence[Any], train_canonical: set[str]) -> MoleculeStats:
    """Validity, connectivity, uniqueness, novelty and V.U.N. of generated molecules (module docstring).

    Args:
        mols: S >= 1 RDKit molecules, unsanitized (they are copied, not modified).
        train_canonical: the training molecules' canonical SMILES (:func:`canonical_set`).

    Returns:
        MoleculeStats.

    Raises:
        ValueError: if ``mols`` is empty.
    """
    if len(mols) == 0:
        raise ValueError("mols: expected at least one generated molecule, got none")
    valid = valid_connected = relaxed = connected = 0
    largest_smiles: list[str] = []
    for mol in mols:
        frags = fragments(mol)
        if not frags:
            continue
        connected += len(frags) == 1
        whole = canonical_smiles(mol) is not None
        largest = canonical_smiles(frags[0])
        relaxed += largest is not None
        if whole and largest is not None:
            valid += 1
            valid_connected += len(frags) == 1
            largest_smiles.append(largest)
    unique = set(largest_smiles)
    novel = unique - train_canonical
    s = len(mols)
    return MoleculeStats(
        valid=valid / s, valid_connected=valid_connected / s, relaxed_valid=relaxed / s, connected=connected / s,
        unique=_ratio(len(unique), valid), novel=_ratio(len(novel), len(unique)), vun=len(novel) / s,
        num_samples=s, num_valid=valid, num_unique=len(unique), num_novel=len(novel),
    )  # fmt: skip


def type_frequencies(batch: Mapping[str, Tensor], num_atom_types: int) -> tuple[Tensor, Tensor]:
    """Atom-class frequencies over real nodes (K_X,) and bond-class frequencies over bonds (K_E - 1,), float64.

    Bonds are the real pairs i < j with E > 0; a batch without atoms (or bonds) gives zeros.
    """
    X, E, mask = batch["X"], batch["E"], batch["mask"]
    n = mask.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
    pairs = mask[:, :, None] & mask[:, None, :] & upper
    atoms = torch.bincount(X[mask].long(), minlength=num_atom_types).double()
    bonds = E[pairs & (E > 0)].long()
    bond_counts = (
        torch.bincount(bonds - 1, minlength=len(BOND_TYPES) - 1).double()
        if bonds.numel()
        else atoms.new_zeros(len(BOND_TYPES) - 1)
    )
    return atoms / atoms.sum().clamp_min(1), bond_counts / bond_counts.sum().clamp_min(1)


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """TV(p, q) = sum |p - q| / 2 of two frequency vectors of one shape: a float64 scalar in [0, 1]."""
    return (p.double() - q.double()).abs().sum() / 2


@functools.cache
def moses_filter_patterns() -> tuple[Any, ...] | None:
    """MOSES's MCF and PAINS SMARTS (from the molsets wheel, ``moses`` not imported), or None without molsets."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        return None
    Chem = _rdkit()
    folder = Path(next(iter(spec.submodule_search_locations))) / "metrics"
    smarts = [row[1] for row in list(csv.reader((folder / "mcf.csv").read_text().splitlines()))[1:] if len(row) > 1]
    for line in (folder / "wehi_pains.csv").read_text().splitlines():
        match = re.match(r'\s*"(.*?)"\s*,', line)
        if match:
            smarts.append(match.group(1))
    return tuple(Chem.MolFromSmarts(s) for s in smarts)


def passes_moses_filters(mol: Any, patterns: Sequence[Any]) -> bool:
    """MOSES's ``mol_passes_filters`` on a sanitized molecule (module docstring), with ``patterns`` from
    :func:`moses_filter_patterns`."""
    Chem = _rdkit()
    if any(len(ring) >= 8 for ring in mol.GetRingInfo().AtomRings()):
        return False
    if any(
        a.GetFormalCharge() != 0 or a.GetSymbol() not in {"C", "N", "S", "O", "F", "Cl", "Br", "H"}
        for a in mol.GetAtoms()
    ):
        return False
    with_h = Chem.AddHs(mol)
    return not any(with_h.HasSubstructMatch(p) for p in patterns)


def filters_fraction(smiles: Iterable[str]) -> float:
    """Fraction of ``smiles`` (valid molecules) passing MOSES's filters; NaN without molsets or without molecules."""
    patterns = moses_filter_patterns()
    Chem = _rdkit()
    mols = [m for m in (Chem.MolFromSmiles(s) for s in smiles) if m is not None]
    if patterns is None or not mols:
        return math.nan
    return sum(passes_moses_filters(m, patterns) for m in mols) / len(mols)


class MoleculeMetrics(Metric):
    """:func:`molecule_stats` and the type-distribution distances of dense molecule samples, as a torchmetrics Metric.

    ``update`` stores dense batches (padded to ``max_nodes``) in list states reduced with
    ``dist_reduce_fx="cat"``, so under DDP ``compute()`` sees every rank's molecules. ``compute()``
    returns float64 scalars named after :class:`MoleculeStats`' fractions, plus "filters", "atom_tv"
    and "bond_tv" (module docstring).

    Args:
        vocab: the node classes of the samples.
        train_smiles: the training molecules (novelty) as SMILES.
        train_batch: the training molecules as a dense batch (the reference type frequencies).
        max_nodes: N, the padded size of stored samples.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    atoms: list[Tensor]
    bonds: list[Tensor]
    mask: list[Tensor]

    #: Updated with the samples alone (its reference, the training molecules, is built in).
    two_sample = False

    def __init__(
        self,
        vocab: AtomVocabulary,
        train_smiles: Sequence[str],
        train_batch: Mapping[str, Tensor],
        max_nodes: int,
        **kwargs: Any,
    ) -> None:
        if not isinstance(vocab, AtomVocabulary):
            raise TypeError(f"vocab: expected an AtomVocabulary, got {type(vocab).__name__}")
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise ValueError(f"max_nodes: expected an int >= 1, got {max_nodes!r}")
        super().__init__(**kwargs)
        self.vocab = vocab
        self.max_nodes = max_nodes
        self.train_canonical = canonical_set(train_smiles)
        self.train_atoms, self.train_bonds = type_frequencies(train_batch, len(vocab))
        self.add_state("atoms", default=[], dist_reduce_fx="cat")
        self.add_state("bonds", default=[], dist_reduce_fx="cat")
        self.add_state("mask", default=[], dist_reduce_fx="cat")

    def update(self, samples: Mapping[str, Tensor]) -> None:
        """Add a dense batch {"X": (B, N') int, "E": (B, N', N') int, "mask": (B, N') bool}, N' <= max_nodes."""
        X, E, mask = samples["X"], samples["E"], samples["mask"]
        b, n = mask.shape
        if n > self.max_nodes:
            raise ValueError(f"samples: expected at most max_nodes = {self.max_nodes} nodes, got N = {n}")
        pad = self.max_nodes - n
        self.atoms.append(torch.nn.functional.pad(X.long(), (0, pad)).to(self.device, torch.uint8))
        self.bonds.append(torch.nn.functional.pad(E.long(), (0, pad, 0, pad)).to(self.device, torch.uint8))
        self.mask.append(torch.nn.functional.pad(mask, (0, pad)).to(self.device))

    def _batch(self) -> dict[str, Tensor]:
        cat = lambda v: torch.cat(v) if isinstance(v, list) else v  # noqa: E731 (states are tensors after a DDP sync)
        return {
            "X": cat(self.atoms).long().cpu(),
            "E": cat(self.bonds).long().cpu(),
            "mask": cat(self.mask).bool().cpu(),
        }

    def compute(self) -> dict[str, Tensor]:
        """The fractions and distances (module docstring) as float64 scalar tensors."""
        if isinstance(self.mask, list) and not self.mask:
            raise ValueError("MoleculeMetrics.compute: no samples; call update first.")
        batch = self._batch()
        mols = dense_to_mols(batch, self.vocab)
        stats = molecule_stats(mols, self.train_canonical)
        atoms, bonds = type_frequencies(batch, len(self.vocab))
        out = {
            k: torch.tensor(float(getattr(stats, k)), dtype=torch.float64)
            for k in ("valid", "valid_connected", "relaxed_valid", "connected", "unique", "novel", "vun")
        }
        largest = [
            canonical_smiles(fragments(m)[0]) for m in mols if m.GetNumAtoms() and canonical_smiles(m) is not None
        ]
        out["filters"] = torch.tensor(filters_fraction(largest), dtype=torch.float64)
        out["atom_tv"] = total_variation(atoms, self.train_atoms)
        out["bond_tv"] = total_variation(bonds, self.train_bonds)
        return out
