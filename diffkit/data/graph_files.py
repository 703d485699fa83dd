"""Graphs from a file: graph6 (.g6), sparse6 (.s6), or a pickled list of networkx graphs (.pkl).

graph6 / sparse6 files hold one graph a line (an optional ``>>graph6<<`` / ``>>sparse6<<`` header
is allowed); a line that does not parse is an error naming its line number. A pickle holds a list
of undirected simple ``nx.Graph``; with ``node_attr`` / ``edge_attr`` the values of those
attributes become node / edge classes (the sorted distinct values of the *training* split; edge
class 0 is "no edge"). Pickles run code when loaded: read only files you trust.

Batches are the dense dicts of ``diffkit.graphs`` ({"X": (B, N) int64, "E": (B, N, N) int64,
"mask": (B, N) bool}, N the largest graph of the file). Samples are written back in the input's
format with the original attribute values (:class:`GraphFormat`), and :class:`GraphFileDataModule`
has the facts ``diffkit evaluate-graphs`` needs (train / test graphs, ``max_nodes``, a ``validity``
rule given by import path).

SMILES files (.smi, one molecule a line) need RDKit (``pip install 'diffkit[molecules]'``): each
molecule is a graph of its heavy atoms with node attribute ``atom`` (type name with its charge:
"C", "N+", "O-") and edge attribute ``bond`` (Kekulé order 1, 2, 3), which are then the default
``node_attr`` / ``edge_attr``, and the default validity rule is RDKit sanitization of one connected
molecule (:func:`diffkit.molecules.is_valid_molecule_graph`). Samples are written back as SMILES,
"SMILES valid" or "SMILES invalid" a line. Other formats plug in through :data:`GRAPH_READERS` /
:data:`GRAPH_WRITERS` (suffix -> function).
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import networkx as nx
import torch
from torch import Tensor
from torchmetrics import MetricCollection

from diffkit.data._records import RecordDataModule, check_path
from diffkit.formats import SampleFormat, register_format
from diffkit.graphs import node_count_distribution, to_dense, to_networkx, type_marginals

__all__ = [
    "GraphFileDataModule",
    "GraphFormat",
    "GRAPH_READERS",
    "GRAPH_WRITERS",
    "read_graph_lines",
    "resolve_callable",
]

_HEADERS = {".g6": b">>graph6<<", ".s6": b">>sparse6<<"}
_PARSERS = {".g6": nx.from_graph6_bytes, ".s6": nx.from_sparse6_bytes}


def read_graph_lines(path: str | Path) -> list[nx.Graph]:
    """The graphs of a graph6 (.g6) or sparse6 (.s6) file, one a line (blank lines skipped).

    Raises:
        ValueError: a line that does not parse (its 1-based line number and the parser's reason).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    graphs = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(_HEADERS[suffix]):
            line = line[len(_HEADERS[suffix]) :]
        try:
            graphs.append(_PARSERS[suffix](line))
        except Exception as err:  # networkx raises NetworkXError, ValueError or IndexError on bad bytes
            raise ValueError(
                f"path: {path} line {number} is not a {suffix[1:]} graph ({type(err).__name__}: {err})"
            ) from None
    return graphs


def _read_pickle(path: Path) -> list[nx.Graph]:
    with open(path, "rb") as f:
        graphs = pickle.load(f)  # noqa: S301 (documented: trusted files only)
    if not isinstance(graphs, (list, tuple)) or not all(isinstance(g, nx.Graph) for g in graphs):
        raise ValueError(f"path: expected {path} to hold a list of networkx graphs, got {type(graphs).__name__}")
    return list(graphs)


def _read_smiles(path: Path) -> list[nx.Graph]:
    from diffkit.molecules import read_smiles_graphs  # RDKit: ImportError saying how to install it

    return read_smiles_graphs(path)


def _write_smiles(graphs: Sequence[nx.Graph], path: Path, suffix: str) -> None:
    from diffkit.molecules import write_smiles_graphs

    write_smiles_graphs(graphs, path, suffix)


def _write_lines(graphs: Sequence[nx.Graph], path: Path, suffix: str) -> None:
    write = nx.to_graph6_bytes if suffix == ".g6" else nx.to_sparse6_bytes
    with open(path, "wb") as f:
        for g in graphs:
            f.write(write(nx.convert_node_labels_to_integers(g), header=False))


def _write_pickle(graphs: Sequence[nx.Graph], path: Path, suffix: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(list(graphs), f)


#: suffix -> reader(path) -> list of nx.Graph. Register a reader for another format here.
GRAPH_READERS: dict[str, Callable[[Path], list[nx.Graph]]] = {
    ".g6": read_graph_lines,
    ".s6": read_graph_lines,
    ".pkl": _read_pickle,
    ".pickle": _read_pickle,
    ".smi": _read_smiles,
}
#: suffix -> writer(graphs, path, suffix). A reader's format without a writer has samples written as .g6.
GRAPH_WRITERS: dict[str, Callable[[Sequence[nx.Graph], Path, str], None]] = {
    ".g6": _write_lines,
    ".s6": _write_lines,
    ".pkl": _write_pickle,
    ".pickle": _write_pickle,
    ".smi": _write_smiles,
}


def resolve_callable(spec: str) -> Callable[..., Any]:
    """The object named by an import path "package.module.name" (or "package.module:name").

    Raises:
        ValueError: not a dotted path, or the module or the name is not found, or it is not callable.
    """
    import importlib

    module_name, sep, attr = spec.replace(":", ".").rpartition(".")
    if not sep or not module_name:
        raise ValueError(f"validity: expected an import path 'module.function', got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"validity: cannot import {spec!r} ({err})") from None
    if not callable(obj):
        raise ValueError(f"validity: {spec!r} is not callable")
    return obj


@register_format
@dataclasses.dataclass
class GraphFormat(SampleFormat):
    """Dense graph samples -> networkx graphs with the original attribute values, written as the input's format.

    Attributes:
        file_suffix: the input's suffix; samples are written with it (.g6 when it has no writer).
        node_attr / edge_attr: attribute names (None: unlabelled).
        node_values: node class i <-> node_values[i]; edge_values: edge class i + 1 <-> edge_values[i].
    """

    kind: ClassVar[str] = "graphs"
    file_suffix: str = ".g6"
    node_attr: str | None = None
    edge_attr: str | None = None
    node_values: list | None = None
    edge_values: list | None = None

    @property
    def suffix(self) -> str:
        return self.file_suffix if self.file_suffix in GRAPH_WRITERS else ".g6"

    def decode(self, samples: Mapping[str, Tensor]) -> list[nx.Graph]:
        """{"X", "E", "mask"} -> graphs with nodes 0..n-1 and the original attribute values."""
        graphs = to_networkx({k: v.cpu() for k, v in samples.items()}, node_attr="_x", edge_attr="_e")
        for g in graphs:
            for _, data in g.nodes(data=True):
                x = data.pop("_x")
                if self.node_attr is not None:
                    data[self.node_attr] = self.node_values[x]
            for _, _, data in g.edges(data=True):
                e = data.pop("_e")
                if self.edge_attr is not None:
                    data[self.edge_attr] = self.edge_values[e - 1]
        return graphs

    def write(self, samples: Mapping[str, Tensor] | Sequence[nx.Graph], path: str | Path) -> Path:
        graphs = self.decode(samples) if isinstance(samples, Mapping) else list(samples)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        GRAPH_WRITERS[self.suffix](graphs, path, self.suffix)
        return path


def _values(graphs: Sequence[nx.Graph], attr: str, nodes: bool) -> list:
    found = set()
    for b, g in enumerate(graphs):
        items = g.nodes(data=True) if nodes else ((u, v, d) for u, v, d in g.edges(data=True))
        for item in items:
            data = item[-1]
            if attr not in data:
                where = f"node {item[0]!r}" if nodes else f"edge {item[:2]!r}"
                raise ValueError(
                    f"{'node' if nodes else 'edge'}_attr: {where} of training graph {b} has no attribute {attr!r}"
                )
            found.add(data[attr])
    return sorted(found, key=lambda v: (str(type(v)), v))


class GraphFileDataModule(RecordDataModule):
    """Graphs from a file (module docstring), as padded dense batches.

    Args:
        path: a .g6, .s6, .pkl / .pickle or .smi file.
        node_attr: node attribute whose values are node classes (pickles); None: unlabelled nodes
            (a .smi file: "atom").
        edge_attr: edge attribute whose values are edge classes 1.. (pickles); None: edge / no edge
            (a .smi file: "bond").
        validity: import path of a rule ``graph -> bool`` for V.U.N. (``diffkit evaluate-graphs``), or None
            (a .smi file: ``diffkit.molecules.is_valid_molecule_graph``).
        val_fraction: fraction of graphs in the val split.
        test_fraction: fraction in the test split.
        batch_size: graphs per batch, >= 1.
        seed: non-negative seed of the split and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unknown extension, empty file, an unparsable line (its number), a graph that is
            directed, a multigraph or has a self-loop, a missing attribute, an attribute value seen
            only outside the training split.
    """

    def __init__(
        self,
        path: str,
        node_attr: str | None = None,
        edge_attr: str | None = None,
        validity: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(val_fraction, test_fraction, batch_size, seed, num_workers)
        self.path = check_path(path, tuple(GRAPH_READERS))
        if self.path.suffix.lower() == ".smi":  # molecules: atom types, bond orders, RDKit's validity
            node_attr = "atom" if node_attr is None else node_attr
            edge_attr = "bond" if edge_attr is None else edge_attr
            validity = "diffkit.molecules.is_valid_molecule_graph" if validity is None else validity
        self.node_attr, self.edge_attr, self.validity_path = node_attr, edge_attr, validity
        self._graph_splits: dict[str, list[nx.Graph]] = {}

    def read_records(self) -> tuple[list[nx.Graph], None]:
        graphs = GRAPH_READERS[self.path.suffix.lower()](self.path)
        if not graphs:
            raise ValueError(f"path: {self.path} holds no graph")
        for i, g in enumerate(graphs):
            if g.is_directed() or g.is_multigraph():
                raise ValueError(
                    f"path: graph {i} of {self.path} is {'directed' if g.is_directed() else 'a multigraph'}; "
                    "expected undirected simple graphs"
                )
        self._max_nodes = max(g.number_of_nodes() for g in graphs)
        return graphs, None

    def build_format(self, train: Sequence[nx.Graph]) -> GraphFormat:
        return GraphFormat(
            file_suffix=self.path.suffix.lower(),
            node_attr=self.node_attr,
            edge_attr=self.edge_attr,
            node_values=None if self.node_attr is None else _values(train, self.node_attr, True),
            edge_values=None if self.edge_attr is None else _values(train, self.edge_attr, False),
        )

    def encode(self, records: Sequence[nx.Graph]) -> dict[str, Tensor]:
        fmt, n = self._format, self._max_nodes
        if not records:  # an empty split (its fraction is 0)
            return {
                "X": torch.zeros(0, n, dtype=torch.int64),
                "E": torch.zeros(0, n, n, dtype=torch.int64),
                "mask": torch.zeros(0, n, dtype=torch.bool),
            }
        typed = []
        for g in records:
            h = nx.Graph()
            for v, data in g.nodes(data=True):
                h.add_node(
                    v,
                    _x=0
                    if fmt.node_attr is None
                    else self._class(fmt.node_values, data.get(fmt.node_attr), "node_attr", 0),
                )
            for u, v, data in g.edges(data=True):
                h.add_edge(
                    u,
                    v,
                    _e=1
                    if fmt.edge_attr is None
                    else self._class(fmt.edge_values, data.get(fmt.edge_attr), "edge_attr", 1),
                )
            typed.append(h)
        return to_dense(typed, max_nodes=self._max_nodes, node_attr="_x", edge_attr="_e")

    @staticmethod
    def _class(values: list, value: Any, arg: str, offset: int) -> int:
        try:
            return values.index(value) + offset
        except ValueError:
            raise ValueError(
                f"{arg}: value {value!r} occurs outside the training split only (training values: {values[:10]})"
            ) from None

    # -- graph facts (GraphDataModule's, for GraphMetrics and evaluate-graphs)
    def _graphs(self, name: str) -> list[nx.Graph]:
        if name not in self._graph_splits:
            self._graph_splits[name] = self.sample_format.decode(self.split(name))
        return self._graph_splits[name]

    def train_graphs(self) -> list[nx.Graph]:
        """The train split as networkx graphs (nodes 0..n-1, original attribute values)."""
        return self._graphs("train")

    def val_graphs(self) -> list[nx.Graph]:
        """The val split as networkx graphs."""
        return self._graphs("val")

    def test_graphs(self) -> list[nx.Graph]:
        """The test split as networkx graphs."""
        return self._graphs("test")

    @property
    def max_nodes(self) -> int:
        """N, the largest node count of the file: every batch is padded to it."""
        self.setup()
        return self._max_nodes

    @property
    def num_node_types(self) -> int:
        """K_X: node classes (1 for unlabelled nodes)."""
        values = self.sample_format.node_values
        return 1 if values is None else len(values)

    @property
    def num_edge_types(self) -> int:
        """K_E: edge classes including 0 = no edge (2 for unlabelled edges)."""
        values = self.sample_format.edge_values
        return 2 if values is None else len(values) + 1

    @property
    def validity(self) -> Callable[[nx.Graph], bool] | None:
        """The validity rule imported from ``validity`` (a graph -> bool function), or None."""
        return None if self.validity_path is None else resolve_callable(self.validity_path)

    def sample_metrics(self) -> MetricCollection:
        """``{"graph": GraphSampleMetrics}``, as for the built-in graph data: degree / clustering /
        orbit / spectral MMD^2 of sampled against held-out graphs, and V.U.N. under ``validity``
        (uniqueness and novelty only when no rule is given)."""
        from diffkit.metrics.graph_samples import GraphSampleMetrics

        return MetricCollection({"graph": GraphSampleMetrics(self.train_graphs(), self.max_nodes, self.validity)})

    def node_count_distribution(self) -> Tensor:
        """(max_nodes + 1,) float64: the train split's node-count frequencies."""
        dist = node_count_distribution(self.train_graphs())
        return torch.cat([dist, dist.new_zeros(self.max_nodes + 1 - dist.numel())])

    def class_marginals(self, field: str) -> Tensor:
        """Train-split class frequencies: "X" (K_X,) over real nodes, "E" (K_E,) over real pairs i < j."""
        if field not in ("X", "E"):
            raise ValueError(f"field: expected 'X' or 'E', got {field!r}")
        node_freq, edge_freq = type_marginals(self.split("train"), self.num_node_types, self.num_edge_types)
        return node_freq if field == "X" else edge_freq

    def state_dict(self) -> dict[str, Any]:
        """The base's (sample format, file hash) plus ``init_args``: what rebuilds this data module
        (path, attributes, validity rule, split), so ``diffkit evaluate-graphs`` finds the run's test split."""
        init_args = {
            "path": str(self.path),
            "node_attr": self.node_attr,
            "edge_attr": self.edge_attr,
            "validity": self.validity_path,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
        }
        return {**super().state_dict(), "init_args": init_args}
