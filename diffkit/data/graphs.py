"""Synthetic graph datasets of the SPECTRE / DiGress benchmarks, generated locally from a seed.

Generators (networkx, numpy and scipy only; no downloads), each deterministic given its seed:

- :func:`planar_graphs`: Delaunay triangulations of points uniform in the unit square (SPECTRE).
- :func:`sbm_graphs`: stochastic block models with 2-5 blocks of 20-40 nodes, p = 0.3 / 0.005 (SPECTRE).
- :func:`tree_graphs`: uniformly random labelled trees (Bergmeister et al. 2024 use 64 nodes).
- :func:`community_small_graphs`: two dense communities joined by a few bridges (EDP-GNN / GDSS / SPECTRE).

Named datasets (``DATASETS``) fix the generator's parameters and the split. The published ones
follow SPECTRE: 200 graphs split 128 / 32 / 40 (train / val / test); community-small follows
GDSS: 100 graphs split 80 / 20 with the test split also used for validation. The "_cpu" variants
are ours (docs/graphs.md), small enough for minutes-long CPU runs, and not comparable with published
numbers. :class:`GraphDataModule` serves any of them as padded dense batches (``diffkit.graphs``).

Generated graphs are cached as edge lists in a torch file (loaded with ``weights_only=True``)
under ``cache_dir`` (default ``~/.cache/diffkit/graphs``), named after the generator, its
parameters and the seed, e.g. ``sbm_graphs_n200_communities2-5_sizes20-40_pintra0.3_pinter0.005_seed0_v1.pt``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import lightning
import networkx as nx
import numpy as np
import torch
from scipy.spatial import Delaunay
from torch import Tensor
from torchmetrics import MetricCollection

from diffkit._checks import check_non_negative_int, check_positive_int
from diffkit.data._base import SplitLoaders, stream_seed
from diffkit.graphs import node_count_distribution, to_dense, type_marginals

__all__ = [
    "planar_graphs",
    "sbm_graphs",
    "tree_graphs",
    "community_small_graphs",
    "cache_path",
    "cached_graphs",
    "GraphDatasetSpec",
    "DATASETS",
    "GraphDatasetName",
    "GraphDataModule",
]

NodeCount = int | tuple[int, int]
#: Bump when the cache file layout or a generator's output for given parameters changes.
CACHE_VERSION = 1


def _node_range(name: str, n_nodes: NodeCount, minimum: int) -> tuple[int, int]:
    low, high = (n_nodes, n_nodes) if isinstance(n_nodes, int) else tuple(n_nodes)
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected an int or a (min, max) pair of ints, got {n_nodes!r}")
    if not minimum <= low <= high:
        raise ValueError(f"{name}: expected {minimum} <= min <= max, got {n_nodes!r}")
    return int(low), int(high)


def planar_graphs(n_graphs: int, n_nodes: NodeCount, seed: int) -> list[nx.Graph]:
    """Planar graphs: the Delaunay triangulation of n points drawn uniformly in the unit square.

    As SPECTRE's ``PlanarDataset`` (``scipy.spatial.Delaunay``, an edge for each side of each
    triangle), so every graph is connected and planar.

    Args:
        n_graphs: number of graphs, >= 1.
        n_nodes: n for every graph, or an inclusive (min, max) range drawn uniformly per graph; >= 3.
        seed: non-negative seed (``numpy.random.default_rng``).

    Returns:
        ``n_graphs`` graphs with nodes 0..n-1.
    """
    check_positive_int("n_graphs", n_graphs)
    check_non_negative_int("seed", seed)
    low, high = _node_range("n_nodes", n_nodes, 3)
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_graphs):
        n = int(rng.integers(low, high, endpoint=True))
        simplices = Delaunay(rng.random((n, 2))).simplices  # (F, 3)
        g = nx.empty_graph(n)
        g.add_edges_from(
            (int(a), int(b)) for tri in simplices for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))
        )
        graphs.append(g)
    return graphs


def sbm_graphs(
    n_graphs: int,
    seed: int,
    communities: tuple[int, int] = (2, 5),
    sizes: tuple[int, int] = (20, 40),
    p_intra: float = 0.3,
    p_inter: float = 0.005,
) -> list[nx.Graph]:
    """Stochastic block model graphs, as SPECTRE's ``SBMDataset``.

    Per graph: B ~ U{communities} blocks, each of n_r ~ U{sizes} nodes (both ranges inclusive, as
    numpy's ``random_integers`` in SPECTRE), then each node pair is an edge independently with
    probability ``p_intra`` inside a block and ``p_inter`` across blocks. Nodes are numbered
    block by block. No connectivity filter (SPECTRE has none), so a graph may be disconnected.

    Args:
        n_graphs: number of graphs, >= 1.
        seed: non-negative seed.
        communities: inclusive (min, max) number of blocks, min >= 1.
        sizes: inclusive (min, max) block size, min >= 1.
        p_intra: edge probability inside a block, in [0, 1].
        p_inter: edge probability between blocks, in [0, 1].

    Returns:
        ``n_graphs`` graphs; graph.graph["blocks"] lists the block sizes.
    """
    check_positive_int("n_graphs", n_graphs)
    check_non_negative_int("seed", seed)
    b_low, b_high = _node_range("communities", communities, 1)
    s_low, s_high = _node_range("sizes", sizes, 1)
    for name, p in (("p_intra", p_intra), ("p_inter", p_inter)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: expected a probability in [0, 1], got {p}")
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_graphs):
        num_blocks = int(rng.integers(b_low, b_high, endpoint=True))
        block_sizes = rng.integers(s_low, s_high, size=num_blocks, endpoint=True)  # (B,)
        labels = np.repeat(np.arange(num_blocks), block_sizes)  # (n,)
        n = labels.size
        prob = np.where(labels[:, None] == labels[None, :], p_intra, p_inter)  # (n, n)
        rows, cols = np.triu_indices(n, 1)
        keep = rng.random(rows.size) < prob[rows, cols]
        g = nx.empty_graph(n)
        g.add_edges_from(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
        g.graph["blocks"] = block_sizes.tolist()
        graphs.append(g)
    return graphs


def tree_graphs(n_graphs: int, n_nodes: NodeCount, seed: int) -> list[nx.Graph]:
    """Uniformly random labelled trees, from uniformly random Pruefer sequences.

    The same distribution as ``nx.random_tree`` (used by Bergmeister et al. 2024 for the
    64-node tree dataset; removed in networkx 3.4) and ``nx.random_labeled_tree``. The sequence is
    drawn with numpy and decoded by ``nx.from_prufer_sequence``, so the output does not depend
    on the networkx version.

    Args:
        n_graphs: number of graphs, >= 1.
        n_nodes: n for every tree, or an inclusive (min, max) range drawn uniformly per tree; >= 2.
        seed: non-negative seed.

    Returns:
        ``n_graphs`` trees with nodes 0..n-1.
    """
    check_positive_int("n_graphs", n_graphs)
    check_non_negative_int("seed", seed)
    low, high = _node_range("n_nodes", n_nodes, 2)
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_graphs):
        n = int(rng.integers(low, high, endpoint=True))
        sequence = rng.integers(0, n, size=n - 2).tolist()
        graphs.append(nx.from_prufer_sequence(sequence) if n > 2 else nx.path_graph(2))
    return graphs


def community_small_graphs(
    n_graphs: int = 100,
    seed: int = 0,
    n_nodes: tuple[int, int] = (12, 20),
    p_intra: float = 0.7,
    p_inter: float = 0.05,
    fixed_community_seeds: bool = True,
) -> list[nx.Graph]:
    """Community-small: two dense Erdos-Renyi communities joined by a few bridges.

    The rule of EDP-GNN / GDSS (``n_community(2, max_nodes, p_inter=0.05)``), whose dataset SPECTRE
    ships as ``community_12_21_100.pt`` and DiGress calls Community-20:

    1. m ~ U{n_nodes} (inclusive); each community has N = m // 2 nodes, so a graph has 2N nodes:
       an even count in 12..20 (12, 14, 16, 18 with probability 2/9 each, 20 with 1/9).
    2. Each community is G(N, p_intra) with p_intra = 0.7 (not 0.3: 0.3 is GraphRNN's large
       "community" dataset). With ``fixed_community_seeds`` (default, as the published code)
       community i is ``nx.gnp_random_graph(N, 0.7, seed=i)``: for a given N the two communities
       are always the same two graphs, only the bridges vary. False draws them from ``seed``.
    3. Each of the N^2 cross pairs is a bridge with probability 2 p_inter / N (so the expected
       bridge count is p_inter times the node count); if none was drawn, nodes 0 and N are joined.

    Uncertain: GraphRNN's own community-small (the GraphVAE / DeepGMG comparison) draws two
    community sizes in 6..10 independently with bridge probability 0.01; later papers (GDSS,
    SPECTRE, DiGress) use the rule above, which is what their published numbers are computed on.

    Args:
        n_graphs: number of graphs, >= 1.
        seed: non-negative seed of the sizes and bridges (and communities, see above).
        n_nodes: inclusive range of m, min >= 2.
        p_intra: edge probability inside a community.
        p_inter: expected bridges per node.
        fixed_community_seeds: reproduce the published code's fixed community graphs.

    Returns:
        ``n_graphs`` connected-by-bridges graphs; nodes 0..N-1 form the first community.
    """
    check_positive_int("n_graphs", n_graphs)
    check_non_negative_int("seed", seed)
    low, high = _node_range("n_nodes", n_nodes, 2)
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_graphs):
        half = int(rng.integers(low, high, endpoint=True)) // 2
        seeds = (0, 1) if fixed_community_seeds else tuple(int(s) for s in rng.integers(2**31, size=2))
        g = nx.disjoint_union(
            nx.gnp_random_graph(half, p_intra, seed=seeds[0]), nx.gnp_random_graph(half, p_intra, seed=seeds[1])
        )
        rows, cols = np.nonzero(rng.random((half, half)) < 2 * p_inter / half)
        if rows.size == 0:
            rows, cols = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        g.add_edges_from(zip(rows.tolist(), (cols + half).tolist(), strict=True))
        graphs.append(g)
    return graphs


# ------------------------------------------------------------------------------------ cache


def _format(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "-".join(_format(v) for v in value)
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def cache_path(
    cache_dir: str | os.PathLike | None, generator: Callable[..., list[nx.Graph]], params: dict[str, Any]
) -> Path:
    """The cache file of ``generator(**params)``: ``<cache_dir>/<generator name>_<key><value>..._v<version>.pt``.

    ``n_graphs`` is written ``n`` and ``seed`` comes last; a tuple (a, b) is written ``a-b``, so
    e.g. ``planar_graphs_n200_nodes64_seed0_v1.pt``. ``cache_dir`` None means ``~/.cache/diffkit/graphs``.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else Path.home() / ".cache" / "diffkit" / "graphs"
    short = {
        "n_graphs": "n",
        "n_nodes": "nodes",
        "p_intra": "pintra",
        "p_inter": "pinter",
        "fixed_community_seeds": "fixedseeds",
    }
    keys = [k for k in params if k not in ("n_graphs", "seed")]
    parts = (
        [f"n{params['n_graphs']}"]
        + [f"{short.get(k, k)}{_format(params[k])}" for k in keys]
        + [f"seed{params['seed']}"]
    )
    return root / f"{generator.__name__}_{'_'.join(parts)}_v{CACHE_VERSION}.pt"


def cached_graphs(
    generator: Callable[..., list[nx.Graph]], params: dict[str, Any], cache_dir: str | os.PathLike | None = None
) -> list[nx.Graph]:
    """``generator(**params)``, read from its cache file if present, else generated and written.

    The file holds {"num_nodes": (G,) int64, "edges": G tensors (E_g, 2) int64}; it is written to
    a temporary file and renamed, so concurrent processes never read a partial file. Graph-level
    attributes (such as the SBM block sizes) are not cached.

    Args:
        generator: one of this module's generators (any function returning graphs on nodes 0..n-1).
        params: its keyword arguments, including ``n_graphs`` and ``seed``.
        cache_dir: the cache folder (created if missing); None for ``~/.cache/diffkit/graphs``.

    Returns:
        The graphs, with nodes 0..n-1 in order.
    """
    path = cache_path(cache_dir, generator, params)
    if path.exists():
        data = torch.load(path, weights_only=True)
    else:
        graphs = generator(**params)
        data = {
            "num_nodes": torch.tensor([g.number_of_nodes() for g in graphs], dtype=torch.int64),
            "edges": [torch.tensor(sorted(g.edges()), dtype=torch.int64).reshape(-1, 2) for g in graphs],
        }
        _atomic_save(data, path)
    graphs = []
    for n, edges in zip(data["num_nodes"].tolist(), data["edges"], strict=True):
        g = nx.empty_graph(n)
        g.add_edges_from(edges.tolist())
        graphs.append(g)
    return graphs


def _atomic_save(data: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ------------------------------------------------------------------------------------ named datasets


@dataclass(frozen=True)
class GraphDatasetSpec:
    """A named dataset: a generator call and its split.

    Attributes:
        generator: the generator function.
        params: its keyword arguments except ``n_graphs`` and ``seed``.
        splits: (train, val, test) sizes; ``n_graphs`` is their sum unless ``val_is_test``.
        val_is_test: the val split is the test split (GDSS's community-small has no val split).
        validity: the V.U.N. validity rule (a key of ``diffkit.metrics.graphs.VALIDITY``), or None.
        published: whether published numbers exist for it (the "_cpu" variants are ours).
    """

    generator: Callable[..., list[nx.Graph]]
    params: dict[str, Any] = field(default_factory=dict)
    splits: tuple[int, int, int] = (128, 32, 40)
    val_is_test: bool = False
    validity: str | None = None
    published: bool = True

    @property
    def n_graphs(self) -> int:
        train, val, test = self.splits
        return train + test if self.val_is_test else train + val + test


DATASETS: dict[str, GraphDatasetSpec] = {
    "planar": GraphDatasetSpec(planar_graphs, {"n_nodes": 64}, validity="planar"),
    "sbm": GraphDatasetSpec(sbm_graphs, {}, validity="sbm"),
    "tree": GraphDatasetSpec(tree_graphs, {"n_nodes": 64}, validity="tree"),
    "community_small": GraphDatasetSpec(community_small_graphs, {}, splits=(80, 20, 20), val_is_test=True),
    "planar_cpu": GraphDatasetSpec(planar_graphs, {"n_nodes": (16, 24)}, validity="planar", published=False),
    "sbm_cpu": GraphDatasetSpec(
        sbm_graphs, {"communities": (2, 3), "sizes": (8, 16)}, validity="sbm_cpu", published=False
    ),
    "tree_cpu": GraphDatasetSpec(tree_graphs, {"n_nodes": (16, 24)}, validity="tree", published=False),
}

GraphDatasetName = Literal["planar", "sbm", "tree", "community_small", "planar_cpu", "sbm_cpu", "tree_cpu"]
assert set(get_args(GraphDatasetName)) == set(DATASETS)


def _split(graphs: list[nx.Graph], spec: GraphDatasetSpec, seed: int) -> dict[str, list[nx.Graph]]:
    """A seeded random permutation cut into train / val / test (val = test when ``val_is_test``)."""
    order = np.random.default_rng(stream_seed(seed, "structure")).permutation(len(graphs)).tolist()
    train, val, test = spec.splits
    out = {"train": [graphs[i] for i in order[:train]]}
    if spec.val_is_test:
        out["test"] = out["val"] = [graphs[i] for i in order[train : train + test]]
    else:
        out["val"] = [graphs[i] for i in order[train : train + val]]
        out["test"] = [graphs[i] for i in order[train + val : train + val + test]]
    return out


class GraphDataModule(SplitLoaders, lightning.LightningDataModule):
    """A named synthetic graph dataset, as dense batches {"X", "E", "mask"} (``diffkit.graphs``).

    The dataset's ``n_graphs`` graphs are generated with ``seed`` (or read from the cache), then
    split by a permutation seeded from ``seed``; every batch is padded to :attr:`max_nodes`, the
    largest graph of the whole dataset. Graphs are unlabelled: X = 0 on real nodes (one node
    type) and E in {0: no edge, 1: edge}. The train loader shuffles with a generator seeded from
    ``seed``; val and test do not shuffle.

    Args:
        dataset: one of
            - "planar": 200 Delaunay graphs of 64 nodes, 128 / 32 / 40 (SPECTRE);
            - "sbm": 200 SBM graphs, 2-5 blocks of 20-40 nodes, p 0.3 / 0.005, 128 / 32 / 40 (SPECTRE);
            - "tree": 200 random trees of 64 nodes, 128 / 32 / 40 (Bergmeister et al. 2024);
            - "community_small": 100 two-community graphs of 12-20 nodes, 80 / 20, val = test (GDSS);
            - "planar_cpu": 200 Delaunay graphs of 16-24 nodes (ours);
            - "sbm_cpu": 200 SBM graphs, 2-3 blocks of 8-16 nodes, p 0.3 / 0.005 (ours);
            - "tree_cpu": 200 random trees of 16-24 nodes (ours).
        batch_size: graphs per batch, >= 1.
        seed: non-negative seed of the graphs, the split and the shuffling.
        cache_dir: cache folder of generated graphs; None for ``~/.cache/diffkit/graphs``.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        ValueError: unknown ``dataset`` (the message lists the names), bad sizes or seed.
    """

    def __init__(
        self,
        dataset: GraphDatasetName,
        batch_size: int = 32,
        seed: int = 0,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {sorted(DATASETS)}, got {dataset!r}")
        check_positive_int("batch_size", batch_size)
        check_non_negative_int("seed", seed)
        check_non_negative_int("num_workers", num_workers)
        self.dataset = dataset
        self.spec = DATASETS[dataset]
        self.batch_size = batch_size
        self.seed = seed
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self._graphs: dict[str, list[nx.Graph]] | None = None
        self._dense: dict[str, dict[str, Tensor]] = {}

    # -- data
    def _params(self) -> dict[str, Any]:
        return {"n_graphs": self.spec.n_graphs, **self.spec.params, "seed": self.seed}

    def prepare_data(self) -> None:
        """Generate the graphs into the cache (Lightning calls this on one process only)."""
        cached_graphs(self.spec.generator, self._params(), self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load (or generate) the graphs and split them once; later calls reuse them."""
        if self._graphs is None:
            graphs = cached_graphs(self.spec.generator, self._params(), self.cache_dir)
            self._max_nodes = max(g.number_of_nodes() for g in graphs)
            self._graphs = _split(graphs, self.spec, self.seed)

    def _split_graphs(self, name: str) -> list[nx.Graph]:
        self.setup()
        return list(self._graphs[name])

    def train_graphs(self) -> list[nx.Graph]:
        """The train split as networkx graphs (nodes 0..n-1)."""
        return self._split_graphs("train")

    def val_graphs(self) -> list[nx.Graph]:
        """The val split as networkx graphs (the test split when the dataset has no val split)."""
        return self._split_graphs("val")

    def test_graphs(self) -> list[nx.Graph]:
        """The test split as networkx graphs."""
        return self._split_graphs("test")

    def split(self, name: Literal["train", "val", "test"]) -> dict[str, Tensor]:
        """A whole split as one dense batch {"X": (G, N) int64, "E": (G, N, N) int64, "mask": (G, N) bool}."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"name: expected one of ['train', 'val', 'test'], got {name!r}")
        if name not in self._dense:
            self._dense[name] = to_dense(self._split_graphs(name), max_nodes=self.max_nodes)
        return self._dense[name]

    def sample_metrics(self) -> MetricCollection:
        """``{"graph": GraphSampleMetrics}``: degree / clustering / orbit / spectral MMD^2 of sampled
        against held-out graphs and V.U.N. against the train split under the dataset's validity rule."""
        from diffkit.metrics.graph_samples import GraphSampleMetrics

        return MetricCollection({"graph": GraphSampleMetrics(self.train_graphs(), self.max_nodes, self.validity)})

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records of the data (under the key "GraphDataModule"): the dataset's
        name, seed and cache folder, so an evaluation finds the run's test split from the checkpoint.
        Not hyperparameters: those would clash with the module's ``seed`` in the logger."""
        return {"dataset": self.dataset, "seed": self.seed, "cache_dir": self.cache_dir}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the data are a function of the constructor's arguments."""

    # -- dataset facts
    @property
    def max_nodes(self) -> int:
        """N, the largest node count of the dataset: every batch is padded to it."""
        self.setup()
        return self._max_nodes

    @property
    def num_node_types(self) -> int:
        """K_X = 1: unlabelled nodes."""
        return 1

    @property
    def num_edge_types(self) -> int:
        """K_E = 2: 0 no edge, 1 edge."""
        return 2

    @property
    def validity(self) -> str | None:
        """The dataset's validity rule for V.U.N. (a key of ``diffkit.metrics.graphs.VALIDITY``), or None."""
        return self.spec.validity

    def node_count_distribution(self) -> Tensor:
        """(max_nodes + 1,) float64: the train split's node-count frequencies (zero above its largest graph)."""
        dist = node_count_distribution(self.train_graphs())
        return torch.cat([dist, dist.new_zeros(self.max_nodes + 1 - dist.numel())])

    def class_marginals(self, field: Literal["X", "E"]) -> Tensor:
        """Train-split class frequencies: "X" (K_X,) over real nodes, "E" (K_E,) over real pairs i < j.

        Raises:
            ValueError: if ``field`` is not "X" or "E".
        """
        if field not in ("X", "E"):
            raise ValueError(f"field: expected 'X' or 'E', got {field!r}")
        node_freq, edge_freq = type_marginals(self.split("train"), self.num_node_types, self.num_edge_types)
        return node_freq if field == "X" else edge_freq
