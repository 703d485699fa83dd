"""Graph generation metrics of the SPECTRE / DiGress protocol (see docs/graphs.md).

Pure functions on networkx graphs, and a thin torchmetrics ``GraphMetrics`` over them.

MMD^2 (GRAN's ``compute_mmd`` with ``gaussian_tv``, as in DiGress ``src/analysis/spectre_utils.py``
and ``dist_helper.py``) between two sets of per-graph descriptors x_1..x_n and y_1..y_m:

    MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)      (biased V-statistic,
                                                                                    diagonals included)
    k(x, y) = exp(-TV(x, y)^2 / (2 sigma^2)),   TV(x, y) = sum_l |x_l - y_l| / 2

with x and y zero-padded to a common length. Histogram descriptors are first normalized,
h / (sum(h) + 1e-6). Descriptors and sigmas (checked against DiGress):

    degree      nx.degree_histogram                                         sigma 1.0
    clustering  nx.clustering values, 100 bins on [0, 1]                    sigma 0.1
    orbit       mean per node of ORCA's 15 node-orbit counts (not normalized) sigma 30
    spectre     normalized-Laplacian eigenvalues, 200 bins on [-1e-5, 2]    sigma 1.0

V.U.N. follows DiGress ``eval_fraction_unique_non_isomorphic_valid``: a sample is unique if it is
not isomorphic to an *earlier* sample (the first of each isomorphism class counts), novel if not
isomorphic to any training graph, and V.U.N. is the fraction that are valid, unique and novel.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Literal, NamedTuple

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from diffkit.graphs import to_dense, to_networkx
from diffkit.metrics.sbm import infer_blocks, is_sbm_graph, sbm_p_value

__all__ = [
    "degree_histogram",
    "clustering_histogram",
    "spectral_histogram",
    "orbit_counts",
    "gaussian_tv_mmd",
    "GraphMMD",
    "graph_mmds",
    "is_planar_graph",
    "is_tree_graph",
    "infer_blocks",
    "sbm_p_value",
    "is_sbm_graph",
    "VALIDITY",
    "VUN",
    "vun",
    "GraphMetrics",
]

#: Kernel widths of DiGress's ``spectre_utils`` (degree_stats, clustering_stats, orbit_stats_all, spectral_stats).
SIGMAS = {"degree": 1.0, "clustering": 0.1, "orbit": 30.0, "spectre": 1.0}


# ------------------------------------------------------------------------------------ descriptors


def degree_histogram(graph: nx.Graph) -> np.ndarray:
    """Counts of nodes of each degree 0..max_degree: (max_degree + 1,) float64."""
    return np.asarray(nx.degree_histogram(graph), dtype=np.float64)


def clustering_histogram(graph: nx.Graph, bins: int = 100) -> np.ndarray:
    """Histogram of the local clustering coefficients over ``bins`` equal bins on [0, 1]: (bins,) float64."""
    values = list(nx.clustering(graph).values())
    return np.histogram(values, bins=bins, range=(0.0, 1.0))[0].astype(np.float64)


def spectral_histogram(graph: nx.Graph, bins: int = 200) -> np.ndarray:
    """Normalized histogram of the normalized-Laplacian eigenvalues on [-1e-5, 2]: (bins,) float64.

    L = I - D^-1/2 A D^-1/2 (rows of isolated nodes are 0), eigenvalues in [0, 2]. As in DiGress,
    an eigenvalue pushed past 2 by round-off falls outside the range and is not counted.
    """
    if graph.number_of_nodes() == 0:
        return np.zeros(bins)
    laplacian = nx.normalized_laplacian_matrix(graph, nodelist=list(graph.nodes())).toarray()
    eigenvalues = np.linalg.eigvalsh(laplacian)
    hist = np.histogram(eigenvalues, bins=bins, range=(-1e-5, 2.0))[0].astype(np.float64)
    return hist / max(hist.sum(), 1.0)


# Induced orbit counts O (n, 15) from non-induced counts N (n, 15): N = O @ ORBIT_OVERLAP, where
# ORBIT_OVERLAP[j, k] is how many copies of orbit k's pattern (as a not necessarily induced
# subgraph) a node in orbit j of an induced graphlet is part of. Orbits (Przulj 2007, ORCA):
#   0 edge; 1 / 2 end / middle of path P3; 3 triangle; 4 / 5 end / middle of path P4;
#   6 / 7 leaf / centre of star K1,3; 8 cycle C4; 9 / 10 / 11 pendant / degree-2 / degree-3 node of
#   the paw (triangle + pendant); 12 / 13 degree-2 / degree-3 node of the diamond (K4 - e); 14 K4.
# Rows 0-3 are identity: orbits 0-3 are counted induced directly.
def _orbit_overlap() -> np.ndarray:
    rows = {
        8: {4: 2, 5: 2},
        9: {4: 2, 6: 1},
        10: {4: 1, 5: 1, 6: 1},
        11: {5: 2, 7: 1},
        12: {4: 4, 5: 2, 6: 2, 8: 1, 9: 2, 10: 2},
        13: {4: 2, 5: 4, 6: 1, 7: 1, 8: 1, 10: 2, 11: 2},
        14: {4: 6, 5: 6, 6: 3, 7: 1, 8: 3, 9: 3, 10: 6, 11: 3, 12: 3, 13: 3},
    }
    overlap = np.eye(15)
    for j, row in rows.items():
        for k, copies in row.items():
            overlap[j, k] = copies
    return overlap


ORBIT_OVERLAP = _orbit_overlap()


def orbit_counts(graph: nx.Graph) -> np.ndarray:
    """Per-node counts of the 15 node orbits of graphlets on 2-4 nodes, as ORCA's ``node 4`` output.

    Non-induced pattern counts come from adjacency-matrix products, then the triangular system
    N = O @ ORBIT_OVERLAP is solved for the induced counts O (the approach of ORCA, Hocevar &
    Demsar 2014, with our own pattern basis). With A the adjacency matrix, d = A 1, C = A A
    (common neighbours), t = diag(A^3) / 2 (triangles) and T = A * C (triangles on each edge):

        N4  = A (A (d - 1)) - d (d - 1) - 2 t        paths x-a-b-c (x an end)
        N5  = (d - 1) (A (d - 1)) - 2 t              paths a-x-b-c (x inside)
        N6  = A C(d - 1, 2)                          stars with x a leaf
        N7  = C(d, 3)                                stars centred at x
        N8  = sum_{b != x} C(C_xb, 2)                4-cycles through x
        N9  = A t - T 1                              x pendant to a triangle
        N10 = (T (d - 2))                            x on a triangle whose other vertex has a pendant
        N11 = t (d - 2)                              x on a triangle, with a pendant at x
        N12 = diag(A ((C - 1) * A) A) / 2            x a degree-2 node of a diamond
        N13 = sum_y A_xy C(T_xy, 2)                  x a degree-3 node of a diamond
        N14 = triangles among x's neighbours         K4 through x

    Args:
        graph: an undirected simple graph (self-loops are ignored).

    Returns:
        (n, 15) int64, row i for the i-th node of ``graph.nodes()``.
    """
    n = graph.number_of_nodes()
    if n == 0:
        return np.zeros((0, 15), dtype=np.int64)
    A = nx.to_numpy_array(graph, nodelist=list(graph.nodes()), dtype=np.float64, weight=None)
    np.fill_diagonal(A, 0.0)
    d = A.sum(1)  # (n,)
    C = A @ A  # (n, n)
    T = A * C  # (n, n)
    t = T.sum(1) / 2  # (n,)
    counts = np.zeros((n, 15))
    counts[:, 0] = d
    counts[:, 1] = A @ (d - 1) - 2 * t
    counts[:, 2] = d * (d - 1) / 2 - t
    counts[:, 3] = t
    counts[:, 4] = A @ (A @ (d - 1)) - d * (d - 1) - 2 * t
    counts[:, 5] = (d - 1) * (A @ (d - 1)) - 2 * t
    counts[:, 6] = A @ ((d - 1) * (d - 2) / 2)
    counts[:, 7] = d * (d - 1) * (d - 2) / 6
    pairs = C * (C - 1) / 2  # (n, n)
    counts[:, 8] = pairs.sum(1) - np.diag(pairs)
    counts[:, 9] = A @ t - T.sum(1)
    counts[:, 10] = T @ (d - 2)
    counts[:, 11] = t * (d - 2)
    counts[:, 12] = ((A @ ((C - 1) * A)) * A).sum(1) / 2
    counts[:, 13] = (A * T * (T - 1) / 2).sum(1)
    for x in range(n):
        nbrs = np.flatnonzero(A[x])
        sub = A[np.ix_(nbrs, nbrs)]  # (d_x, d_x)
        counts[x, 14] = np.trace(sub @ sub @ sub) / 6
    induced = np.linalg.solve(ORBIT_OVERLAP.T, counts.T).T  # (n, 15)
    return np.rint(induced).astype(np.int64)


# ------------------------------------------------------------------------------------ MMD


def _pad(vectors: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(vectors), length))
    for i, v in enumerate(vectors):
        out[i, : len(v)] = v
    return out


def gaussian_tv_mmd(
    samples1: Sequence[np.ndarray], samples2: Sequence[np.ndarray], sigma: float, is_hist: bool = True
) -> float:
    """Biased MMD^2 with the Gaussian-TV kernel (GRAN ``compute_mmd(..., kernel=gaussian_tv)``).

    MMD^2 = mean K(X, X) + mean K(Y, Y) - 2 mean K(X, Y), K(x, y) = exp(-TV(x, y)^2 / (2 sigma^2)),
    TV(x, y) = sum |x - y| / 2 over descriptors zero-padded to a common length.

    Args:
        samples1: n >= 1 descriptors, 1-D arrays (lengths may differ).
        samples2: m >= 1 descriptors.
        sigma: kernel width > 0.
        is_hist: normalize each descriptor first, h / (sum(h) + 1e-6), as GRAN does for histograms.

    Returns:
        MMD^2 >= 0 as a float (0 when both sets hold the same descriptors).

    Raises:
        ValueError: if a set is empty or ``sigma`` <= 0.
    """
    if len(samples1) == 0 or len(samples2) == 0:
        raise ValueError(
            f"samples1, samples2: expected two non-empty sets of descriptors, got sizes {len(samples1)} and "
            f"{len(samples2)}"
        )
    if not sigma > 0:
        raise ValueError(f"sigma: expected a value > 0, got {sigma}")
    length = max(len(v) for v in [*samples1, *samples2])
    x, y = _pad(samples1, length), _pad(samples2, length)  # (n, L), (m, L)
    if is_hist:
        x = x / (x.sum(1, keepdims=True) + 1e-6)
        y = y / (y.sum(1, keepdims=True) + 1e-6)

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        tv = np.abs(a[:, None, :] - b[None, :, :]).sum(-1) / 2  # (n, m)
        return float(np.exp(-(tv**2) / (2 * sigma**2)).mean())

    return mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)


class GraphMMD(NamedTuple):
    """MMD^2 of each graph descriptor (see the module docstring)."""

    degree: float
    clustering: float
    orbit: float
    spectre: float


def _descriptors(graphs: Sequence[nx.Graph]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {"degree": [], "clustering": [], "orbit": [], "spectre": []}
    for g in graphs:
        out["degree"].append(degree_histogram(g))
        out["clustering"].append(clustering_histogram(g))
        out["orbit"].append(orbit_counts(g).sum(0) / g.number_of_nodes())
        out["spectre"].append(spectral_histogram(g))
    return out


def graph_mmds(generated: Sequence[nx.Graph], reference: Sequence[nx.Graph]) -> GraphMMD:
    """MMD^2 between generated and reference graphs for the four descriptors.

    Graphs with no node are left out (DiGress removes them before every MMD).

    Args:
        generated: graphs to score, at least one non-empty.
        reference: reference graphs (the test split), at least one non-empty.

    Returns:
        A :class:`GraphMMD` of floats.

    Raises:
        ValueError: if a list has no non-empty graph.
    """
    sets = []
    for name, graphs in (("generated", generated), ("reference", reference)):
        kept = [g for g in graphs if g.number_of_nodes() > 0]
        if not kept:
            raise ValueError(f"{name}: expected at least one graph with a node, got none")
        sets.append(_descriptors(kept))
    return GraphMMD(
        **{
            key: gaussian_tv_mmd(sets[0][key], sets[1][key], SIGMAS[key], is_hist=key != "orbit")
            for key in GraphMMD._fields
        }
    )


# ------------------------------------------------------------------------------------ validity


def is_planar_graph(graph: nx.Graph) -> bool:
    """Valid planar sample: connected and planar (DiGress ``is_planar_graph``). The empty graph is not valid."""
    return graph.number_of_nodes() > 0 and nx.is_connected(graph) and nx.check_planarity(graph)[0]


def is_tree_graph(graph: nx.Graph) -> bool:
    """Valid tree sample: connected and acyclic (``nx.is_tree``). The empty graph is not valid."""
    return graph.number_of_nodes() > 0 and nx.is_tree(graph)


#: Validity rules by name, as ``GraphDatasetSpec.validity`` names them.
VALIDITY: dict[str, Callable[[nx.Graph], bool]] = {
    "planar": is_planar_graph,
    "tree": is_tree_graph,
    "sbm": is_sbm_graph,
    "sbm_cpu": partial(is_sbm_graph, num_blocks=(2, 3), block_sizes=(8, 16), variance="null", restrict_block_size=True),
}


# ------------------------------------------------------------------------------------ V.U.N.


class VUN(NamedTuple):
    """Fractions of the generated graphs (DiGress ``eval_fraction_unique_non_isomorphic_valid``).

    Attributes:
        valid: valid (by the validity rule; 1.0 without one).
        unique: not isomorphic to an earlier generated graph (the distinct isomorphism classes).
        novel: not isomorphic to any training graph.
        vun: valid, unique and novel at once.
    """

    valid: float
    unique: float
    novel: float
    vun: float


def _iso_key(graph: nx.Graph) -> tuple[int, int, str]:
    """Equal for isomorphic graphs: node and edge counts and the Weisfeiler-Lehman hash.

    The keys are compared only within one call, so networkx's warning that its hashes changed
    in version 3.5 does not apply and is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The hashes produced", category=UserWarning)
        wl_hash = nx.weisfeiler_lehman_graph_hash(graph, iterations=3)
    return graph.number_of_nodes(), graph.number_of_edges(), wl_hash


