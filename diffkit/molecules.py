"""Molecules as labelled dense graphs (DiGress's encoding), with RDKit.

A molecule of n heavy atoms is one graph of a dense batch (``diffkit.graphs``):

- node class X[i] = the index of atom i's (element, formal charge) in an :class:`AtomVocabulary`
  (e.g. ("C", "N", "O", "N+", "O-")), so charges are node classes, as DiGress;
- edge class E[i, j] in ``BOND_TYPES`` = {0: none, 1: single, 2: double, 3: triple}, read from the
  Kekulé form (RDKit ``Chem.Kekulize(..., clearAromaticFlags=True)``), so aromatic rings are
  alternating single / double bonds;
- hydrogens are implicit: they are not nodes, and decoding lets RDKit's sanitization add them
  back from the default valences (so an atom whose hydrogen count differs from its default
  valence, e.g. a charged [NH3+], round-trips only if its charge is part of its node class).

Decoding (:func:`dense_to_mols`) builds an RWMol from the classes and bonds without sanitizing; the
metrics (``diffkit.metrics.molecules``) decide validity with ``Chem.SanitizeMol``.

Reading SMILES (:func:`encode_smiles`, :func:`read_smiles_file`, :func:`load_moses`): three kinds of
bad input, each counted and named, never dropped silently. With ``on_error="skip"`` the molecule is
skipped and the returned :class:`SkipReport` s give a count and the first few examples per reason;
with ``on_error="raise"`` the first one raises ValueError naming it.

- "unparsable": RDKit cannot parse (or kekulize) the SMILES;
- "atom_type": an atom's (element, charge) is not in the vocabulary;
- "too_large": more heavy atoms than ``max_nodes``.

MOSES (Polykovskiy et al. 2020): the SMILES sets ship inside the ``molsets`` wheel as
``moses/dataset/data/{train,test,test_scaffolds}.csv.gz``; :func:`moses_file` finds them with
``importlib.util.find_spec("moses")`` without importing ``moses`` (whose own dependencies are not
needed: ``pip install --no-deps molsets==0.3.1``).

RDKit is an optional dependency (``pip install diffkit[molecules]``): it is imported inside the
functions that need it, so this module imports without it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BOND_TYPES",
    "MOSES_ATOMS",
    "AtomVocabulary",
    "SkipReport",
    "EncodedMolecules",
    "parse_atom_type",
    "mol_to_graph",
    "encode_smiles",
    "read_smiles_file",
    "moses_file",
    "load_moses",
    "dense_to_mols",
    "canonical_smiles",
    "read_smiles_graphs",
    "write_smiles_graphs",
    "graph_to_mol",
    "is_valid_molecule_graph",
]

#: Edge classes: 0 no bond, then the Kekulé bond orders.
BOND_TYPES: tuple[str, ...] = ("none", "single", "double", "triple")
#: MOSES's heavy-atom types (its filters keep C, N, S, O, F, Cl, Br and no charged atoms).
MOSES_ATOMS: tuple[str, ...] = ("C", "N", "S", "O", "F", "Cl", "Br")
#: How many bad SMILES a SkipReport keeps as examples.
MAX_EXAMPLES = 5

OnError = Literal["skip", "raise"]
SkipReason = Literal["unparsable", "atom_type", "too_large"]
_ATOM_RE = re.compile(r"^([A-Z][a-z]?)([+-]\d*)?$")


def _rdkit() -> Any:
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover - exercised only without RDKit
        raise ImportError(
            "diffkit.molecules needs RDKit: pip install 'diffkit[molecules]' (or pip install rdkit)"
        ) from err
    RDLogger.DisableLog("rdApp.*")  # parse errors are reported through SkipReport instead
    return Chem


def parse_atom_type(name: str) -> tuple[str, int]:
    """An atom type name -> (element symbol, formal charge).

    "C" -> ("C", 0), "N+" -> ("N", 1), "O-" -> ("O", -1), "Fe+2" -> ("Fe", 2).

    Raises:
        ValueError: if ``name`` is not an element symbol optionally followed by + / - and a count.
    """
    match = _ATOM_RE.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"name: expected an atom type like 'C', 'N+', 'O-' or 'Fe+2', got {name!r}")
    symbol, charge = match.groups()
    if not charge:
        return symbol, 0
    size = int(charge[1:]) if len(charge) > 1 else 1
    return symbol, size if charge[0] == "+" else -size


def _atom_name(symbol: str, charge: int) -> str:
    if charge == 0:
        return symbol
    sign = "+" if charge > 0 else "-"
    return f"{symbol}{sign}{abs(charge) if abs(charge) > 1 else ''}"


@dataclass(frozen=True)
class AtomVocabulary:
    """The node classes: atom type names in class order, e.g. ("C", "N", "O", "N+", "O-").

    Args:
        names: distinct atom type names (see :func:`parse_atom_type`).

    Raises:
        ValueError: if ``names`` is empty, repeats a type or holds a malformed name.
    """

    names: tuple[str, ...]
    types: tuple[tuple[str, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names:
            raise ValueError("names: expected at least one atom type, got none")
        types = tuple(parse_atom_type(n) for n in names)
        if len(set(types)) != len(types):
            raise ValueError(f"names: expected distinct atom types, got {list(names)}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "types", types)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, symbol: str, charge: int) -> int | None:
        """The class of (symbol, charge), or None if it is not in the vocabulary."""
        try:
            return self.types.index((symbol, charge))
        except ValueError:
            return None

    @classmethod
    def from_smiles(cls, smiles: Iterable[str]) -> AtomVocabulary:
        """The atom types present in parsable ``smiles``, most frequent first (unparsable ones are ignored)."""
        Chem = _rdkit()
        counts: dict[tuple[str, int], int] = {}
        for s in smiles:
            mol = Chem.MolFromSmiles(s)
            for atom in mol.GetAtoms() if mol is not None else ():
                key = (atom.GetSymbol(), atom.GetFormalCharge())
                counts[key] = counts.get(key, 0) + 1
        if not counts:
            raise ValueError("smiles: expected at least one parsable SMILES to build a vocabulary from, got none")
        order = sorted(counts, key=lambda k: (-counts[k], k))
        return cls(tuple(_atom_name(*k) for k in order))


@dataclass(frozen=True)
class SkipReport:
    """Molecules left out for one reason: how many and the first few, as "line: SMILES (detail)"."""

    reason: SkipReason
    count: int
    examples: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.count} skipped ({self.reason}), e.g. " + "; ".join(self.examples)


class EncodedMolecules(NamedTuple):
    """Molecules kept by :func:`encode_smiles`.

    Attributes:
        batch: {"X": (M, N) int64 atom classes, "E": (M, N, N) int64 bond classes, "mask": (M, N) bool}.
        smiles: the M input SMILES that were kept, in input order.
        skipped: one report per reason that skipped at least one molecule.
    """

    batch: dict[str, Tensor]
    smiles: list[str]
    skipped: tuple[SkipReport, ...]

    @property
    def num_skipped(self) -> int:
        return sum(r.count for r in self.skipped)


class _BadMolecule(Exception):
    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def mol_to_graph(mol: Any, vocab: AtomVocabulary) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Atom classes and (i, j, bond class) of an RDKit molecule, kekulized, hydrogens implicit.

    Explicit hydrogen atoms (as in "[H]C") are removed first. Raises ``_BadMolecule`` (internal)
    on an atom type outside ``vocab`` or a molecule RDKit cannot kekulize.
    """
    types, bonds = _kekule_graph(mol)
    atoms = []
    for i, (symbol, charge) in enumerate(types):
        k = vocab.index(symbol, charge)
        if k is None:
            name = _atom_name(symbol, charge)
            raise _BadMolecule("atom_type", f"atom {i} is {name!r}, not in the vocabulary {list(vocab.names)}")
        atoms.append(k)
    return atoms, bonds


