"""Tests for the DiGress-style GraphTransformer and its structural features.

References are independent of the library: cycles are counted by enumerating node orderings (and
triangles by networkx), Laplacian spectra come from networkx / numpy, and the symmetry properties
(permutation equivariance, padding invariance) are checked by permuting and padding the inputs.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from diffkit.models.graph_transformer import GraphTransformer, cycle_counts, laplacian_features, masked_stats

T = 50
K_X, K_E = 4, 3  # node and edge classes; inputs carry one more (absorbing mask) id each


@pytest.fixture(autouse=True)
def _seed(single_thread: None) -> None:
    """Seed torch; one intra-op thread (conftest's ``single_thread``): these tensors are tiny."""
    torch.manual_seed(0)


def small_net(**kwargs) -> GraphTransformer:
    args = dict(
        num_node_states=K_X + 1, num_edge_states=K_E + 1, num_node_outputs=K_X, num_edge_outputs=K_E, num_steps=T,
        hidden=16, edge_hidden=8, global_hidden=16, depth=2, heads=4,
    )  # fmt: skip
    return GraphTransformer(**{**args, **kwargs})


def random_graphs(sizes: list[int], N: int, gen: torch.Generator, density: float = 0.5) -> dict[str, Tensor]:
    """A batch of random graphs with sizes[b] real nodes (the first ones), padded with zeros to N."""
    B = len(sizes)
    mask = torch.arange(N)[None, :] < torch.tensor(sizes)[:, None]  # (B, N)
    X = torch.randint(0, K_X + 1, (B, N), generator=gen) * mask
    edge = (torch.rand(B, N, N, generator=gen) < density).triu(1)
    types = torch.randint(1, K_E + 1, (B, N, N), generator=gen)
    E = (edge * types).triu(1)
    E = (E + E.transpose(1, 2)) * (mask[:, :, None] & mask[:, None, :])
    return {"X": X, "E": E, "mask": mask}


def permute(x: dict[str, Tensor], perm: Tensor) -> dict[str, Tensor]:
    return {"X": x["X"][:, perm], "E": x["E"][:, perm][:, :, perm], "mask": x["mask"][:, perm]}


def adjacency(graph: nx.Graph, N: int | None = None) -> Tensor:
    """(N, N) float64 adjacency of a networkx graph on nodes 0..n-1, zero-padded to N."""
    n = graph.number_of_nodes()
    A = torch.zeros(N or n, N or n, dtype=torch.float64)
    for i, j in graph.edges:
        A[i, j] = A[j, i] = 1.0
    return A


def enumerate_cycles(A: Tensor, k: int) -> tuple[list[int], int]:
    """Simple k-cycles by brute force: per node (cycles through it) and in total."""
    n = A.shape[0]
    per_node, total = [0] * n, 0
    for nodes in itertools.combinations(range(n), k):
        for rest in itertools.permutations(nodes[1:]):
            if rest[0] > rest[-1]:  # each cycle once: fix the first node and the direction
                continue
            cycle = (nodes[0], *rest)
            if all(A[cycle[i], cycle[(i + 1) % k]] for i in range(k)):
                total += 1
                for v in cycle:
                    per_node[v] += 1
    return per_node, total


# ---------------------------------------------------------------------------------------------- outputs


def test_output_shapes_zero_padding_and_symmetry() -> None:
    gen = torch.Generator().manual_seed(1)
    x_t = random_graphs([5, 3, 1], N=6, gen=gen)
    t = torch.tensor([0, 25, 50])
    out = small_net()(x_t, t)
    assert set(out) == {"X", "E"}
    assert out["X"].shape == (3, 6, K_X) and out["E"].shape == (3, 6, 6, K_E)
    assert out["X"].dtype == torch.float32 and torch.isfinite(out["X"]).all() and torch.isfinite(out["E"]).all()
    torch.testing.assert_close(out["E"], out["E"].transpose(1, 2), rtol=0, atol=0)
    mask = x_t["mask"]
    assert (out["X"][~mask] == 0).all()
    pair = mask[:, :, None] & mask[:, None, :]
    assert (out["E"][~pair] == 0).all()
    assert (out["E"].diagonal(dim1=1, dim2=2) == 0).all()
    assert (out["X"][mask].abs().sum(-1) > 0).all()


def test_edge_output_symmetric_even_for_asymmetric_input() -> None:
    E_in = torch.randint(0, K_E + 1, (2, 5, 5))
    assert not torch.equal(E_in, E_in.transpose(1, 2))
    x_t = {"X": torch.randint(0, K_X + 1, (2, 5)), "E": E_in, "mask": torch.ones(2, 5, dtype=torch.bool)}
    E = small_net(structural_features=True, eigen_features=2)(x_t, torch.tensor([3, 40]))["E"]
    torch.testing.assert_close(E, E.transpose(1, 2), rtol=0, atol=0)


def test_output_depends_on_time() -> None:
    x_t = random_graphs([4, 4], N=4, gen=torch.Generator().manual_seed(2))
    x_t = {k: v[:1].expand(2, *v.shape[1:]) for k, v in x_t.items()}  # the same graph twice
    out = small_net()(x_t, torch.tensor([1, 49]))
    assert not torch.allclose(out["X"][0], out["X"][1])


def test_missing_mask_means_all_nodes_real() -> None:
    x_t = random_graphs([5, 5], N=5, gen=torch.Generator().manual_seed(3))
    net, t = small_net(structural_features=True), torch.tensor([2, 9])
    with_mask = net(x_t, t)
    without = net({"X": x_t["X"], "E": x_t["E"]}, t)
    for key in ("X", "E"):
        torch.testing.assert_close(with_mask[key], without[key])


@pytest.mark.parametrize("structural", [False, True], ids=["plain", "cycles"])
def test_permutation_equivariance(structural: bool) -> None:
    """Permuting the nodes of X, E and the mask permutes both outputs the same way (padding included)."""
    gen = torch.Generator().manual_seed(4)
    x_t = random_graphs([7, 5, 3], N=7, gen=gen)
    t = torch.tensor([5, 20, 45])
    net = small_net(structural_features=structural)
    out = net(x_t, t)
    perm = torch.randperm(7, generator=gen)
    out_perm = net(permute(x_t, perm), t)
    torch.testing.assert_close(out_perm["X"], out["X"][:, perm], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_perm["E"], out["E"][:, perm][:, :, perm], rtol=0, atol=1e-5)


@pytest.mark.parametrize("structural", [False, True], ids=["plain", "cycles"])
def test_padding_invariance(structural: bool) -> None:
    """The same 5-node graphs padded to N = 5 and N = 8 give the same outputs on real nodes and pairs."""
    small = random_graphs([5, 4], N=5, gen=torch.Generator().manual_seed(5))
    big = {
        "X": nn.functional.pad(small["X"], (0, 3)),
        "E": nn.functional.pad(small["E"], (0, 3, 0, 3)),
        "mask": nn.functional.pad(small["mask"], (0, 3)),
    }
    net, t = small_net(structural_features=structural), torch.tensor([7, 31])
    out_small, out_big = net(small, t), net(big, t)
    torch.testing.assert_close(out_big["X"][:, :5], out_small["X"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_big["E"][:, :5, :5], out_small["E"], rtol=0, atol=1e-5)


def test_padded_entries_and_diagonal_do_not_matter() -> None:
    """Changing ids at padded nodes, at padded pairs or on E's diagonal leaves every output unchanged."""
    gen = torch.Generator().manual_seed(6)
    x_t = random_graphs([6, 3], N=6, gen=gen)
    mask = x_t["mask"]
    pair = mask[:, :, None] & mask[:, None, :]
    noise_X = torch.randint(0, K_X + 1, x_t["X"].shape, generator=gen)
    noise_E = torch.randint(0, K_E + 1, x_t["E"].shape, generator=gen)
    eye = torch.eye(6, dtype=torch.bool)
    changed = {
        "X": torch.where(mask, x_t["X"], noise_X),
        "E": torch.where(pair & ~eye, x_t["E"], noise_E),
        "mask": mask,
    }
    net, t = small_net(structural_features=True, eigen_features=2), torch.tensor([4, 44])
    out, out_changed = net(x_t, t), net(changed, t)
    for key in ("X", "E"):
        torch.testing.assert_close(out_changed[key], out[key], rtol=0, atol=1e-6)


def test_tiny_and_empty_graphs_are_finite() -> None:
    """A graph with one real node (no real pair) or none at all gives finite outputs, also with eigen features."""
    x_t = random_graphs([1, 0, 4], N=4, gen=torch.Generator().manual_seed(7))
    net = small_net(structural_features=True, eigen_features=3)
    out = net(x_t, torch.tensor([1, 2, 3]))
    assert torch.isfinite(out["X"]).all() and torch.isfinite(out["E"]).all()
    assert (out["X"][1] == 0).all() and (out["E"][:2] == 0).all()
    out["X"].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize("seed", range(6))
def test_cycle_counts_match_enumeration(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, density = 7, [0.3, 0.5, 0.7, 0.9, 0.45, 0.6][seed]
    A = (torch.rand(n, n, generator=gen) < density).triu(1)
    A = (A | A.T).to(torch.float64)
    node, graph = cycle_counts(A[None])
    G = nx.from_numpy_array(A.numpy())
    triangles = nx.triangles(G)
    torch.testing.assert_close(node[0, :, 0], torch.tensor([triangles[i] for i in range(n)], dtype=torch.float64))
    for col, k in enumerate((3, 4, 5, 6)):
        per_node, total = enumerate_cycles(A, k)
        assert graph[0, col].item() == total, f"{k}-cycles in the graph"
        if k < 6:
            expected = torch.tensor(per_node, dtype=torch.float64)
            torch.testing.assert_close(node[0, :, col], expected, msg=f"{k}-cycles per node")


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (nx.complete_graph(4), [4, 3, 0, 0]),
        (nx.cycle_graph(5), [0, 0, 1, 0]),
        (nx.complete_bipartite_graph(3, 3), [0, 9, 0, 6]),
        (nx.petersen_graph(), [0, 0, 12, 10]),
    ],
    ids=["K4", "C5", "K33", "petersen"],
)
def test_cycle_counts_of_known_graphs(graph: nx.Graph, expected: list[int]) -> None:
    """Textbook counts, with the graph also padded by two isolated nodes in the same batch."""
    n = graph.number_of_nodes()
    A = torch.stack([adjacency(graph, n + 2), adjacency(graph, n + 2)])
    node, total = cycle_counts(A)
    assert total.tolist() == [expected, expected]
    assert (node[:, n:] == 0).all()


def laplacian(graph: nx.Graph) -> np.ndarray:
    return nx.laplacian_matrix(graph, nodelist=range(graph.number_of_nodes())).toarray().astype(np.float64)


@pytest.mark.parametrize(
    "graph",
    [nx.path_graph(5), nx.disjoint_union(nx.cycle_graph(4), nx.path_graph(3)), nx.empty_graph(3), nx.petersen_graph()],
    ids=["path", "two-components", "no-edges", "petersen"],
)
def test_laplacian_features_match_networkx(graph: nx.Graph) -> None:
    n, N, k = graph.number_of_nodes(), graph.number_of_nodes() + 3, 4
    A = adjacency(graph, N)[None]
    mask = (torch.arange(N) < n)[None]
    vectors, values, components = laplacian_features(A, mask, k)
    assert vectors.shape == (1, N, k) and values.shape == (1, k)
    assert components.item() == nx.number_connected_components(graph)
    spectrum = np.sort(np.linalg.eigvalsh(laplacian(graph)))
    nonzero = spectrum[components.item() :][:k]
    expected = np.zeros(k)
    expected[: len(nonzero)] = nonzero
    np.testing.assert_allclose(values[0].numpy(), expected, atol=1e-9)
    L = torch.from_numpy(laplacian(graph))
    v = vectors[0, :n]  # (n, k)
    used = len(nonzero)
    torch.testing.assert_close(L @ v, v * values[0], atol=1e-9, rtol=0)  # L v = lambda v (zero columns too)
    torch.testing.assert_close(v[:, :used].T @ v[:, :used], torch.eye(used, dtype=torch.float64), atol=1e-9, rtol=0)
    assert (vectors[0, n:] == 0).all() and (vectors[0, :, used:] == 0).all()


def test_laplacian_features_padding_invariant_up_to_sign() -> None:
    """A path has distinct eigenvalues, so its eigenvectors are unique up to sign whatever the padding."""
    graph = nx.path_graph(5)
    out = [laplacian_features(adjacency(graph, N)[None], (torch.arange(N) < 5)[None], 3) for N in (5, 9)]
    (v5, l5, c5), (v9, l9, c9) = out
    torch.testing.assert_close(l9, l5)
    assert c5.item() == c9.item() == 1
    signs = torch.sign((v9[0, :5] * v5[0]).sum(0))  # (3,)
    torch.testing.assert_close(v9[0, :5], v5[0] * signs, atol=1e-9, rtol=0)


def test_masked_stats_use_real_elements_only() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-5.0], [7.0]]])  # (2, 3, 1)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    stats = masked_stats(x, mask)  # [mean, min, max, std]
    torch.testing.assert_close(stats[0], torch.tensor([2.0, 1.0, 3.0, (1.0 + 1e-6) ** 0.5]))
    torch.testing.assert_close(stats[1], torch.tensor([0.0, 0.0, 0.0, 1e-3]))