def _isomorphic_to_any(graph: nx.Graph, key: tuple, buckets: dict[tuple, list[nx.Graph]]) -> bool:
    return any(nx.is_isomorphic(graph, other) for other in buckets.get(key, ()))


def vun(
    generated: Sequence[nx.Graph],
    train: Sequence[nx.Graph],
    validity: Callable[[nx.Graph], bool] | None = None,
) -> VUN:
    """Validity, uniqueness and novelty of generated graphs (see :class:`VUN`).

    Isomorphism is ``nx.is_isomorphic``, tried only between graphs with the same node count,
    edge count and Weisfeiler-Lehman hash (a necessary condition), so the result is exact.

    Args:
        generated: at least one graph.
        train: the training graphs.
        validity: graph -> bool, or None to count every graph valid.

    Returns:
        A :class:`VUN` of fractions in [0, 1].
    """
    if len(generated) == 0:
        raise ValueError("generated: expected at least one graph, got none")
    train_buckets: dict[tuple, list[nx.Graph]] = {}
    for g in train:
        train_buckets.setdefault(_iso_key(g), []).append(g)
    seen: dict[tuple, list[nx.Graph]] = {}
    valid = unique = novel = good = 0
    for g in generated:
        key = _iso_key(g)
        is_valid = validity is None or bool(validity(g))
        is_novel = not _isomorphic_to_any(g, key, train_buckets)
        is_unique = not _isomorphic_to_any(g, key, seen)
        if is_unique:
            seen.setdefault(key, []).append(g)
        valid += is_valid
        unique += is_unique
        novel += is_novel
        good += is_valid and is_unique and is_novel
    size = len(generated)
    return VUN(valid / size, unique / size, novel / size, good / size)


