"""Dense graph batches (diffkit.graphs) and the synthetic graph datasets (diffkit.data.graphs).

References are written plainly here: edge sets compared as Python sets, Cayley's formula for
labelled trees, frequencies counted by hand from the graphs.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from diffkit.data.graphs import (
    DATASETS,
    GraphDataModule,
    cache_path,
    cached_graphs,
    community_small_graphs,
    planar_graphs,
    sbm_graphs,
    tree_graphs,
)
from diffkit.graphs import node_count_distribution, sample_node_masks, to_dense, to_networkx, type_marginals


def _edge_set(g: nx.Graph) -> set[frozenset]:
    return {frozenset(e) for e in g.edges()}


def _same_graph(a: nx.Graph, b: nx.Graph) -> bool:
    return list(a.nodes()) == list(b.nodes()) and _edge_set(a) == _edge_set(b)


def _random_graphs(count: int, seed: int) -> list[nx.Graph]:
    """Graphs of 0..9 nodes, some with isolated nodes, on nodes 0..n-1 in order."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(count):
        n = int(rng.integers(0, 10))
        g = nx.empty_graph(n)
        g.add_edges_from((i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.3)
        graphs.append(g)
    return graphs


# ------------------------------------------------------------------------------------ dense <-> networkx


def test_round_trip_is_exact():
    graphs = _random_graphs(30, seed=0)
    batch = to_dense(graphs)
    back = to_networkx(batch)
    assert len(back) == len(graphs)
    assert all(_same_graph(a, b) for a, b in zip(graphs, back, strict=True))


def test_dense_layout():
    graphs = [nx.path_graph(3), nx.empty_graph(0), nx.complete_graph(4)]
    batch = to_dense(graphs, max_nodes=5)
    X, E, mask = batch["X"], batch["E"], batch["mask"]
    assert X.shape == (3, 5) and E.shape == (3, 5, 5) and mask.shape == (3, 5)
    assert X.dtype == E.dtype == torch.int64 and mask.dtype == torch.bool
    assert mask.tolist() == [[True] * 3 + [False] * 2, [False] * 5, [True] * 4 + [False]]
    assert torch.equal(E, E.transpose(1, 2))
    assert (E.diagonal(dim1=1, dim2=2) == 0).all()
    assert (X == 0).all()  # one node type; padding is 0 too
    pair = mask[:, :, None] & mask[:, None, :]
    assert (E[~pair] == 0).all()  # padded rows and columns are 0
    assert E[2, :4, :4].sum() == 12 and E[0].sum() == 4


def test_round_trip_with_attributes():
    g = nx.Graph()
    g.add_nodes_from([(0, {"t": 2}), (1, {"t": 0}), (2, {"t": 1})])
    g.add_edges_from([(0, 1, {"b": 1}), (1, 2, {"b": 3})])
    batch = to_dense([g], node_attr="t", edge_attr="b")
    assert batch["X"].tolist() == [[2, 0, 1]]
    assert batch["E"][0, 1, 2] == batch["E"][0, 2, 1] == 3
    back = to_networkx(batch, node_attr="t", edge_attr="b")[0]
    assert dict(back.nodes(data="t")) == {0: 2, 1: 0, 2: 1}
    assert {(u, v): k for u, v, k in back.edges(data="b")} == {(0, 1): 1, (1, 2): 3}


def test_to_networkx_reads_upper_triangle_and_drops_padding():
    E = torch.zeros(1, 4, 4, dtype=torch.int64)
    E[0, 0, 2] = 1  # upper: an edge
    E[0, 3, 2] = 1  # lower triangle only (E[0, 2, 3] = 0): ignored
    E[0, 0, 1] = 1  # node 1 is padding: dropped with its edges
    mask = torch.tensor([[True, False, True, True]])
    g = to_networkx({"X": torch.zeros(1, 4, dtype=torch.int64), "E": E, "mask": mask})[0]
    assert list(g.nodes()) == [0, 1, 2]  # real positions 0, 2, 3 relabelled
    assert _edge_set(g) == {frozenset((0, 1))}


def test_to_dense_rejects_bad_input():
    loop = nx.Graph([(0, 0)])
    with pytest.raises(ValueError, match="self-loops"):
        to_dense([loop])
    with pytest.raises(ValueError, match="max_nodes"):
        to_dense([nx.path_graph(4)], max_nodes=3)
    with pytest.raises(TypeError, match="undirected"):
        to_dense([nx.DiGraph([(0, 1)])])
    with pytest.raises(ValueError, match="edge attribute"):
        to_dense([nx.Graph([(0, 1, {"b": 0})])], edge_attr="b")  # 0 means "no edge"
    with pytest.raises(ValueError, match="empty"):
        to_dense([])


def test_node_count_distribution_and_masks():
    graphs = [nx.path_graph(2)] * 1 + [nx.path_graph(5)] * 3
    dist = node_count_distribution(graphs)
    assert dist.dtype == torch.float64
    assert dist.tolist() == [0, 0, 0.25, 0, 0, 0.75]
    masks = sample_node_masks(dist, 4000, torch.Generator().manual_seed(0))
    assert masks.shape == (4000, 5) and masks.dtype == torch.bool
    sizes = masks.sum(1)
    assert set(sizes.tolist()) == {2, 5}
    assert abs((sizes == 5).double().mean().item() - 0.75) < 0.03
    positions = torch.arange(5)
    assert torch.equal(masks, positions[None] < sizes[:, None])  # first n nodes
    again = sample_node_masks(dist, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_type_marginals_by_hand():
    # path on 3 nodes: 3 real pairs, 2 edges; K2: 1 pair, 1 edge -> edge freq [1/4, 3/4]
    batch = to_dense([nx.path_graph(3), nx.complete_graph(2)], max_nodes=4)
    node_freq, edge_freq = type_marginals(batch)
    assert node_freq.tolist() == [1.0]
    assert edge_freq.tolist() == [0.25, 0.75]
    assert edge_freq.dtype == torch.float64


# ------------------------------------------------------------------------------------ generators


def test_planar_graphs_are_connected_planar_and_seeded():
    graphs = planar_graphs(20, (16, 24), seed=0)
    assert all(16 <= g.number_of_nodes() <= 24 for g in graphs)
    assert all(nx.is_connected(g) and nx.check_planarity(g)[0] for g in graphs)
    # a triangulation of n points with h on the hull has 3n - 3 - h edges
    assert all(g.number_of_edges() <= 3 * g.number_of_nodes() - 6 for g in graphs)
    again = planar_graphs(20, (16, 24), seed=0)
    assert all(_same_graph(a, b) for a, b in zip(graphs, again, strict=True))
    assert not all(_same_graph(a, b) for a, b in zip(graphs, planar_graphs(20, (16, 24), seed=1), strict=True))


def test_sbm_graphs_follow_their_parameters():
    graphs = sbm_graphs(30, seed=0, communities=(2, 3), sizes=(8, 16))
    intra = inter = intra_pairs = inter_pairs = 0
    for g in graphs:
        blocks = g.graph["blocks"]
        assert 2 <= len(blocks) <= 3 and all(8 <= b <= 16 for b in blocks)
        assert g.number_of_nodes() == sum(blocks)
        label = np.repeat(np.arange(len(blocks)), blocks)
        for u, v in g.edges():
            intra += label[u] == label[v]
            inter += label[u] != label[v]
        n = g.number_of_nodes()
        same = sum(b * (b - 1) // 2 for b in blocks)
        intra_pairs += same
        inter_pairs += n * (n - 1) // 2 - same
    assert abs(intra / intra_pairs - 0.3) < 0.03
    assert inter / inter_pairs < 0.015
    again = sbm_graphs(30, seed=0, communities=(2, 3), sizes=(8, 16))
    assert all(_same_graph(a, b) for a, b in zip(graphs, again, strict=True))


def test_tree_graphs_are_uniform_labelled_trees():
    trees = tree_graphs(3000, 4, seed=0)
    assert all(nx.is_tree(t) and t.number_of_nodes() == 4 for t in trees)
    # Cayley: 4^2 = 16 labelled trees on 4 nodes, 4 stars and 12 paths
    stars = np.mean([max(d for _, d in t.degree()) == 3 for t in trees])
    assert abs(stars - 0.25) < 0.03
    shapes = {tuple(sorted(tuple(sorted(e)) for e in t.edges())) for t in trees}
    assert len(shapes) == 16
    sized = tree_graphs(20, (16, 24), seed=1)
    assert all(nx.is_tree(t) and 16 <= t.number_of_nodes() <= 24 for t in sized)


def test_community_small_rule():
    graphs = community_small_graphs(40, seed=0)
    for g in graphs:
        n = g.number_of_nodes()
        half = n // 2
        assert n % 2 == 0 and 12 <= n <= 20
        first, second = g.subgraph(range(half)), g.subgraph(range(half, n))
        bridges = g.number_of_edges() - first.number_of_edges() - second.number_of_edges()
        assert bridges >= 1
        # the published code's fixed community seeds
        assert _edge_set(first) == _edge_set(nx.gnp_random_graph(half, 0.7, seed=0))
    free = community_small_graphs(10, seed=0, fixed_community_seeds=False)
    assert any(
        _edge_set(g.subgraph(range(g.number_of_nodes() // 2)))
        != _edge_set(nx.gnp_random_graph(g.number_of_nodes() // 2, 0.7, seed=0))
        for g in free
    )


def test_cache_is_written_once_and_read_back(tmp_path):
    calls = []

    def counted_trees(n_graphs, n_nodes, seed):
        calls.append(seed)
        return tree_graphs(n_graphs, n_nodes, seed)

    params = {"n_graphs": 5, "n_nodes": (6, 9), "seed": 3}
    first = cached_graphs(counted_trees, params, tmp_path)
    second = cached_graphs(counted_trees, params, tmp_path)
    assert calls == [3]
    assert all(_same_graph(a, b) for a, b in zip(first, second, strict=True))
    assert all(_same_graph(a, b) for a, b in zip(first, tree_graphs(5, (6, 9), 3), strict=True))
    path = cache_path(tmp_path, counted_trees, params)
    assert path.exists() and path.name == "counted_trees_n5_nodes6-9_seed3_v1.pt"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


# ------------------------------------------------------------------------------------ data module


def test_published_split_sizes():
    for name in ("planar", "sbm", "tree"):
        spec = DATASETS[name]
        assert spec.splits == (128, 32, 40) and spec.n_graphs == 200 and spec.published
    assert DATASETS["planar"].params == {"n_nodes": 64} and DATASETS["tree"].params == {"n_nodes": 64}
    spec = DATASETS["community_small"]
    assert spec.n_graphs == 100 and spec.splits[0] == 80 and spec.val_is_test
    assert not any(DATASETS[name].published for name in ("planar_cpu", "sbm_cpu", "tree_cpu"))


def test_data_module_batches_and_splits(tmp_path):
    dm = GraphDataModule("tree_cpu", batch_size=16, seed=0, cache_dir=str(tmp_path))
    train, val, test = dm.train_graphs(), dm.val_graphs(), dm.test_graphs()
    assert (len(train), len(val), len(test)) == (128, 32, 40)
    assert len({id(g) for g in train + val + test}) == 200
    assert dm.max_nodes == max(g.number_of_nodes() for g in train + val + test) <= 24
    assert (dm.num_node_types, dm.num_edge_types, dm.validity) == (1, 2, "tree")

    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"X", "E", "mask"}
    assert batch["E"].shape == (16, dm.max_nodes, dm.max_nodes) and batch["mask"].dtype == torch.bool
    assert all(_same_graph(a, b) for a, b in zip(to_networkx(batch), val[:16], strict=True))

    order = [to_networkx(b)[0] for b in dm.train_dataloader()]
    again = GraphDataModule("tree_cpu", batch_size=16, seed=0, cache_dir=str(tmp_path))
    assert all(
        _same_graph(a, b) for a, b in zip(order, [to_networkx(b)[0] for b in again.train_dataloader()], strict=True)
    )
    other = GraphDataModule("tree_cpu", batch_size=16, seed=1, cache_dir=str(tmp_path))
    assert not _same_graph(other.train_graphs()[0], train[0])


def test_data_module_distributions(tmp_path):
    dm = GraphDataModule("sbm_cpu", batch_size=8, seed=0, cache_dir=str(tmp_path))
    train = dm.train_graphs()
    dist = dm.node_count_distribution()
    assert dist.shape == (dm.max_nodes + 1,) and abs(float(dist.sum()) - 1) < 1e-12
    counts = np.bincount([g.number_of_nodes() for g in train], minlength=dm.max_nodes + 1)
    assert np.allclose(dist.numpy(), counts / counts.sum())
    edges = sum(g.number_of_edges() for g in train)
    pairs = sum(g.number_of_nodes() * (g.number_of_nodes() - 1) // 2 for g in train)
    assert torch.allclose(
        dm.class_marginals("E"), torch.tensor([1 - edges / pairs, edges / pairs], dtype=torch.float64)
    )
    assert dm.class_marginals("X").tolist() == [1.0]
    with pytest.raises(ValueError, match="'X' or 'E'"):
        dm.class_marginals("y")


def test_community_small_module_uses_test_as_val(tmp_path):
    dm = GraphDataModule("community_small", batch_size=8, seed=0, cache_dir=str(tmp_path))
    assert len(dm.train_graphs()) == 80 and len(dm.test_graphs()) == 20
    assert all(a is b for a, b in zip(dm.val_graphs(), dm.test_graphs(), strict=True))
    assert dm.max_nodes <= 20 and dm.validity is None


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="planar_cpu"):
        GraphDataModule("grid")