def _kekule_graph(mol: Any) -> tuple[list[tuple[str, int]], list[tuple[int, int, int]]]:
    """((element, formal charge) per heavy atom, (i, j, bond order 1 / 2 / 3) per bond) of the
    kekulized molecule without explicit hydrogens; ``_BadMolecule`` if that fails."""
    Chem = _rdkit()
    mol = Chem.RemoveHs(Chem.Mol(mol), sanitize=False)
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as err:  # RDKit raises KekulizeException, a RuntimeError subclass
        raise _BadMolecule("unparsable", f"cannot kekulize: {err}") from err
    types = [(atom.GetSymbol(), atom.GetFormalCharge()) for atom in mol.GetAtoms()]
    bonds = []
    for bond in mol.GetBonds():
        order = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}.get(bond.GetBondType())
        if order is None:
            raise _BadMolecule(
                "unparsable", f"bond {bond.GetIdx()} has type {bond.GetBondType()}, not single / double / triple"
            )
        bonds.append((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), order))
    return types, bonds


def encode_smiles(
    smiles: Sequence[str],
    vocab: AtomVocabulary,
    max_nodes: int,
    on_error: OnError = "skip",
    line_numbers: Sequence[int] | None = None,
) -> EncodedMolecules:
    """SMILES -> one dense batch padded to ``max_nodes`` (module docstring for the encoding and bad input).

    Args:
        smiles: SMILES strings.
        vocab: the node classes.
        max_nodes: N, the padded size; a molecule with more heavy atoms is bad input ("too_large").
        on_error: "skip" (count and report) or "raise" (ValueError at the first bad molecule).
        line_numbers: the number each SMILES is given in messages (its file's line number); None:
            1, 2, ...

    Returns:
        EncodedMolecules; a warning summarizes the skipped molecules, if any.

    Raises:
        ValueError: bad ``on_error`` / ``max_nodes`` / ``line_numbers``, a bad molecule with
            ``on_error="raise"``, or no molecule left.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error: expected one of ['raise', 'skip'], got {on_error!r}")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes: expected an int >= 1, got {max_nodes!r}")
    numbers = range(1, len(smiles) + 1) if line_numbers is None else line_numbers
    if len(numbers) != len(smiles):
        raise ValueError(f"line_numbers: expected one per SMILES ({len(smiles)}), got {len(numbers)}")
    Chem = _rdkit()
    graphs, kept = [], []
    bad: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for line, s in zip(numbers, smiles, strict=True):
        try:
            mol = Chem.MolFromSmiles(s)
            if mol is None:
                raise _BadMolecule("unparsable", "RDKit cannot parse it")
            if mol.GetNumHeavyAtoms() > max_nodes:
                raise _BadMolecule("too_large", f"{mol.GetNumHeavyAtoms()} heavy atoms > max_nodes = {max_nodes}")
            graphs.append(mol_to_graph(mol, vocab))
            kept.append(s)
        except _BadMolecule as err:
            message = f"{line}: {s!r} ({err.detail})"
            if on_error == "raise":
                raise ValueError(f"Bad molecule ({err.reason}) at {message}.") from None
            counts[err.reason] = counts.get(err.reason, 0) + 1
            bad.setdefault(err.reason, [])
            if len(bad[err.reason]) < MAX_EXAMPLES:
                bad[err.reason].append(message)
    reports = tuple(SkipReport(r, counts[r], tuple(bad[r])) for r in counts)  # type: ignore[arg-type]
    if reports:
        warnings.warn("encode_smiles: " + " | ".join(str(r) for r in reports), stacklevel=2)
    if not graphs:
        raise ValueError(
            f"smiles: expected at least one usable SMILES, got {sum(counts.values())}, all bad: "
            + " | ".join(map(str, reports))
        )
    return EncodedMolecules(_pad(graphs, max_nodes), kept, reports)


def _pad(graphs: list[tuple[list[int], list[tuple[int, int, int]]]], max_nodes: int) -> dict[str, Tensor]:
    size = len(graphs)
    X = torch.zeros(size, max_nodes, dtype=torch.int64)
    E = torch.zeros(size, max_nodes, max_nodes, dtype=torch.int64)
    mask = torch.zeros(size, max_nodes, dtype=torch.bool)
    for b, (atoms, bonds) in enumerate(graphs):
        X[b, : len(atoms)] = torch.tensor(atoms, dtype=torch.int64)
        mask[b, : len(atoms)] = True
        for i, j, k in bonds:
            E[b, i, j] = E[b, j, i] = k
    return {"X": X, "E": E, "mask": mask}


def _smiles_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, first field) of each non-empty line of a (optionally gzipped) SMILES / CSV file:
    the first whitespace- or comma-separated field is the SMILES (the rest, e.g. a name, is ignored)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if text:
                yield number, re.split(r"[\s,]", text, maxsplit=1)[0]


def _is_header(number: int, field: str) -> bool:
    """Whether a line is a header: the first line, its first field "SMILES"."""
    return number == 1 and field.upper() == "SMILES"


def _read_lines(path: Path, limit: int | None, skip_header: bool) -> tuple[list[str], list[int]]:
    """First column of the non-empty lines of a (optionally gzipped) SMILES / CSV file, and their line numbers."""
    out: list[str] = []
    numbers: list[int] = []
    for number, smiles in _smiles_lines(path):
        if skip_header and _is_header(number, smiles):
            continue
        out.append(smiles)
        numbers.append(number)
        if limit is not None and len(out) >= limit:
            break
    return out, numbers


def read_smiles_file(
    path: str | os.PathLike,
    vocab: AtomVocabulary | None,
    max_nodes: int,
    limit: int | None = None,
    on_error: OnError = "skip",
) -> tuple[EncodedMolecules, AtomVocabulary]:
    """A user's SMILES file (``.smi``, ``.txt`` or ``.csv``, optionally ``.gz``) -> dense molecules.

    One molecule a line: the first whitespace- or comma-separated field is the SMILES (the rest,
    e.g. a name, is ignored); a first line whose first field is "SMILES" is a header. Blank
    lines are ignored.

    Args:
        path: the file.
        vocab: node classes; None builds one from the file's molecules (most frequent first).
        max_nodes: largest heavy-atom count kept.
        limit: read at most this many SMILES (the first ones), or all.
        on_error: see :func:`encode_smiles`.

    Returns:
        (EncodedMolecules, the vocabulary used).

    Raises:
        ValueError: missing file, ``limit`` < 1, or see :func:`encode_smiles`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: expected a SMILES file, got {str(path)!r}, which does not exist")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected None or an int >= 1, got {limit!r}")
    smiles, numbers = _read_lines(path, limit, skip_header=True)
    vocab = AtomVocabulary.from_smiles(smiles) if vocab is None else vocab
    return encode_smiles(smiles, vocab, max_nodes, on_error, line_numbers=numbers), vocab


