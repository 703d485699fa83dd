"""Graph metrics (diffkit.metrics.graphs) against hand counts and plainly written references.

Orbit counts are checked on small graphs counted by hand and against brute-force enumeration of
every connected induced subgraph on 2-4 nodes; the MMD against a double loop over pairs written
from GRAN's formula; V.U.N. on hand-built lists.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffkit.data.graphs import planar_graphs, sbm_graphs, tree_graphs
from diffkit.graphs import to_dense
from diffkit.metrics.graphs import (
    VALIDITY,
    GraphMetrics,
    clustering_histogram,
    degree_histogram,
    gaussian_tv_mmd,
    graph_mmds,
    infer_blocks,
    is_planar_graph,
    is_sbm_graph,
    is_tree_graph,
    orbit_counts,
    sbm_p_value,
    spectral_histogram,
    vun,
)

# ------------------------------------------------------------------------------------ orbits


def _orbits(n: int, entries: dict[int, list[int]]) -> np.ndarray:
    """(n, 15) with column k = entries[k] (per node) and 0 elsewhere."""
    out = np.zeros((n, 15), dtype=np.int64)
    for k, column in entries.items():
        out[:, k] = column
    return out


# Counted by hand. Orbits: 0 degree; 1 / 2 end / middle of an induced P3; 3 triangle; 4 / 5 end /
# middle of P4; 6 / 7 star leaf / centre; 8 C4; 9 / 10 / 11 paw pendant / degree-2 / degree-3;
# 12 / 13 diamond degree-2 / degree-3; 14 K4.
HAND_COUNTED = {
    "P4 0-1-2-3": (
        nx.path_graph(4),
        _orbits(4, {0: [1, 2, 2, 1], 1: [1, 1, 1, 1], 2: [0, 1, 1, 0], 4: [1, 0, 0, 1], 5: [0, 1, 1, 0]}),
    ),
    "star, centre 0": (
        nx.star_graph(3),
        _orbits(4, {0: [3, 1, 1, 1], 1: [0, 2, 2, 2], 2: [3, 0, 0, 0], 6: [0, 1, 1, 1], 7: [1, 0, 0, 0]}),
    ),
    "C4": (nx.cycle_graph(4), _orbits(4, {0: [2] * 4, 1: [2] * 4, 2: [1] * 4, 8: [1] * 4})),
    "K4": (nx.complete_graph(4), _orbits(4, {0: [3] * 4, 3: [3] * 4, 14: [1] * 4})),
    "paw: triangle 0 1 2, 3 on 0": (
        nx.Graph([(0, 1), (1, 2), (0, 2), (0, 3)]),
        _orbits(
            4,
            {
                0: [3, 2, 2, 1],
                1: [0, 1, 1, 2],
                2: [2, 0, 0, 0],
                3: [1, 1, 1, 0],
                9: [0, 0, 0, 1],
                10: [0, 1, 1, 0],
                11: [1, 0, 0, 0],
            },
        ),
    ),
    "diamond: 0-1 shared, 2 3 on both": (
        nx.Graph([(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)]),
        _orbits(
            4, {0: [3, 3, 2, 2], 1: [0, 0, 2, 2], 2: [1, 1, 0, 0], 3: [2, 2, 1, 1], 12: [0, 0, 1, 1], 13: [1, 1, 0, 0]}
        ),
    ),
    # 4-node induced subgraphs: {0,1,2,3} paw, {0,1,3,4} path 1-0-3-4, {0,2,3,4} path 2-0-3-4
    "triangle 0 1 2 with tail 0-3-4": (
        nx.Graph([(0, 1), (1, 2), (0, 2), (0, 3), (3, 4)]),
        _orbits(
            5,
            {
                0: [3, 2, 2, 2, 1],
                1: [1, 1, 1, 2, 1],
                2: [2, 0, 0, 1, 0],
                3: [1, 1, 1, 0, 0],
                4: [0, 1, 1, 0, 2],
                5: [2, 0, 0, 2, 0],
                9: [0, 0, 0, 1, 0],
                10: [0, 1, 1, 0, 0],
                11: [1, 0, 0, 0, 0],
            },
        ),
    ),
}


@pytest.mark.parametrize("name", list(HAND_COUNTED))
def test_orbit_counts_on_hand_counted_graphs(name):
    graph, expected = HAND_COUNTED[name]
    np.testing.assert_array_equal(orbit_counts(graph), expected)


def _brute_force_orbits(graph: nx.Graph) -> np.ndarray:
    """Enumerate every connected induced subgraph on 3 and 4 nodes and read each node's orbit
    from the subgraph's edge count and degrees."""
    nodes = list(graph.nodes())
    row = {v: i for i, v in enumerate(nodes)}
    out = np.zeros((len(nodes), 15), dtype=np.int64)
    for v, d in graph.degree():
        out[row[v], 0] = d
    for size in (3, 4):
        for subset in itertools.combinations(nodes, size):
            sub = graph.subgraph(subset)
            if not nx.is_connected(sub):
                continue
            degree, m = dict(sub.degree()), sub.number_of_edges()
            shape = sorted(degree.values())
            for v in subset:
                d = degree[v]
                if size == 3:
                    orbit = 3 if m == 3 else (2 if d == 2 else 1)
                elif m == 3:
                    orbit = (4 if d == 1 else 5) if shape == [1, 1, 2, 2] else (6 if d == 1 else 7)
                elif m == 4:
                    orbit = 8 if shape == [2, 2, 2, 2] else {1: 9, 2: 10, 3: 11}[d]
                elif m == 5:
                    orbit = 12 if d == 2 else 13
                else:
                    orbit = 14
                out[row[v], orbit] += 1
    return out