# ---------------------------------------------------------------------------------------------- training


def test_gradients_reach_every_parameter() -> None:
    x_t = random_graphs([6, 4, 5], N=6, gen=torch.Generator().manual_seed(8), density=0.6)
    x_t["X"][0, :5] = torch.arange(5)  # every node id occurs at a real node
    net = small_net(structural_features=True, eigen_features=2)
    out = net(x_t, torch.tensor([3, 30, 47]))
    (out["X"].pow(2).sum() + out["E"].pow(2).sum()).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_overfits_a_small_batch() -> None:
    """Cross-entropy on the real nodes and pairs of a fixed batch falls to a small fraction in 100 Adam steps."""
    gen = torch.Generator().manual_seed(9)
    x0 = random_graphs([6, 5, 4, 6], N=6, gen=gen)
    x0 = {**x0, "X": x0["X"].clamp(max=K_X - 1), "E": x0["E"].clamp(max=K_E - 1)}  # no absorbing id in data
    x_t = random_graphs([6, 5, 4, 6], N=6, gen=gen)  # unrelated noisy inputs on the same masks
    t = torch.tensor([10, 20, 30, 40])
    mask = x0["mask"]
    pairs = (mask[:, :, None] & mask[:, None, :]) & ~torch.eye(6, dtype=torch.bool)
    net = small_net(hidden=32, edge_hidden=16, global_hidden=32, structural_features=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss_fn() -> Tensor:
        out = net(x_t, t)
        node_loss = nn.functional.cross_entropy(out["X"][mask], x0["X"][mask])
        return node_loss + nn.functional.cross_entropy(out["E"][pairs], x0["E"][pairs])

    initial = loss_fn().item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    final = loss_fn().item()
    assert final < 0.1 * initial, (initial, final)


# ---------------------------------------------------------------------------------------------- errors


def test_input_errors() -> None:
    net = small_net()
    ok = random_graphs([3, 2], N=3, gen=torch.Generator().manual_seed(10))
    t = torch.tensor([1, 2])
    with pytest.raises(TypeError, match=r"^x_t: expected a dict with keys 'X', 'E' \(and 'mask'\), got Tensor"):
        net(ok["X"], t)
    with pytest.raises(ValueError, match=r"^x_t: missing field\(s\) \['E'\]"):
        net({"X": ok["X"], "mask": ok["mask"]}, t)
    with pytest.raises(TypeError, match=r"^x_t\['X'\]: expected int64 class ids, got dtype torch.float32"):
        net({**ok, "X": ok["X"].float()}, t)
    too_big = ok["X"].clone()
    too_big[0, 0] = 5
    with pytest.raises(
        ValueError, match=r"^x_t\['X'\]: expected ids in \[0, 5\) \(num_node_states=5\), got values in \[0, 5\]"
    ):
        net({**ok, "X": too_big}, t)
    with pytest.raises(
        ValueError, match=r"^x_t\['E'\]: expected ids in \[0, 4\) \(num_edge_states=4\), got values in \[-1, "
    ):
        net({**ok, "E": ok["E"] - 1}, t)
    with pytest.raises(TypeError, match=r"^x_t\['E'\]: expected int64 class ids, got dtype torch.int32"):
        net({**ok, "E": ok["E"].int()}, t)
    with pytest.raises(
        ValueError, match=r"^x_t\['E'\]: expected shape \(2, 3, 3\) to match x_t\['X'\], got \(2, 3, 4\)"
    ):
        net({**ok, "E": torch.zeros(2, 3, 4, dtype=torch.int64)}, t)
    with pytest.raises(ValueError, match=r"^x_t\['X'\]: expected shape \(B, N\) with N >= 1, got \(2, 3, 1\)"):
        net({**ok, "X": ok["X"][..., None]}, t)
    with pytest.raises(TypeError, match=r"^x_t\['mask'\]: expected a bool Tensor, got torch.int64"):
        net({**ok, "mask": ok["mask"].long()}, t)
    with pytest.raises(ValueError, match=r"^x_t\['mask'\]: expected shape \(2, 3\) to match x_t\['X'\], got \(2, 4\)"):
        net({**ok, "mask": torch.ones(2, 4, dtype=torch.bool)}, t)
    with pytest.raises(TypeError, match=r"^t: expected dtype torch.int64"):
        net(ok, t.float())
    with pytest.raises(ValueError, match=r"^t: expected shape \(2,\) to match the batch, got \(3,\)"):
        net(ok, torch.tensor([1, 2, 3]))


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"^heads: expected a divisor of hidden=18, got heads=4"):
        small_net(hidden=18)
    with pytest.raises(ValueError, match=r"^edge_hidden: expected a positive int, got 0"):
        small_net(edge_hidden=0)
    with pytest.raises(TypeError, match=r"^num_steps: expected an int, got float"):
        small_net(num_steps=10.0)
    with pytest.raises(ValueError, match=r"^eigen_features: expected an int >= 0 \(0 turns them off\), got -1"):
        small_net(eigen_features=-1)
    with pytest.raises(TypeError, match=r"^eigen_features: expected an int, got bool"):
        small_net(eigen_features=True)
    with pytest.raises(TypeError, match=r"^structural_features: expected a bool, got int"):
        small_net(structural_features=1)
