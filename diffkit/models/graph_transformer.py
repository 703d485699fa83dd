"""A DiGress-style graph transformer denoiser (Vignac et al. 2023, sec. 4 and appendix B).

Input x_t = {"X": (B, N) int64 node ids, "E": (B, N, N) int64 edge ids (0 = no edge), "mask": (B, N)
bool}; output {"X": (B, N, num_node_outputs), "E": (B, N, N, num_edge_outputs)} float logits, read by
the parametrization as x0_logits. Three streams are carried through every block: nodes X (B, N, Dx),
edges E (B, N, N, De) and one global vector y (B, Dy), which starts as a sinusoidal embedding of
t / T (plus the graph-level structural features, if any). A block does, for node i, pair (i, j),
channel c and head h (post-LayerNorm residuals, as in DiGress):

    y      <- LN(y + W_y y + W_px Pool(X) + W_pe Pool(E));     y <- LN(y + FFN(y))
    s_ijc   = q_ic k_jc / sqrt(Dx / heads)                       (q, k, v linear in X)
    s'_ijc  = s_ijc (1 + Emul_ijc) + Eadd_ijc                    (FiLM of the scores by the edges)
    a_ijh   = softmax over real j of  sum_{c in head h} s'_ijc
    X_i    <- LN(X_i + W_x FiLM_y(sum_j a_ijh v_jh));          X <- LN(X + FFN(X))
    E_ij   <- LN(E_ij + W_e FiLM_y(s'_ij));                    E <- LN(E + FFN(E))

where Pool is the mean, min, max and std over the real nodes (or real off-diagonal pairs) of each
graph, and FiLM_y(z) = z (1 + Ymul) + Yadd with Ymul, Yadd linear in y. The edge logits are
symmetrized at the end: E_out = (E + E^T) / 2.

Differences from DiGress's code, each deliberate:
- DiGress soft-maxes each channel of s' separately, so its heads are only a reshape; here a head's
  channels are summed into one score, as in standard multi-head attention, so ``heads`` matters.
- y is refreshed from X and E at the start of a block rather than alongside them, so every global
  update reaches the output (DiGress computes a final y that nothing reads).
- Pooled statistics use real elements only (DiGress averages in the padding zeros), and attention
  never looks at padded keys, so a graph's outputs do not depend on how far it is padded.
- The diagonal of the input E is ignored: pairs (i, i) get a "self" indicator instead of an edge id.
- The 5-cycle counts are exact (``cycle_counts``); DiGress's closed form for them is not.
- No n / max_n global feature: it would depend on the dataset's largest graph.

Masking: hidden states are reset to zero at padded nodes and pairs after every block, and the
returned logits are exactly zero at padded nodes, at pairs touching a padded node and on the
diagonal of E (the loss masks all of these). A missing "mask" key means every node is real.

Structural input features (DiGress appendix B), computed without gradient in float64 from the
noisy adjacency A_ij = [E_ij != 0 or E_ji != 0] over real off-diagonal pairs (so an absorbing mask
id counts as an edge):
- ``structural_features=True``: the number of 3-, 4- and 5-cycles through each node (node input) and
  the number of 3-, 4-, 5- and 6-cycles in the graph (global input), each as min(count / 10, 1).
- ``eigen_features=k``: the eigenvectors of the k smallest non-zero eigenvalues of the Laplacian of
  the real nodes (node input; zeros where the graph has fewer), those eigenvalues divided by the
  number of real nodes, and the number of connected components divided by it (global input).
  Eigenvectors have an arbitrary sign (and basis, for repeated eigenvalues); a denoiser only needs
  them as extra input, so no canonical sign is chosen.

Memory is O(B N^2 Dx) per block: every pair carries a score for every channel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from diffkit._checks import check_ids, check_positive_int, check_timesteps
from diffkit.models.conditioning import ConditionEmbedding, ConditionSpec
from diffkit.models.embeddings import SinusoidalEmbedding
from diffkit.models.extra_features import MolecularFeatures

__all__ = ["GraphTransformer", "cycle_counts", "laplacian_features", "masked_stats"]

#: Cycle counts enter the network as min(count / CYCLE_SCALE, 1), DiGress's choice: a few cycles are
#: resolved one by one, while a dense noisy graph (hundreds of cycles) saturates instead of producing
#: inputs orders of magnitude larger than the one-hot ids.
CYCLE_SCALE = 10.0
#: Laplacian eigenvalues below this count as zero (connected components). float64 eigh is accurate
#: to ~1e-13 here, and the smallest non-zero eigenvalue of a connected n-node graph is >= 4 / n^2.
ZERO_EIGENVALUE = 1e-8
#: Added to a variance before its square root, so a one-element set has a finite std gradient.
STD_EPS = 1e-6
#: Feed-forward width as a multiple of each stream's width (DiGress's defaults use 1x to 4x).
FFN_MULT = 2


# ---------------------------------------------------------------------------------------------- features


def cycle_counts(adj: Tensor) -> tuple[Tensor, Tensor]:
    """Number of simple k-cycles through each node (k = 3, 4, 5) and in each graph (k = 3..6).

    Closed walks of length k from i, (A^k)_ii, minus those that are not simple cycles; each cycle
    through i is walked in two directions (the approach of Vignac et al. 2023 app. B). With d = A 1
    the degrees and tri = diag(A^3):

        c3_i = tri_i / 2
        c4_i = ((A^4)_ii - d_i (d_i - 1) - (A d)_i) / 2
        c5_i = ((A^5)_ii - 2 d_i tri_i - 2 sum_j A_ij (A^2)_ij d_j - (A tri)_i + 5 tri_i) / 2

    The non-simple closed 5-walks are a triangle with one edge walked there and back: inserted at
    i (2 d_i per triangle walk) or at its other two nodes (d_b + d_c), less the 3 walks counted twice
    by neighbouring insertions; or, when i is off the triangle, hanging from a neighbour j of i
    ((A tri)_i, less the 2 tri_i where the triangle passes through i). DiGress's code drops the
    d_b + d_c term and counts that correction differently, so its node 5-cycle feature is not an
    exact count; this one is checked against enumeration in the tests.
        C_k  = sum_i c_k_i / k                                        for k = 3, 4, 5
        C_6  = (tr A^6 - 3 sum_i (A^3)_ii^2 + 9 sum_ij A_ij (A^2)_ij^2 - 6 sum_i d_i (A^4)_ii
                + 6 tr A^4 - 4 tr A^3 + 4 sum_i d_i^3 + 3 sum_ij (A^3)_ij - 12 sum_i d_i^2 + 4 tr A^2) / 12

    Args:
        adj: (B, N, N) float 0/1 adjacency, symmetric with a zero diagonal. Use float64: entries of
            A^6 exceed float32's exact integers beyond about 16 nodes.

    Returns:
        (B, N, 3) node counts for k = 3, 4, 5 and (B, 4) graph counts for k = 3, 4, 5, 6, in adj's dtype.
    """
    a2 = adj @ adj  # (B, N, N)
    a3 = a2 @ adj
    a4 = a3 @ adj
    a5 = a4 @ adj
    a6 = a5 @ adj
    d = adj.sum(-1)  # (B, N)
    diag3, diag4, diag5 = (m.diagonal(dim1=-2, dim2=-1) for m in (a3, a4, a5))  # each (B, N)
    c3 = diag3 / 2
    c4 = (diag4 - d * (d - 1) - (adj @ d[..., None])[..., 0]) / 2
    c5 = (
        diag5 - 2 * d * diag3 - 2 * ((adj * a2) @ d[..., None])[..., 0] - (adj @ diag3[..., None])[..., 0] + 5 * diag3
    ) / 2
    node = torch.stack([c3, c4, c5], dim=-1)  # (B, N, 3)
    c6 = (
        _trace(a6)
        - 3 * (diag3**2).sum(-1)
        + 9 * (adj * a2**2).sum((-2, -1))
        - 6 * (d * diag4).sum(-1)
        + 6 * _trace(a4)
        - 4 * _trace(a3)
        + 4 * (d**3).sum(-1)
        + 3 * a3.sum((-2, -1))
        - 12 * (d**2).sum(-1)
        + 4 * _trace(a2)
    ) / 12
    graph = torch.stack([c3.sum(-1) / 3, c4.sum(-1) / 4, c5.sum(-1) / 5, c6], dim=-1)  # (B, 4)
    return node, graph


def _trace(m: Tensor) -> Tensor:
    """Batched trace: (B, N, N) -> (B,)."""
    return m.diagonal(dim1=-2, dim2=-1).sum(-1)


def laplacian_features(adj: Tensor, node_mask: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvectors of the k smallest non-zero eigenvalues of the Laplacian L = D - A of the real nodes.

    Padded nodes get L_pp = N + 1, above every eigenvalue of the real block (at most n_real <= N), so
    eigh's ascending order lists the real spectrum first and its eigenvectors vanish on padding.
    The number of connected components is the number of zero eigenvalues of the real block.

    Args:
        adj: (B, N, N) float 0/1 adjacency, symmetric, zero on the diagonal and outside real pairs.
        node_mask: (B, N) bool, True at real nodes.
        k: number of eigenpairs to return (>= 1).

    Returns:
        vectors (B, N, k) unit eigenvectors (zero at padded nodes, and zero columns where the graph
        has fewer than k non-zero eigenvalues), values (B, k) those eigenvalues (zero likewise), and
        num_components (B,) int64.
    """
    B, N, _ = adj.shape
    lap = torch.diag_embed(adj.sum(-1)) - adj  # (B, N, N)
    lap = lap + torch.diag_embed((~node_mask).to(adj.dtype) * (N + 1))
    values, vectors = torch.linalg.eigh(lap)  # (B, N), (B, N, N) with eigenvectors as columns
    num_components = (values < ZERO_EIGENVALUE).sum(-1)  # (B,)
    index = num_components[:, None] + torch.arange(k, device=adj.device)  # (B, k)
    valid = index < node_mask.sum(-1, keepdim=True)  # (B, k)
    index = index.clamp(max=N - 1)
    picked_values = values.gather(1, index) * valid
    picked_vectors = vectors.gather(2, index[:, None, :].expand(B, N, k))  # (B, N, k)
    picked_vectors = picked_vectors * valid[:, None, :] * node_mask[..., None]
    return picked_vectors, picked_values, num_components