MosesSplit = Literal["train", "test", "test_scaffolds"]


def moses_file(split: MosesSplit) -> Path:
    """The path of a MOSES split inside the installed ``molsets`` wheel (``moses`` is not imported).

    Raises:
        ValueError: unknown ``split``.
        ImportError: ``molsets`` is not installed (the message says how to install it).
    """
    if split not in ("train", "test", "test_scaffolds"):
        raise ValueError(f"split: expected one of ['test', 'test_scaffolds', 'train'], got {split!r}")
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("MOSES data needs the molsets wheel: pip install --no-deps molsets==0.3.1")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "data" / f"{split}.csv.gz"
    if not path.is_file():
        raise ImportError(
            f"The installed molsets has no {path}; install molsets==0.3.1 (pip install --no-deps molsets==0.3.1)."
        )
    return path


def load_moses(
    split: MosesSplit,
    limit: int | None = None,
    max_nodes: int = 27,
    vocab: AtomVocabulary | None = None,
    on_error: OnError = "skip",
) -> EncodedMolecules:
    """The first ``limit`` molecules of a MOSES split as dense graphs (vocabulary ``MOSES_ATOMS`` by default).

    Args:
        split: "train", "test" or "test_scaffolds".
        limit: the first ``limit`` SMILES of the file (None: all; train has about 1.6 M).
        max_nodes: N; larger molecules are reported as "too_large".
        vocab: node classes (default ``MOSES_ATOMS``).
        on_error: see :func:`encode_smiles`.
    """
    path = moses_file(split)
    encoded, _ = read_smiles_file(
        path, AtomVocabulary(MOSES_ATOMS) if vocab is None else vocab, max_nodes, limit, on_error
    )
    return encoded


