"""The node-count term of a graph's negative log-likelihood, as DiGress reports it.

A graph model samples its size first, n ~ p(N) (the training graphs' node counts), then the graph
given n; so (Vignac et al. 2023, sec. 3 and their ``compute_val_loss``)

    -log p(G) <= -log p(N = n) + L_T + sum_{t >= 2} L_{t-1} + L_0        (nats per graph)

where the last three terms are the diffusion bound of ``diffkit.likelihood.nll_bound`` over the
graph's real nodes and pairs. Without the first term the bound is not comparable with DiGress's
NLL: it would score graphs as if their size were given.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["node_count_nll", "graph_nll"]


def node_count_nll(mask: Tensor, counts: Tensor) -> Tensor:
    """-log p(N = n_b) per graph, p the normalized node-count histogram.

    Args:
        mask: (B, N) bool node mask; n_b = mask[b].sum().
        counts: (M + 1,) non-negative counts (or probabilities) of n = 0..M, M >= N not required:
            a size beyond the histogram has probability 0.

    Returns:
        (B,) float64 nats; +inf where p(n_b) = 0.

    Raises:
        ValueError: if ``counts`` is not 1-D with a positive sum, or ``mask`` is not (B, N) bool.
    """
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"mask: expected shape (B, N) and dtype bool, got {tuple(mask.shape)} {mask.dtype}")
    counts = torch.as_tensor(counts, dtype=torch.float64, device=mask.device)
    if counts.ndim != 1 or float(counts.sum()) <= 0 or bool((counts < 0).any()):
        raise ValueError(
            f"counts: expected a 1-D, non-negative tensor with a positive sum, got shape {tuple(counts.shape)}"
        )
    probs = counts / counts.sum()
    sizes = mask.sum(1)  # (B,)
    padded = torch.cat([probs, probs.new_zeros(max(0, int(sizes.max()) + 1 - probs.numel()))])
    return -padded[sizes].log()


def graph_nll(diffusion_bound: Tensor, mask: Tensor, counts: Tensor) -> Tensor:
    """DiGress's per-graph NLL bound: -log p(N = n_b) + the diffusion bound (module docstring).

    Args:
        diffusion_bound: (B,) nats, ``nll_bound(...).total``.
        mask: (B, N) bool node mask of the same graphs.
        counts: the training node-count histogram (see :func:`node_count_nll`).

    Returns:
        (B,) float64 nats per graph.
    """
    return diffusion_bound.double() + node_count_nll(mask, counts)