def masked_stats(x: Tensor, mask: Tensor) -> Tensor:
    """Mean, min, max and std (biased, sqrt(var + STD_EPS)) of x over the elements where mask holds.

    Args:
        x: (B, M, D) float.
        mask: (B, M) bool; a graph with no True element gets mean = min = max = 0, std = sqrt(STD_EPS).

    Returns:
        (B, 4 D) float: [mean, min, max, std].
    """
    m = mask[..., None]  # (B, M, 1)
    count = m.sum(1).clamp_min(1).to(x.dtype)  # (B, 1)
    mean = (x * m).sum(1) / count  # (B, D)
    var = (((x - mean[:, None]) * m) ** 2).sum(1) / count
    std = (var + STD_EPS).sqrt()
    some = mask.any(1, keepdim=True)  # (B, 1)
    low = x.masked_fill(~m, math.inf).amin(1).where(some, 0.0)  # (B, D)
    high = x.masked_fill(~m, -math.inf).amax(1).where(some, 0.0)
    return torch.cat([mean, low, high, std], dim=-1)  # (B, 4D)


# ---------------------------------------------------------------------------------------------- layers


def _mlp(d_in: int, d_hidden: int, d_out: int, act_out: bool = False) -> nn.Sequential:
    layers = [nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out)]
    return nn.Sequential(*layers, nn.ReLU()) if act_out else nn.Sequential(*layers)