def test_orbit_counts_equal_brute_force_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(25):
        n, p = int(rng.integers(1, 12)), float(rng.uniform(0.1, 0.9))
        graph = nx.gnp_random_graph(n, p, seed=int(rng.integers(2**31)))
        np.testing.assert_array_equal(orbit_counts(graph), _brute_force_orbits(graph))


# ------------------------------------------------------------------------------------ descriptors and MMD


def test_descriptors():
    graph = nx.Graph([(0, 1), (1, 2), (0, 2), (0, 3)])  # paw: clustering 1/3, 1, 1, 0
    assert degree_histogram(graph).tolist() == [0, 1, 2, 1]
    clustering = clustering_histogram(graph)
    assert clustering.shape == (100,) and clustering[0] == 1 and clustering[33] == 1 and clustering[99] == 2
    spectrum = spectral_histogram(nx.complete_graph(4))  # eigenvalues 0, 4/3, 4/3, 4/3
    assert spectrum.shape == (200,) and spectrum.sum() == pytest.approx(1.0)
    edges = np.linspace(-1e-5, 2, 201)
    assert spectrum[0] == 0.25 and spectrum[np.searchsorted(edges, 4 / 3) - 1] == 0.75


def _reference_mmd(xs, ys, sigma, is_hist=True):
    """GRAN's compute_mmd with gaussian_tv, written as plain loops."""

    def prep(v, length):
        v = np.concatenate([np.asarray(v, dtype=float), np.zeros(length - len(v))])
        return v / (v.sum() + 1e-6) if is_hist else v

    length = max(len(v) for v in [*xs, *ys])
    xs, ys = [prep(v, length) for v in xs], [prep(v, length) for v in ys]

    def kernel(a, b):
        tv = np.abs(a - b).sum() / 2
        return math.exp(-tv * tv / (2 * sigma * sigma))

    def mean(a, b):
        return sum(kernel(u, v) for u in a for v in b) / (len(a) * len(b))

    return mean(xs, xs) + mean(ys, ys) - 2 * mean(xs, ys)


