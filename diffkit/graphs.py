"""Graphs as padded dense tensors, and back to networkx.

A batch of B graphs with at most N nodes is the dict

    {"X": (B, N) int64 node types, "E": (B, N, N) int64 edge types, "mask": (B, N) bool}

that ``ProductProcess(..., symmetric=["E"])`` takes. E is symmetric with a zero diagonal and
E = 0 means "no edge". Padded nodes have mask False, X = 0 and zero E rows and columns. The real
nodes of graph b are the first n_b positions (mask[b, :n_b] True), in ``G.nodes()`` order.

Unlabelled graphs have one node type (X = 0 on real nodes) and two edge types (0: none, 1: edge).
Integer node or edge attributes give more types: node types are ids >= 0, edge types ids >= 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx
import torch
from torch import Tensor

__all__ = ["to_dense", "to_networkx", "node_count_distribution", "sample_node_masks", "type_marginals"]


def _check_graphs(graphs: object) -> None:
    if not isinstance(graphs, Sequence) or isinstance(graphs, (str, bytes)):
        raise TypeError(f"graphs: expected a list of networkx graphs, got {type(graphs).__name__}")
    for i, g in enumerate(graphs):
        if not isinstance(g, nx.Graph) or g.is_directed() or g.is_multigraph():
            raise TypeError(
                f"graphs[{i}]: expected an undirected simple nx.Graph, got {type(g).__name__}"
                + (" (directed)" if isinstance(g, nx.Graph) and g.is_directed() else "")
            )


def _attribute(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what}: expected an int >= {minimum}, got {value!r}")
    return value


def to_dense(
    graphs: Sequence[nx.Graph],
    max_nodes: int | None = None,
    node_attr: str | None = None,
    edge_attr: str | None = None,
) -> dict[str, Tensor]:
    """Pad a list of undirected graphs into one dense batch.

    Node i of a graph is its i-th node in ``G.nodes()`` order (labels are dropped). Self-loops
    are not representable (E's diagonal is 0) and raise.

    Args:
        graphs: B undirected simple ``nx.Graph`` (B >= 1; a graph may have 0 nodes).
        max_nodes: N, the padded size; default the largest graph's node count.
        node_attr: node attribute holding an int type >= 0; None gives every real node type 0.
        edge_attr: edge attribute holding an int type >= 1; None gives every edge type 1.

    Returns:
        {"X": (B, N) int64, "E": (B, N, N) int64 symmetric with zero diagonal, "mask": (B, N) bool}.

    Raises:
        TypeError: if ``graphs`` is not a list of undirected simple graphs.
        ValueError: if it is empty, a graph has more than ``max_nodes`` nodes or a self-loop, or
            an attribute is missing or not an int in range.

    Example:
        >>> batch = to_dense([nx.path_graph(3), nx.complete_graph(2)])
        >>> batch["mask"].tolist()
        [[True, True, True], [True, True, False]]
        >>> E = batch["E"]
        >>> E[0].tolist()
        [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    """
    _check_graphs(graphs)
    if len(graphs) == 0:
        raise ValueError("graphs: expected at least one graph, got an empty list")
    largest = max(g.number_of_nodes() for g in graphs)
    n_max = largest if max_nodes is None else max_nodes
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 0:
        raise ValueError(f"max_nodes: expected an int >= 0, got {max_nodes!r}")
    if largest > n_max:
        raise ValueError(f"graphs: expected at most max_nodes = {n_max} nodes per graph, got one with {largest}")
    size = len(graphs)
    X = torch.zeros(size, n_max, dtype=torch.int64)
    E = torch.zeros(size, n_max, n_max, dtype=torch.int64)
    mask = torch.zeros(size, n_max, dtype=torch.bool)
    for b, g in enumerate(graphs):
        index = {v: i for i, v in enumerate(g.nodes())}
        mask[b, : len(index)] = True
        if node_attr is not None:
            for v, i in index.items():
                X[b, i] = _attribute(g.nodes[v].get(node_attr), f"node attribute {node_attr!r} of node {v!r}", 0)
        for u, v, data in g.edges(data=True):
            if u == v:
                raise ValueError(f"graphs[{b}]: expected no self-loops, got one at node {u!r}")
            kind = (
                1
                if edge_attr is None
                else _attribute(data.get(edge_attr), f"edge attribute {edge_attr!r} of {(u, v)!r}", 1)
            )
            E[b, index[u], index[v]] = E[b, index[v], index[u]] = kind
    return {"X": X, "E": E, "mask": mask}


def _check_batch(batch: object) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch: expected a dict with keys 'X', 'E', 'mask', got {type(batch).__name__}")
    missing = [k for k in ("X", "E", "mask") if k not in batch]
    if missing:
        raise ValueError(f"batch: missing key(s) {missing}; expected ['X', 'E', 'mask']")
    X, E, mask = batch["X"], batch["E"], batch["mask"]
    for name, t in (("X", X), ("E", E), ("mask", mask)):
        if not isinstance(t, Tensor):
            raise TypeError(f"batch[{name!r}]: expected a torch.Tensor, got {type(t).__name__}")
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"batch['mask']: expected shape (B, N) and dtype bool, got {tuple(mask.shape)} {mask.dtype}")
    size, n = mask.shape
    if tuple(X.shape) != (size, n) or tuple(E.shape) != (size, n, n):
        raise ValueError(
            f"batch['X'], batch['E']: expected shapes {(size, n)} and {(size, n, n)} (from the mask), "
            f"got {tuple(X.shape)} and {tuple(E.shape)}"
        )
    if X.is_floating_point() or E.is_floating_point():
        raise TypeError(f"batch['X'], batch['E']: expected integer dtypes, got {X.dtype} and {E.dtype}")
    return X, E, mask


def to_networkx(
    batch: Mapping[str, Tensor],
    node_attr: str | None = None,
    edge_attr: str | None = None,
) -> list[nx.Graph]:
    """Graphs of a dense batch: the inverse of :func:`to_dense`.

    Padded nodes (mask False) are dropped and the real nodes of each graph are relabelled
    0..n-1 in position order. Only the upper triangle of E (i < j) is read, so E need not be
    symmetric (a sampler's raw output may not be). ``to_networkx(to_dense(gs))`` equals ``gs``
    exactly for graphs whose nodes are 0..n-1 in ``G.nodes()`` order.

    Args:
        batch: {"X": (B, N) int, "E": (B, N, N) int, "mask": (B, N) bool}.
        node_attr: if given, each node gets X's type under this attribute name.
        edge_attr: if given, each edge gets E's type under this attribute name.

    Returns:
        B ``nx.Graph`` with nodes 0..n_b-1 and an edge (i, j) wherever E[b, i, j] != 0, i < j.

    Raises:
        TypeError / ValueError: if ``batch`` lacks a key or has mismatched shapes or dtypes.
    """
    X, E, mask = _check_batch(batch)
    X, E, mask = X.cpu(), E.cpu(), mask.cpu()
    upper = torch.ones(E.shape[-1], E.shape[-1], dtype=torch.bool).triu(1)
    graphs = []
    for b in range(mask.shape[0]):
        real = mask[b].nonzero().squeeze(-1)  # (n,)
        g = nx.Graph()
        if node_attr is None:
            g.add_nodes_from(range(real.numel()))
        else:
            g.add_nodes_from((i, {node_attr: int(x)}) for i, x in enumerate(X[b, real].tolist()))
        sub = E[b][real][:, real]  # (n, n)
        rows, cols = ((sub != 0) & upper[: real.numel(), : real.numel()]).nonzero(as_tuple=True)
        if edge_attr is None:
            g.add_edges_from(zip(rows.tolist(), cols.tolist(), strict=True))
        else:
            kinds = sub[rows, cols].tolist()
            g.add_edges_from(
                (i, j, {edge_attr: k}) for i, j, k in zip(rows.tolist(), cols.tolist(), kinds, strict=True)
            )
        graphs.append(g)
    return graphs


def node_count_distribution(graphs: Sequence[nx.Graph]) -> Tensor:
    """Empirical distribution of node counts: p[n] = fraction of graphs with n nodes.

    Args:
        graphs: at least one ``nx.Graph``.

    Returns:
        (max_n + 1,) float64 probabilities, max_n the largest node count.

    Example:
        >>> node_count_distribution([nx.path_graph(2), nx.path_graph(3), nx.path_graph(3)]).tolist()
        [0.0, 0.0, 0.3333333333333333, 0.6666666666666666]
    """
    _check_graphs(graphs)
    if len(graphs) == 0:
        raise ValueError("graphs: expected at least one graph, got an empty list")
    counts = torch.bincount(torch.tensor([g.number_of_nodes() for g in graphs], dtype=torch.int64))
    return counts.double() / counts.sum()


def sample_node_masks(dist: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Node masks whose sizes are drawn i.i.d. from a node-count distribution.

    Args:
        dist: (N_max + 1,) float probabilities (or unnormalized non-negative weights) of n = 0..N_max.
        num_samples: B >= 1.
        generator: torch generator on ``dist``'s device, for reproducible draws.

    Returns:
        (B, N_max) bool, row b True on its first n_b positions, n_b ~ dist.

    Raises:
        TypeError: if ``dist`` is not a floating tensor.
        ValueError: if ``dist`` is not 1-D with >= 2 entries, has negative entries or sums to 0,
            or ``num_samples`` < 1.
    """
    if not isinstance(dist, Tensor) or not dist.is_floating_point():
        raise TypeError(f"dist: expected a floating torch.Tensor, got {getattr(dist, 'dtype', type(dist).__name__)}")
    if dist.ndim != 1 or dist.numel() < 2:
        raise ValueError(f"dist: expected shape (N_max + 1,) with N_max >= 1, got {tuple(dist.shape)}")
    if bool((dist < 0).any()) or float(dist.sum()) <= 0:
        raise ValueError(
            f"dist: expected non-negative values with a positive sum, got min {float(dist.min())}, "
            f"sum {float(dist.sum())}"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, got {num_samples!r}")
    sizes = torch.multinomial(dist.double(), num_samples, replacement=True, generator=generator)  # (B,)
    positions = torch.arange(dist.numel() - 1, device=dist.device)  # (N_max,)
    return positions[None, :] < sizes[:, None]  # (B, N_max)


def type_marginals(
    batch: Mapping[str, Tensor], num_node_types: int | None = None, num_edge_types: int | None = None
) -> tuple[Tensor, Tensor]:
    """Class frequencies of node types over real nodes and of edge types over real node pairs.

    A real pair is (i, j) with i < j and both nodes real, so "no edge" (type 0) is counted for
    every non-adjacent pair: these are the marginals DiGress's marginal transition uses.

    Args:
        batch: {"X": (B, N) int, "E": (B, N, N) int, "mask": (B, N) bool}.
        num_node_types: K_X; default max(X on real nodes) + 1.
        num_edge_types: K_E; default max(E on real pairs) + 1, at least 2.

    Returns:
        (node_freq (K_X,) float64, edge_freq (K_E,) float64), each summing to 1.

    Raises:
        ValueError: if the batch has no real node (or no real pair), or a type is out of range.
    """
    X, E, mask = _check_batch(batch)
    n = mask.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
    pairs = mask[:, :, None] & mask[:, None, :] & upper  # (B, N, N)
    node_types, edge_types = X[mask], E[pairs]
    if node_types.numel() == 0 or edge_types.numel() == 0:
        raise ValueError("batch: expected at least one real node pair (two real nodes in one graph), got none")
    k_x = int(node_types.max()) + 1 if num_node_types is None else num_node_types
    k_e = max(int(edge_types.max()) + 1, 2) if num_edge_types is None else num_edge_types
    for name, types, k in (("X", node_types, k_x), ("E", edge_types, k_e)):
        if int(types.min()) < 0 or int(types.max()) >= k:
            raise ValueError(
                f"batch[{name!r}]: expected types in [0, {k}), got values in [{int(types.min())}, {int(types.max())}]"
            )
    node_freq = torch.bincount(node_types, minlength=k_x).double()
    edge_freq = torch.bincount(edge_types, minlength=k_e).double()
    return node_freq / node_freq.sum(), edge_freq / edge_freq.sum()