# ------------------------------------------------------------------------------------ Metric

#: Train-vs-reference MMDs below this are round-off of 0 (the ratio is then undefined).
_MMD_FLOOR = 1e-12


class GraphMetrics(Metric):
    """MMDs, MMD ratios and V.U.N. of generated graphs against fixed reference and train graphs.

    ``update`` takes dense batches (or networkx graphs, padded here) and stores them padded to
    ``max_nodes`` in list states reduced with ``dist_reduce_fx="cat"``, so under DDP ``compute()``
    sees every rank's graphs. ``compute()`` returns float64 scalars:

        "mmd/<d>"        MMD^2(generated, reference) for d in degree, clustering, orbit, spectre
        "ratio/<d>"      mmd/<d> / MMD^2(train, reference)  (1.0: as close as fresh training graphs);
                         NaN where the denominator is below 1e-12 (clustering of trees: always 0)
        "ratio/mean"     mean of the ratios that are not NaN
        "valid", "unique", "novel", "vun"       the :func:`vun` fractions against the train graphs
        "reference/valid"  fraction of the reference graphs that are valid (the rule's ceiling);
                           only with a validity rule

    Published ratios (e.g. DeFoG's) may average over other descriptors too (wavelet), which we
    do not compute. Generated graphs with no node are left out of the MMDs (all NaN if every
    graph is empty) and are not valid.

    Args:
        reference_graphs: the graphs to compare with (the test split for final numbers).
        train_graphs: the training graphs (novelty, and the ratios' denominators).
        max_nodes: N, the padded size of stored samples; larger samples raise.
        validity: a key of ``VALIDITY`` ("planar", "tree", "sbm", "sbm_cpu"), a graph -> bool
            callable, or None (then "valid" is 1 and "vun" is unique and novel).
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    two_sample: ClassVar[bool] = False

    adjacency: list[Tensor]
    mask: list[Tensor]

    def __init__(
        self,
        reference_graphs: Sequence[nx.Graph],
        train_graphs: Sequence[nx.Graph],
        max_nodes: int,
        validity: Literal["planar", "tree", "sbm", "sbm_cpu"] | Callable[[nx.Graph], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(validity, str) and validity not in VALIDITY:
            raise ValueError(f"validity: expected one of {sorted(VALIDITY)}, a callable or None, got {validity!r}")
        if not reference_graphs or not train_graphs:
            raise ValueError("reference_graphs, train_graphs: expected two non-empty lists of graphs, got an empty one")
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise ValueError(f"max_nodes: expected an int >= 1, got {max_nodes!r}")
        super().__init__(**kwargs)
        self.reference_graphs = list(reference_graphs)
        self.train_graphs = list(train_graphs)
        self.max_nodes = max_nodes
        self.validity = VALIDITY[validity] if isinstance(validity, str) else validity
        self._baseline: GraphMMD | None = None
        self._reference_valid: float | None = None
        self.add_state("adjacency", default=[], dist_reduce_fx="cat")
        self.add_state("mask", default=[], dist_reduce_fx="cat")

    @classmethod
    def from_datamodule(cls, datamodule: Any, split: Literal["val", "test"] = "test", **kwargs: Any) -> GraphMetrics:
        """Metrics against a ``GraphDataModule``'s ``split``, with its train graphs, size and validity rule."""
        reference = datamodule.test_graphs() if split == "test" else datamodule.val_graphs()
        return cls(reference, datamodule.train_graphs(), datamodule.max_nodes, datamodule.validity, **kwargs)

    def update(self, samples: Mapping[str, Tensor] | Sequence[nx.Graph]) -> None:
        """Add generated graphs.

        Args:
            samples: a dense batch {"X": (B, N') int, "E": (B, N', N') int, "mask": (B, N') bool}
                with N' <= max_nodes (only E's upper triangle and the mask are read), or a list of
                networkx graphs of at most ``max_nodes`` nodes.
        """
        graphs = to_networkx(samples) if isinstance(samples, Mapping) else list(samples)
        if not graphs:
            return
        batch = to_dense(graphs, max_nodes=self.max_nodes)
        device = self.device
        self.adjacency.append((batch["E"] != 0).to(device=device, dtype=torch.uint8))
        self.mask.append(batch["mask"].to(device=device, dtype=torch.uint8))

    def generated_graphs(self) -> list[nx.Graph]:
        """The graphs added since the last reset (all ranks' after a sync)."""
        if isinstance(self.adjacency, list) and not self.adjacency:
            raise RuntimeError("compute() needs at least one update(): no generated graphs were added.")
        E = dim_zero_cat(self.adjacency).long().cpu()
        mask = dim_zero_cat(self.mask).bool().cpu()
        return to_networkx({"X": torch.zeros_like(mask, dtype=torch.int64), "E": E, "mask": mask})

    def baseline(self) -> GraphMMD:
        """MMD² between the train graphs and the reference split: each ratio's denominator (computed once)."""
        if self._baseline is None:
            self._baseline = graph_mmds(self.train_graphs, self.reference_graphs)
        return self._baseline

    def compute(self) -> dict[str, Tensor]:
        """The values named in the class docstring."""
        graphs = self.generated_graphs()
        baseline_mmd = self.baseline()
        if any(g.number_of_nodes() > 0 for g in graphs):
            mmd = graph_mmds(graphs, self.reference_graphs)
        else:  # nothing to compare: every MMD is undefined
            mmd = GraphMMD(*[float("nan")] * len(GraphMMD._fields))
        out = {}
        for name in GraphMMD._fields:
            baseline = getattr(baseline_mmd, name)
            out[f"mmd/{name}"] = getattr(mmd, name)
            out[f"ratio/{name}"] = getattr(mmd, name) / baseline if baseline > _MMD_FLOOR else float("nan")
        ratios = [out[f"ratio/{name}"] for name in GraphMMD._fields if not np.isnan(out[f"ratio/{name}"])]
        out["ratio/mean"] = float(np.mean(ratios)) if ratios else float("nan")
        out.update(vun(graphs, self.train_graphs, self.validity)._asdict())
        if self.validity is not None:
            if self._reference_valid is None:
                self._reference_valid = float(np.mean([bool(self.validity(g)) for g in self.reference_graphs]))
            out["reference/valid"] = self._reference_valid
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
