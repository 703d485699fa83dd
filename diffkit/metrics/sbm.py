"""Stochastic block model validity of the SPECTRE / DiGress protocol: a block-model fit and its test.

DiGress fits blocks with graph-tool's minimize_blockmodel_dl (not pip-installable); here the
description length of a Bernoulli SBM is minimized directly, starting from Louvain communities
(:func:`infer_blocks`), and a graph is a valid SBM sample if its fitted block densities pass a
Wald test against the generating probabilities (:func:`sbm_p_value`, :func:`is_sbm_graph`).
Moved out of :mod:`diffkit.metrics.graphs`, which re-exports these names.
"""

from __future__ import annotations

from typing import Literal

import networkx as nx
import numpy as np
from scipy.special import betaln, gammaln
from scipy.stats import chi2

__all__ = ["infer_blocks", "sbm_p_value", "is_sbm_graph"]


# SBM blocks. DiGress fits them with graph-tool's minimize_blockmodel_dl (not pip-installable);
# we minimize the description length of a Bernoulli SBM ourselves, starting from Louvain.


def _block_description_length(M: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """-log P(A, b) of a Bernoulli SBM with uniform priors, batched: (..., B, B), (..., B) -> (...).

    M holds edge counts between blocks with twice the intra-block count on the diagonal (M = Z^T A Z
    for the one-hot block matrix Z); empty blocks contribute nothing. With e_rs edges out of
    N_rs pairs (N_rr = n_r (n_r - 1) / 2) and B' non-empty blocks:

        -log P(A | b) = -sum_{r <= s} log Beta(e_rs + 1, N_rs - e_rs + 1)     (p_rs ~ U(0, 1))
        -log P(b)     = log n + log C(n - 1, B' - 1) + log(n! / prod_r n_r!)  (B', sizes, labels)
    """
    B = sizes.shape[-1]
    diag = np.arange(B)
    edges = M.copy()
    edges[..., diag, diag] = M[..., diag, diag] / 2
    pairs = sizes[..., :, None] * sizes[..., None, :]  # (..., B, B)
    pairs[..., diag, diag] = sizes * (sizes - 1) / 2
    rows, cols = np.triu_indices(B)
    e, total = edges[..., rows, cols], pairs[..., rows, cols]  # (..., B (B + 1) / 2)
    log_likelihood = betaln(e + 1, total - e + 1).sum(-1)
    used = (sizes > 0).sum(-1)
    log_prior = (
        -np.log(n) - (gammaln(n) - gammaln(used) - gammaln(n - used + 1)) + gammaln(sizes + 1).sum(-1) - gammaln(n + 1)
    )
    return -(log_likelihood + log_prior)


def _refine_blocks(A: np.ndarray, labels: np.ndarray, max_size: float, sweeps: int = 10) -> tuple[np.ndarray, float]:
    """Greedy descent of the description length from ``labels``: merge block pairs while it
    helps, then move single nodes between existing blocks for up to ``sweeps`` sweeps. No block
    grows past ``max_size`` by a merge or a move. Returns (labels (n,), description length)."""
    n = labels.size
    labels = np.unique(labels, return_inverse=True)[1]
    B = int(labels.max()) + 1
    eye = np.eye(B)
    onehot = eye[labels]  # (n, B)
    K = A @ onehot  # (n, B) neighbours of each node in each block
    M = onehot.T @ K  # (B, B)
    sizes = onehot.sum(0)  # (B,)
    best = float(_block_description_length(M, sizes, n))
    while (sizes > 0).sum() > 1:
        live = np.flatnonzero(sizes > 0)
        candidates = [(r, s) for i, r in enumerate(live) for s in live[i + 1 :] if sizes[r] + sizes[s] <= max_size]
        if not candidates:
            break
        Ms, Ss = np.repeat(M[None], len(candidates), 0), np.repeat(sizes[None], len(candidates), 0)  # (P, B, B), (P, B)
        for j, (r, s) in enumerate(candidates):
            Ms[j, r] += Ms[j, s]
            Ms[j, :, r] += Ms[j, :, s]
            Ms[j, s] = Ms[j, :, s] = 0
            Ss[j, r] += Ss[j, s]
            Ss[j, s] = 0
        lengths = _block_description_length(Ms, Ss, n)  # (P,)
        j = int(np.argmin(lengths))
        if lengths[j] >= best - 1e-9:
            break
        r, s = candidates[j]
        best, M, sizes = float(lengths[j]), Ms[j], Ss[j]
        labels[labels == s] = r
        K[:, r] += K[:, s]
        K[:, s] = 0
    for _ in range(sweeps):
        moved = False
        for v in range(n):
            r, k = labels[v], K[v]
            removed = M - eye[r][:, None] * k[None, :] - k[:, None] * eye[r][None, :]  # (B, B)
            Ms = (
                removed[None] + eye[:, :, None] * k[None, None, :] + k[None, :, None] * eye[:, None, :]
            )  # (B, B, B): v into s
            Ss = sizes[None] - eye[r][None] + eye  # (B, B)
            lengths = _block_description_length(Ms, Ss, n)  # (B,)
            lengths[(sizes == 0) | (sizes >= max_size)] = np.inf
            lengths[r] = np.inf
            s = int(np.argmin(lengths))
            if lengths[s] < best - 1e-9:
                best, M, sizes = float(lengths[s]), Ms[s], Ss[s]
                labels[v] = s
                neighbours = np.flatnonzero(A[v])
                K[neighbours, r] -= 1
                K[neighbours, s] += 1
                moved = True
        if not moved:
            break
    return np.unique(labels, return_inverse=True)[1], best


def infer_blocks(graph: nx.Graph, max_block_size: int | None = None, seed: int = 0) -> np.ndarray:
    """SBM blocks of a graph by minimum description length, our stand-in for graph-tool.

    Starting from Louvain communities at resolutions 0.5 and 1 (``nx.community.louvain_communities``
    with ``seed``), each start is refined by greedy merges and single-node moves that lower the
    description length of a Bernoulli SBM with uniform priors (see ``_block_description_length``),
    and the shorter result is kept. Like graph-tool's ``minimize_blockmodel_dl`` (which DiGress
    uses, with 1000 merge-split MCMC sweeps) it picks the number of blocks itself and needs no
    edge probabilities; unlike it, the model is not degree-corrected and the search is greedy.
    On the SPECTRE SBM distribution it recovers the planted blocks exactly for 98% of graphs
    (measured on 200). ``max_block_size`` restricts the search to blocks of at most that size.

    Args:
        graph: an undirected graph with at least one node.
        max_block_size: the largest block the search may build (None: unrestricted).
        seed: Louvain's seed.

    Returns:
        (n,) int64 block ids 0..B-1 for the nodes in ``graph.nodes()`` order.
    """
    nodes = list(graph.nodes())
    A = nx.to_numpy_array(graph, nodelist=nodes, dtype=np.float64, weight=None)
    np.fill_diagonal(A, 0.0)
    limit = np.inf if max_block_size is None else max_block_size
    index = {v: i for i, v in enumerate(nodes)}
    best: tuple[np.ndarray, float] | None = None
    for resolution in (0.5, 1.0):
        start = np.zeros(len(nodes), dtype=np.int64)
        for r, community in enumerate(nx.community.louvain_communities(graph, resolution=resolution, seed=seed)):
            start[[index[v] for v in community]] = r
        labels, length = _refine_blocks(A, start, limit)
        if best is None or length < best[1]:
            best = (labels, length)
    return best[0].astype(np.int64)


def sbm_p_value(
    graph: nx.Graph,
    labels: np.ndarray,
    p_intra: float = 0.3,
    p_inter: float = 0.005,
    variance: Literal["estimate", "null"] = "estimate",
) -> float:
    """Mean Wald p-value of a block assignment against SBM edge probabilities (DiGress ``is_sbm_graph``).

    With n_r the size of block r and m_rs the edge count between blocks r and s:

        p_hat_rr = m_rr / (n_r (n_r - 1) / 2 + 1e-6),   p_hat_rs = m_rs / (n_r n_s + 1e-6)
        W_rs = (p_hat_rs - p_rs)^2 / V_rs,   p_rs = p_intra if r = s else p_inter
        p-value_rs = 1 - F_chi2(1)(W_rs);   result = mean over all B x B entries (r, s)

    ``variance="estimate"`` is DiGress: V = p_hat (1 - p_hat) + 1e-6, so a block pair without an
    edge gives W = p_inter^2 / 1e-6 (25 for 0.005) and p-value ~0. ``"null"`` (ours) takes
    V = p (1 - p), finite at p_hat = 0. Neither has a sample-size factor: W measures how close
    p_hat is to p, it is not a calibrated test.

    Args:
        graph: the graph.
        labels: (n,) int block ids 0..B-1 in ``graph.nodes()`` order.
        p_intra, p_inter: the SBM's edge probabilities.
        variance: "estimate" or "null".

    Returns:
        The mean p-value in [0, 1].
    """
    A = nx.to_numpy_array(graph, nodelist=list(graph.nodes()), dtype=np.float64, weight=None)
    np.fill_diagonal(A, 0.0)
    onehot = np.eye(int(labels.max()) + 1)[labels]  # (n, B)
    edges = onehot.T @ A @ onehot  # (B, B), twice the intra-block edges on the diagonal
    np.fill_diagonal(edges, np.diag(edges) / 2)
    sizes = onehot.sum(0)  # (B,)
    pairs = np.outer(sizes, sizes)
    np.fill_diagonal(pairs, sizes * (sizes - 1) / 2)
    p_hat = edges / (pairs + 1e-6)
    p_null = np.full_like(p_hat, p_inter)
    np.fill_diagonal(p_null, p_intra)
    if variance == "estimate":
        var = p_hat * (1 - p_hat) + 1e-6
    elif variance == "null":
        var = p_null * (1 - p_null)
    else:
        raise ValueError(f"variance: expected 'estimate' or 'null', got {variance!r}")
    wald = (p_hat - p_null) ** 2 / var
    return float((1 - chi2.cdf(wald, 1)).mean())


def is_sbm_graph(
    graph: nx.Graph,
    p_intra: float = 0.3,
    p_inter: float = 0.005,
    num_blocks: tuple[int, int] = (2, 5),
    block_sizes: tuple[int, int] = (20, 40),
    variance: Literal["estimate", "null"] = "estimate",
    restrict_block_size: bool = False,
    seed: int = 0,
) -> bool:
    """Valid SBM sample: DiGress's strict ``is_sbm_graph`` with our block inference.

    Blocks from :func:`infer_blocks`; valid iff their number is in ``num_blocks``, every size is
    in ``block_sizes`` (both inclusive) and :func:`sbm_p_value` > 0.9. The defaults are DiGress's
    test for the SPECTRE SBM; on 200 true SPECTRE SBM graphs 88.5% pass (the rest mostly have a
    block pair without an edge, which DiGress's statistic rejects whatever the blocks) and no
    Erdos-Renyi graph of the same size and density does.

    For the CPU variant (VALIDITY["sbm_cpu"]: 2-3 blocks of 8-16 nodes, ``variance="null"``,
    ``restrict_block_size=True``, all ours): at that size the description length often prefers
    merging two true blocks, and half the graphs have a block pair without an edge, so DiGress's
    rule passes only ~28% of true samples; restricting the search to blocks of at most 16 nodes
    and the null variance pass ~79% (measured on 200), and still no Erdos-Renyi graph.

    Args:
        graph: the graph to test; one without an edge is not valid.
        p_intra, p_inter: the SBM's edge probabilities.
        num_blocks: inclusive (min, max) number of blocks.
        block_sizes: inclusive (min, max) block size.
        variance: the Wald variance, see :func:`sbm_p_value`.
        restrict_block_size: search only partitions whose blocks have at most ``block_sizes[1]`` nodes.
        seed: Louvain's seed.
    """
    if graph.number_of_nodes() < 2 or graph.number_of_edges() == 0:
        return False
    labels = infer_blocks(graph, block_sizes[1] if restrict_block_size else None, seed)
    sizes = np.bincount(labels)
    if not num_blocks[0] <= sizes.size <= num_blocks[1]:
        return False
    if sizes.min() < block_sizes[0] or sizes.max() > block_sizes[1]:
        return False
    return sbm_p_value(graph, labels, p_intra, p_inter, variance) > 0.9