def dense_to_mols(batch: dict[str, Tensor], vocab: AtomVocabulary) -> list[Any]:
    """Dense molecules -> unsanitized RDKit molecules (``Chem.Mol``), one per graph.

    Node class k becomes atom ``vocab.types[k]`` (with its formal charge), E's upper triangle
    (i < j) the bonds of ``BOND_TYPES``. Nothing is checked chemically: pass the result to
    ``Chem.SanitizeMol`` (or the metrics) to learn whether it is a valid molecule.

    Args:
        batch: {"X": (B, N) int in [0, len(vocab)), "E": (B, N, N) int in [0, 4), "mask": (B, N) bool}.
        vocab: the node classes.

    Raises:
        ValueError: a class out of range.
    """
    Chem = _rdkit()
    X, E, mask = batch["X"].cpu(), batch["E"].cpu(), batch["mask"].cpu()
    for name, t, k in (("X", X[mask], len(vocab)), ("E", E, len(BOND_TYPES))):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ValueError(
                f"batch[{name!r}]: expected classes in [0, {k}), got values in [{int(t.min())}, {int(t.max())}]"
            )
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mols = []
    for b in range(X.shape[0]):
        real = mask[b].nonzero().squeeze(-1).tolist()
        mol = Chem.RWMol()
        for i in real:
            symbol, charge = vocab.types[int(X[b, i])]
            atom = Chem.Atom(symbol)
            atom.SetFormalCharge(charge)
            mol.AddAtom(atom)
        sub = E[b][real][:, real]
        for i in range(len(real)):
            for j in range(i + 1, len(real)):
                if int(sub[i, j]):
                    mol.AddBond(i, j, kinds[int(sub[i, j])])
        mols.append(mol.GetMol())
    return mols