def test_gaussian_tv_mmd_matches_reference():
    rng = np.random.default_rng(1)
    xs = [rng.integers(0, 5, size=rng.integers(2, 8)).astype(float) for _ in range(6)]
    ys = [rng.integers(0, 5, size=rng.integers(2, 8)).astype(float) for _ in range(4)]
    for sigma, is_hist in ((1.0, True), (0.1, True), (30.0, False), (2.0, False)):
        assert gaussian_tv_mmd(xs, ys, sigma, is_hist) == pytest.approx(
            _reference_mmd(xs, ys, sigma, is_hist), abs=1e-12
        )
    assert gaussian_tv_mmd(xs, xs, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_graph_mmds_zero_on_itself_and_larger_across_families():
    planar = planar_graphs(16, (16, 20), seed=0)
    planar_other = planar_graphs(16, (16, 20), seed=1)
    trees = tree_graphs(16, (16, 20), seed=0)
    itself = graph_mmds(planar, planar)
    assert all(abs(v) < 1e-12 for v in itself)
    same_family, across = graph_mmds(planar_other, planar), graph_mmds(trees, planar)
    for name in across._fields:
        assert getattr(across, name) > 3 * getattr(same_family, name), name


# ------------------------------------------------------------------------------------ validity


def test_planar_validity():
    assert all(is_planar_graph(g) for g in planar_graphs(10, (16, 24), seed=2))
    with_k5 = nx.disjoint_union(nx.complete_graph(5), nx.path_graph(3))
    with_k5.add_edge(0, 5)  # connected, contains K5
    assert not is_planar_graph(with_k5)
    delaunay = planar_graphs(1, 20, seed=3)[0]
    delaunay.add_edges_from(itertools.combinations(range(5), 2))  # force a K5 on nodes 0-4
    assert not is_planar_graph(delaunay)
    assert not is_planar_graph(nx.disjoint_union(nx.path_graph(3), nx.path_graph(3)))  # planar, disconnected
    assert not is_planar_graph(nx.empty_graph(0))


def test_tree_validity():
    tree = tree_graphs(1, 12, seed=0)[0]
    assert is_tree_graph(tree)
    cycle = tree.copy()
    cycle.add_edge(*next(e for e in itertools.combinations(range(12), 2) if not tree.has_edge(*e)))
    assert not is_tree_graph(cycle)
    assert not is_tree_graph(nx.disjoint_union(nx.path_graph(3), nx.path_graph(3)))


def _erdos_renyi_like(graphs: list[nx.Graph], seed: int) -> list[nx.Graph]:
    """G(n, p) with each graph's node count and edge density."""
    rng = np.random.default_rng(seed)
    out = []
    for g in graphs:
        n = g.number_of_nodes()
        out.append(nx.gnp_random_graph(n, g.number_of_edges() / (n * (n - 1) / 2), seed=int(rng.integers(2**31))))
    return out


def test_sbm_validity_full_size():
    # 200 draws measured: 88.5% of true SBM graphs pass, 0% of Erdos-Renyi graphs.
    graphs = sbm_graphs(20, seed=3)
    assert np.mean([is_sbm_graph(g) for g in graphs]) >= 0.8
    assert not any(is_sbm_graph(g) for g in _erdos_renyi_like(graphs[:8], seed=4))


def test_sbm_validity_cpu_variant():
    # 200 draws measured: ~79% of true sbm_cpu graphs pass, 0% of Erdos-Renyi graphs.
    graphs = sbm_graphs(20, seed=5, communities=(2, 3), sizes=(8, 16))
    rule = VALIDITY["sbm_cpu"]
    assert np.mean([rule(g) for g in graphs]) >= 0.7
    assert not any(rule(g) for g in _erdos_renyi_like(graphs, seed=6))


def test_infer_blocks_recovers_planted_blocks():
    sizes = [15, 20, 25]
    probs = [[0.5 if i == j else 0.01 for j in range(3)] for i in range(3)]
    graph = nx.stochastic_block_model(sizes, probs, seed=0)
    labels = infer_blocks(graph)
    truth = np.repeat(np.arange(3), sizes)
    partition = lambda lab: {frozenset(np.flatnonzero(lab == r)) for r in set(lab.tolist())}  # noqa: E731
    assert partition(labels) == partition(truth)


def test_sbm_p_value_by_hand():
    # blocks {0, 1, 2} and {3, 4, 5}: 2 of 3 intra pairs in each, 1 of 9 inter pairs
    graph = nx.Graph([(0, 1), (1, 2), (3, 4), (4, 5), (2, 3)])
    labels = np.array([0, 0, 0, 1, 1, 1])
    from scipy.stats import chi2

    def p(p_hat, p0, var):
        return 1 - chi2.cdf((p_hat - p0) ** 2 / var, 1)

    p_in, p_out = 2 / 3, 1 / 9
    expected = (2 * p(p_in, 0.3, p_in * (1 - p_in) + 1e-6) + 2 * p(p_out, 0.005, p_out * (1 - p_out) + 1e-6)) / 4
    assert sbm_p_value(graph, labels) == pytest.approx(expected, rel=1e-5)
    expected_null = (2 * p(p_in, 0.3, 0.21) + 2 * p(p_out, 0.005, 0.005 * 0.995)) / 4
    assert sbm_p_value(graph, labels, variance="null") == pytest.approx(expected_null, rel=1e-5)
    no_bridge = nx.Graph([(0, 1), (1, 2), (3, 4), (4, 5)])
    # DiGress's statistic: W = 0.005^2 / 1e-6 = 25 on the empty inter pair, p-value ~ 6e-7
    assert sbm_p_value(no_bridge, labels) < 0.5 * (1 - chi2.cdf((2 / 3 - 0.3) ** 2 / (2 / 9 + 1e-6), 1)) + 1e-5


# ------------------------------------------------------------------------------------ V.U.N.


def test_vun_by_hand():
    relabelled = nx.relabel_nodes(nx.path_graph(4), {0: 2, 1: 0, 2: 3, 3: 1})
    generated = [nx.path_graph(4), relabelled, nx.star_graph(3), nx.cycle_graph(3)]
    result = vun(generated, train=[nx.star_graph(3)], validity=is_tree_graph)
    # valid: P4, P4, star; unique: the first P4, star, triangle; novel: P4, P4, triangle
    assert result == (0.75, 0.75, 0.75, 0.25)
    assert vun(generated, train=[]).vun == 0.75


@pytest.mark.filterwarnings("ignore:The hashes produced")
def test_vun_separates_graphs_with_equal_wl_hashes():
    # C6 and two triangles are both 2-regular on 6 nodes: Weisfeiler-Lehman cannot tell them apart
    c6, triangles = nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    assert nx.weisfeiler_lehman_graph_hash(c6) == nx.weisfeiler_lehman_graph_hash(triangles)
    assert vun([c6, triangles], train=[c6]) == (1.0, 1.0, 0.5, 0.5)


# ------------------------------------------------------------------------------------ Metric


def test_graph_metrics_values():
    train, reference = tree_graphs(24, (10, 14), seed=0), tree_graphs(12, (10, 14), seed=1)
    metric = GraphMetrics(reference, train, max_nodes=16, validity="tree")
    metric.update(to_dense(reference[:5], max_nodes=14))  # a narrower batch is padded
    metric.update(reference[5:])
    out = metric.compute()
    assert out["mmd/degree"].dtype == torch.float64
    assert all(abs(float(out[f"mmd/{d}"])) < 1e-12 for d in ("degree", "clustering", "orbit", "spectre"))
    assert float(out["valid"]) == 1.0 and float(out["reference/valid"]) == 1.0
    assert float(out["unique"]) == 1.0 and float(out["vun"]) == float(out["novel"])
    assert math.isnan(float(out["ratio/clustering"]))  # trees have no triangle: train vs reference MMD is 0

    metric.reset()
    planar = planar_graphs(12, (10, 14), seed=0)
    metric.update(to_dense(planar, max_nodes=16))
    out = metric.compute()
    baseline = graph_mmds(train, reference)
    assert float(out["ratio/degree"]) == pytest.approx(graph_mmds(planar, reference).degree / baseline.degree)
    assert float(out["ratio/mean"]) > 2 and float(out["valid"]) == 0.0 and float(out["vun"]) == 0.0
    with pytest.raises(ValueError, match="max_nodes"):
        metric.update([nx.path_graph(20)])
    with pytest.raises(ValueError, match="validity"):
        GraphMetrics(reference, train, 16, validity="grid")


def test_graph_metrics_merged_states_equal_one_metric():
    # merge_state applies each state's dist_reduce_fx, as the DDP sync does ("cat" for the samples)
    train, reference, generated = tree_graphs(10, 8, 0), tree_graphs(6, 8, 1), tree_graphs(7, (6, 9), 2)
    parts = [GraphMetrics(reference, train, max_nodes=9, validity="tree") for _ in range(2)]
    parts[0].update(generated[:3])
    parts[1].update(to_dense(generated[3:]))
    parts[0].merge_state(parts[1])
    single = GraphMetrics(reference, train, max_nodes=9, validity="tree")
    single.update(generated)
    merged, expected = parts[0].compute(), single.compute()
    assert merged.keys() == expected.keys()
    assert all(torch.allclose(merged[k], expected[k], rtol=1e-12, atol=1e-15, equal_nan=True) for k in expected)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        train, reference, generated = tree_graphs(10, 8, 0), tree_graphs(6, 8, 1), tree_graphs(7, (6, 9), 2)
        metric = GraphMetrics(reference, train, max_nodes=9, validity="tree")
        metric.update(to_dense(generated[:3] if rank == 0 else generated[3:], max_nodes=9))
        result = metric.compute()
        if rank == 0:
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~30 s on 2 cores: two spawned processes import torch and diffkit
@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is unavailable"
)
def test_graph_metrics_under_two_processes_equal_single_process(tmp_path):
    out_file = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    distributed = torch.load(out_file)
    train, reference, generated = tree_graphs(10, 8, 0), tree_graphs(6, 8, 1), tree_graphs(7, (6, 9), 2)
    single = GraphMetrics(reference, train, max_nodes=9, validity="tree")
    single.update(generated)
    expected = single.compute()
    assert distributed.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(distributed[key], expected[key], rtol=1e-12, atol=1e-15, equal_nan=True), key