class NodeEdgeAttention(nn.Module):
    """Attention whose scores are FiLM-ed by the edges and turned into new edges (module docstring)."""

    def __init__(self, hidden: int, edge_hidden: int, global_hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.edge_film = nn.Linear(edge_hidden, 2 * hidden)
        self.global_film_x = nn.Linear(global_hidden, 2 * hidden)
        self.global_film_e = nn.Linear(global_hidden, 2 * hidden)
        self.x_out = nn.Linear(hidden, hidden)
        self.e_out = nn.Linear(hidden, edge_hidden)

    def forward(self, X: Tensor, E: Tensor, y: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, Dx), (B, N, N, De), (B, Dy), (B, N) bool -> updates (B, N, Dx), (B, N, N, De)."""
        B, N, D = X.shape
        H = self.heads
        q, k, v = self.qkv(X).chunk(3, dim=-1)  # each (B, N, Dx)
        scores = q[:, :, None, :] * k[:, None, :, :] / math.sqrt(D // H)  # (B, N, N, Dx)
        e_mul, e_add = self.edge_film(E).chunk(2, dim=-1)  # each (B, N, N, Dx)
        scores = scores * (1 + e_mul) + e_add

        y_mul, y_add = self.global_film_e(y)[:, None, None, :].chunk(2, dim=-1)  # each (B, 1, 1, Dx)
        new_E = self.e_out(scores * (1 + y_mul) + y_add)  # (B, N, N, De)

        logits = scores.view(B, N, N, H, D // H).sum(-1).permute(0, 3, 1, 2)  # (B, H, N, N)
        logits = logits.masked_fill(~node_mask[:, None, None, :], torch.finfo(logits.dtype).min)
        v = v.view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, Dx/H)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, D)  # (B, N, Dx)
        y_mul, y_add = self.global_film_x(y)[:, None, :].chunk(2, dim=-1)  # each (B, 1, Dx)
        new_X = self.x_out(out * (1 + y_mul) + y_add)  # (B, N, Dx)
        return new_X, new_E


class GraphTransformerBlock(nn.Module):
    """Global refresh, node-edge attention and feed-forward layers for all three streams."""

    def __init__(self, hidden: int, edge_hidden: int, global_hidden: int, heads: int) -> None:
        super().__init__()
        self.global_self = nn.Linear(global_hidden, global_hidden)
        self.pool_x = nn.Linear(4 * hidden, global_hidden)
        self.pool_e = nn.Linear(4 * edge_hidden, global_hidden)
        self.attn = NodeEdgeAttention(hidden, edge_hidden, global_hidden, heads)
        self.norm_x1, self.norm_x2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.norm_e1, self.norm_e2 = nn.LayerNorm(edge_hidden), nn.LayerNorm(edge_hidden)
        self.norm_y1, self.norm_y2 = nn.LayerNorm(global_hidden), nn.LayerNorm(global_hidden)
        self.ffn_x = _mlp(hidden, FFN_MULT * hidden, hidden)
        self.ffn_e = _mlp(edge_hidden, FFN_MULT * edge_hidden, edge_hidden)
        self.ffn_y = _mlp(global_hidden, FFN_MULT * global_hidden, global_hidden)

    def forward(
        self, X: Tensor, E: Tensor, y: Tensor, node_mask: Tensor, square: Tensor, pairs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Apply the block; ``square`` (B, N, N) marks pairs of real nodes, ``pairs`` those off the diagonal."""
        pooled_x = masked_stats(X, node_mask)  # (B, 4 Dx)
        pooled_e = masked_stats(E.flatten(1, 2), pairs.flatten(1))  # (B, 4 De)
        y = self.norm_y1(y + self.global_self(y) + self.pool_x(pooled_x) + self.pool_e(pooled_e))
        y = self.norm_y2(y + self.ffn_y(y))
        new_X, new_E = self.attn(X, E, y, node_mask)
        X = self.norm_x1(X + new_X)
        X = self.norm_x2(X + self.ffn_x(X)) * node_mask[..., None]
        E = self.norm_e1(E + new_E)
        E = self.norm_e2(E + self.ffn_e(E)) * square[..., None]
        return X, E, y


# ---------------------------------------------------------------------------------------------- model


class GraphTransformer(nn.Module):
    """DiGress-style graph transformer over node ids, edge ids and a node mask (module docstring).

    Args:
        num_node_states: number of node input ids (K_X, or K_X + 1 with an absorbing mask id).
        num_edge_states: number of edge input ids (K_E, or K_E + 1); id 0 means "no edge".
        num_node_outputs: node logits per node, usually K_X.
        num_edge_outputs: edge logits per pair, usually K_E.
        num_steps: T, the number of diffusion steps; time enters as t / T.
        hidden: node width Dx; ``heads`` must divide it.
        edge_hidden: edge width De.
        global_hidden: global width Dy (also the width of the sinusoidal time features).
        depth: number of blocks.
        heads: attention heads.
        structural_features: add cycle counts (module docstring) to the node and global inputs.
        eigen_features: k >= 0; add k Laplacian eigenvectors per node, their eigenvalues and the
            number of connected components (0 turns them off).
        num_classes: K for a class-conditional model (``cond`` int64 ids (B,)); None: no classes.
        cond_dim: C for a feature-conditional model (``cond`` float (B, C)); None: no features.
            The condition's embedding (with a learned null condition) is added to the time
            features of the global branch.
        atom_valences: for molecules, the normal valency of each node class; with ``atom_weights``
            it adds DiGress's valency and charge (node) and weight (global) features
            (``diffkit.models.extra_features``). None (default) turns them off.
        atom_weights: the atomic weight of each node class (with ``atom_valences``).

    Example:
        >>> import torch
        >>> net = GraphTransformer(4, 3, 4, 3, num_steps=100, hidden=16, edge_hidden=8, global_hidden=16, depth=1)
        >>> E = torch.tensor([[[0, 1, 0], [1, 0, 2], [0, 2, 0]]])
        >>> x_t = {"X": torch.tensor([[0, 3, 1]]), "E": E, "mask": torch.tensor([[True, True, True]])}
        >>> {name: tuple(v.shape) for name, v in net(x_t, torch.tensor([7])).items()}
        {'X': (1, 3, 4), 'E': (1, 3, 3, 3)}
    """

    def __init__(
        self,
        num_node_states: int,
        num_edge_states: int,
        num_node_outputs: int,
        num_edge_outputs: int,
        num_steps: int,
        hidden: int = 64,
        edge_hidden: int = 32,
        global_hidden: int = 64,
        depth: int = 4,
        heads: int = 4,
        structural_features: bool = False,
        eigen_features: int = 0,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        atom_valences: list[float] | None = None,
        atom_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        sizes = dict(
            num_node_states=num_node_states, num_edge_states=num_edge_states, num_node_outputs=num_node_outputs,
            num_edge_outputs=num_edge_outputs, num_steps=num_steps, hidden=hidden, edge_hidden=edge_hidden,
            global_hidden=global_hidden, depth=depth, heads=heads,
        )  # fmt: skip
        for name, value in sizes.items():
            check_positive_int(name, value)
        if hidden % heads:
            raise ValueError(f"heads: expected a divisor of hidden={hidden}, got heads={heads}")
        if not isinstance(structural_features, bool):
            raise TypeError(f"structural_features: expected a bool, got {type(structural_features).__name__}")
        if not isinstance(eigen_features, int) or isinstance(eigen_features, bool):
            raise TypeError(f"eigen_features: expected an int, got {type(eigen_features).__name__}")
        if eigen_features < 0:
            raise ValueError(f"eigen_features: expected an int >= 0 (0 turns them off), got {eigen_features}")
        self.num_node_states = num_node_states
        self.num_edge_states = num_edge_states
        self.num_node_outputs = num_node_outputs
        self.num_edge_outputs = num_edge_outputs
        self.num_steps = num_steps
        self.structural_features = structural_features
        self.eigen_features = eigen_features
        if (atom_valences is None) != (atom_weights is None):
            raise ValueError(
                "atom_valences, atom_weights: expected both given or both None, got "
                f"{'atom_valences' if atom_weights is None else 'atom_weights'} alone"
            )
        self.molecular = None if atom_valences is None else MolecularFeatures(atom_valences, atom_weights)
        node_extra = 3 * structural_features + eigen_features + (2 if self.molecular is not None else 0)
        global_extra = (
            4 * structural_features + (1 + eigen_features if eigen_features else 0) + (self.molecular is not None)
        )
        self.time_embed = SinusoidalEmbedding(num_steps, global_hidden)
        conditional = num_classes is not None or cond_dim is not None
        self.cond_embed = ConditionEmbedding(num_classes, cond_dim, dim=global_hidden) if conditional else None
        self.node_in = _mlp(num_node_states + node_extra, hidden, hidden, act_out=True)
        self.edge_in = _mlp(num_edge_states + 1, edge_hidden, edge_hidden, act_out=True)  # + 1: the self indicator
        self.global_in = _mlp(global_hidden + global_extra, global_hidden, global_hidden, act_out=True)
        self.blocks = nn.ModuleList(
            GraphTransformerBlock(hidden, edge_hidden, global_hidden, heads) for _ in range(depth)
        )
        self.node_out = _mlp(hidden, hidden, num_node_outputs)
        self.edge_out = _mlp(edge_hidden, edge_hidden, num_edge_outputs)

    @property
    def cond_spec(self) -> ConditionSpec | None:
        """What ``cond`` this model takes (None: unconditional)."""
        return None if self.cond_embed is None else self.cond_embed.spec

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, cond: Tensor | None = None) -> dict[str, Tensor]:
        """Predict x0 logits for every node and pair (``cond``: None, int64 ids (B,) or float
        features (B, C), for a conditional model).

        Args:
            x_t: dict with "X" (B, N) int64 ids in [0, num_node_states), "E" (B, N, N) int64 ids in
                [0, num_edge_states) and optionally "mask" (B, N) bool (default: all True). Other
                keys are ignored; E's diagonal is ignored.
            t: (B,) int64 steps in 0..T.

        Returns:
            {"X": (B, N, num_node_outputs), "E": (B, N, N, num_edge_outputs)} float logits; E is
            symmetric in its node axes, and both are zero at padding and E on its diagonal.

        Raises:
            TypeError: if ``x_t`` is not a mapping, a field has the wrong dtype, or ``t`` is not int64.
            ValueError: if "X" or "E" is missing, a shape is wrong, an id is out of range, or ``t`` is not (B,).
        """
        X_ids, E_ids, node_mask = self._check_inputs(x_t, t)
        B, N = X_ids.shape
        dtype = self.node_in[0].weight.dtype
        square = node_mask[:, :, None] & node_mask[:, None, :]  # (B, N, N)
        eye = torch.eye(N, dtype=torch.bool, device=X_ids.device)
        pairs = square & ~eye
        node_extra, global_extra = self._extra_features(E_ids, node_mask, pairs)
        if self.molecular is not None:
            mol_node, mol_global = self.molecular(X_ids, E_ids, node_mask)
            node_extra, global_extra = torch.cat([node_extra, mol_node], -1), torch.cat([global_extra, mol_global], -1)

        x_in = nn.functional.one_hot(X_ids, self.num_node_states).to(dtype)  # (B, N, K_X)
        e_in = nn.functional.one_hot(E_ids, self.num_edge_states).to(dtype)  # (B, N, N, K_E)
        e_in = e_in.masked_fill(eye[..., None], 0.0)
        e_in = torch.cat([e_in, eye.to(dtype)[None, :, :, None].expand(B, N, N, 1)], dim=-1)  # (B, N, N, K_E + 1)
        X = self.node_in(torch.cat([x_in, node_extra.to(dtype)], dim=-1)) * node_mask[..., None]  # (B, N, Dx)
        E = self.edge_in(e_in) * square[..., None]  # (B, N, N, De)
        time = self.time_embed(t).to(dtype)  # (B, Dy)
        if self.cond_embed is not None:
            time = time + self.cond_embed(cond, B).to(dtype)
        elif cond is not None:
            raise ValueError("cond: this GraphTransformer is unconditional; build it with num_classes=K or cond_dim=C")
        y = self.global_in(torch.cat([time, global_extra.to(dtype)], dim=-1))  # (B, Dy)
        for block in self.blocks:
            X, E, y = block(X, E, y, node_mask, square, pairs)

        X_out = self.node_out(X) * node_mask[..., None]  # (B, N, K_X out)
        E_out = self.edge_out(E)  # (B, N, N, K_E out)
        E_out = (E_out + E_out.transpose(1, 2)) / 2 * pairs[..., None]
        return {"X": X_out, "E": E_out}

    @torch.no_grad()
    def _extra_features(self, E_ids: Tensor, node_mask: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """Structural node features (B, N, F_x) and global features (B, F_y) in float64 (module docstring)."""
        B, N = node_mask.shape
        node, graph = [E_ids.new_zeros(B, N, 0, dtype=torch.float64)], [E_ids.new_zeros(B, 0, dtype=torch.float64)]
        if not (self.structural_features or self.eigen_features):
            return node[0], graph[0]
        adj = (E_ids != 0) & pairs
        adj = (adj | adj.transpose(1, 2)).to(torch.float64)  # (B, N, N)
        if self.structural_features:
            node_cycles, graph_cycles = cycle_counts(adj)
            node.append((node_cycles / CYCLE_SCALE).clamp(max=1.0))
            graph.append((graph_cycles / CYCLE_SCALE).clamp(max=1.0))
        if self.eigen_features:
            vectors, values, num_components = laplacian_features(adj, node_mask, self.eigen_features)
            n_real = node_mask.sum(-1, keepdim=True).clamp_min(1).to(torch.float64)  # (B, 1)
            node.append(vectors)
            graph += [num_components[:, None] / n_real, values / n_real]
        return torch.cat(node, dim=-1), torch.cat(graph, dim=-1)

    def _check_inputs(self, x_t: Mapping[str, Tensor], t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Check the fields and t; return X, E and the node mask (all True when absent)."""
        if not isinstance(x_t, Mapping):
            raise TypeError(f"x_t: expected a dict with keys 'X', 'E' (and 'mask'), got {type(x_t).__name__}")
        missing = [key for key in ("X", "E") if key not in x_t]
        if missing:
            raise ValueError(f"x_t: missing field(s) {missing}; expected keys 'X', 'E' (and 'mask'), got {list(x_t)}")
        X, E = x_t["X"], x_t["E"]
        check_ids("x_t['X']", X, self.num_node_states, bound="num_node_states")
        check_ids("x_t['E']", E, self.num_edge_states, bound="num_edge_states")
        if X.ndim != 2 or X.shape[1] < 1:
            raise ValueError(f"x_t['X']: expected shape (B, N) with N >= 1, got {tuple(X.shape)}")
        B, N = X.shape
        if E.shape != (B, N, N):
            raise ValueError(f"x_t['E']: expected shape ({B}, {N}, {N}) to match x_t['X'], got {tuple(E.shape)}")
        mask = x_t.get("mask")
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=X.device)
        elif not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            found = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"x_t['mask']: expected a bool Tensor, got {found}")
        elif mask.shape != (B, N):
            raise ValueError(f"x_t['mask']: expected shape ({B}, {N}) to match x_t['X'], got {tuple(mask.shape)}")
        check_timesteps(t, B)
        return X, E, mask