def canonical_smiles(mol: Any) -> str | None:
    """RDKit's canonical SMILES (no stereo) of a copy of ``mol`` after sanitization, or None if it fails."""
    Chem = _rdkit()
    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several sanitization exception types
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=False)


# ------------------------------------------------------------------ SMILES files as networkx graphs
#: Node / edge attributes of the graphs :func:`read_smiles_graphs` returns (``GraphFileDataModule``'s
#: defaults for a .smi file): the atom type name ("C", "N+", ...) and the Kekulé bond order (1, 2, 3).
ATOM_ATTR, BOND_ATTR = "atom", "bond"


def read_smiles_graphs(path: str | os.PathLike) -> list[Any]:
    """A SMILES file (one molecule a line, first field; a "SMILES" header and blank lines skipped)
    -> networkx graphs of the heavy atoms, nodes labelled ``atom`` (type name, charge included:
    "C", "N+", "O-") and edges ``bond`` (Kekulé order 1, 2 or 3), hydrogens implicit (the module
    docstring's encoding). What ``GraphFileDataModule`` reads for a .smi file.

    Raises:
        ValueError: a line RDKit cannot parse or kekulize, or with a bond that is not single /
            double / triple (its 1-based line number and the SMILES).
        ImportError: RDKit is not installed.
    """
    import networkx as nx

    Chem = _rdkit()
    path = Path(path)
    graphs = []
    for number, smiles in _smiles_lines(path):
        if _is_header(number, smiles):
            continue
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"path: {path} line {number} is not a SMILES RDKit can parse: {smiles!r}")
        try:
            types, bonds = _kekule_graph(mol)
        except _BadMolecule as err:
            raise ValueError(f"path: {path} line {number} ({smiles!r}): {err.detail}") from None
        g = nx.Graph()
        g.add_nodes_from((i, {ATOM_ATTR: _atom_name(*type_)}) for i, type_ in enumerate(types))
        g.add_edges_from((i, j, {BOND_ATTR: order}) for i, j, order in bonds)
        graphs.append(g)
    return graphs


def graph_to_mol(graph: Any) -> Any:
    """A networkx graph labelled as :func:`read_smiles_graphs` returns it -> an unsanitized RDKit
    molecule (nodes in ``graph.nodes()`` order).

    Raises:
        ValueError: a node without a valid ``atom`` type name, or an edge whose ``bond`` is not 1, 2 or 3.
    """
    Chem = _rdkit()
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    index = {}
    for v, data in graph.nodes(data=True):
        symbol, charge = parse_atom_type(data.get(ATOM_ATTR))
        atom = Chem.Atom(symbol)
        atom.SetFormalCharge(charge)
        index[v] = mol.AddAtom(atom)
    for u, v, data in graph.edges(data=True):
        order = data.get(BOND_ATTR)
        if order not in kinds:
            raise ValueError(f"graph: edge ({u}, {v}) has {BOND_ATTR}={order!r}; expected 1, 2 or 3")
        mol.AddBond(index[u], index[v], kinds[order])
    return mol.GetMol()


def is_valid_molecule_graph(graph: Any) -> bool:
    """Whether a labelled graph (:func:`graph_to_mol`) is a molecule RDKit sanitizes, connected (one
    fragment) and non-empty: the validity rule of a .smi ``GraphFileDataModule``."""
    if graph.number_of_nodes() == 0:
        return False
    try:
        mol = graph_to_mol(graph)
    except ValueError:
        return False
    smiles = canonical_smiles(mol)
    return smiles is not None and "." not in smiles


def write_smiles_graphs(graphs: Sequence[Any], path: str | os.PathLike, suffix: str = ".smi") -> None:
    """Labelled graphs -> a SMILES file, one line each: "SMILES valid" (canonical, sanitized) or
    "SMILES invalid" (RDKit's unsanitized SMILES of the graph as it is), in order."""
    Chem = _rdkit()
    with open(path, "w") as f:
        for g in graphs:
            mol = graph_to_mol(g)
            smiles = canonical_smiles(mol)
            if smiles is None:
                f.write(f"{Chem.MolToSmiles(mol, canonical=False) or '-'} invalid\n")
            else:
                f.write(f"{smiles} valid\n")
