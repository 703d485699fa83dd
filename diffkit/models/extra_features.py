"""DiGress's molecular extra features (Vignac et al. 2023, appendix B.2), computed from noisy labelled graphs.

Beside the cycle and spectral features of ``diffkit.models.graph_transformer``, DiGress feeds a
molecule denoiser three chemistry-aware inputs, all computed from the noisy x_t (no gradient):

    valency_i = sum_j order(E_ij)                        (node; order = 0, 1, 2, 3 for none / single / double / triple)
    charge_i  = normal_valency(X_i) - valency_i          (node; > 0: room for more bonds, < 0: over-bonded)
    weight    = sum_i atomic_weight(X_i) / WEIGHT_SCALE  (global; the molecule's heavy-atom weight)

(DiGress's ``ChargeFeature``, ``ValencyFeature`` and ``WeightFeature`` in
``src/diffusion/extra_features_molecular.py``.) Edge class k > 3 (an absorbing "mask" id) counts as
order 0, and so does a node class outside the given tables (a mask id): its normal valency and
weight are 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["BOND_ORDERS", "WEIGHT_SCALE", "MolecularFeatures", "molecular_features"]

#: Bond order of edge classes 0..3 (none, single, double, triple), as ``diffkit.molecules.BOND_TYPES``.
BOND_ORDERS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)
#: DiGress divides the molecular weight by 150 (its ``WeightFeature``).
WEIGHT_SCALE = 150.0


def molecular_features(
    X_ids: Tensor, E_ids: Tensor, node_mask: Tensor, valences: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor]:
    """Valency and charge per node, molecular weight per graph (module docstring).

    Args:
        X_ids: (B, N) int64 node classes (ids >= len(valences) count as unknown: valency 0, weight 0).
        E_ids: (B, N, N) int64 edge classes, symmetric (only real off-diagonal pairs are read).
        node_mask: (B, N) bool.
        valences: (K,) float normal valency of each node class.
        weights: (K,) float atomic weight of each node class.

    Returns:
        node (B, N, 2) [valency, charge] and graph (B, 1) [weight / WEIGHT_SCALE], in valences' dtype,
        zero at padded nodes.
    """
    dtype = valences.dtype
    n = node_mask.shape[1]
    orders = torch.tensor(BOND_ORDERS, dtype=dtype, device=E_ids.device)
    known_e = E_ids < orders.numel()
    pairs = node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=E_ids.device)
    bond = orders[E_ids.clamp(max=orders.numel() - 1)] * (known_e & pairs)  # (B, N, N)
    valency = bond.sum(-1)  # (B, N)
    known_x = (X_ids < valences.numel()) & node_mask
    index = X_ids.clamp(max=valences.numel() - 1)
    normal = valences[index] * known_x
    charge = (normal - valency) * node_mask
    weight = (weights[index] * known_x).sum(-1, keepdim=True) / WEIGHT_SCALE  # (B, 1)
    return torch.stack([valency, charge], dim=-1), weight


class MolecularFeatures(nn.Module):
    """:func:`molecular_features` with the per-class tables held as buffers (they follow ``.to(device)``).

    Args:
        valences: normal valency of each atom class (e.g. C 4, N 3, O 2).
        weights: atomic weight of each atom class; same length as ``valences``.

    Raises:
        ValueError: if the tables are empty or differ in length.
    """

    num_node_features = 2
    num_global_features = 1

    def __init__(self, valences: Sequence[float], weights: Sequence[float]) -> None:
        super().__init__()
        if len(valences) == 0 or len(valences) != len(weights):
            raise ValueError(
                f"atom_valences, atom_weights: expected one non-zero length, got {len(valences)} and {len(weights)}"
            )
        self.register_buffer(
            "valences", torch.tensor([float(v) for v in valences], dtype=torch.float64), persistent=False
        )
        self.register_buffer(
            "weights", torch.tensor([float(w) for w in weights], dtype=torch.float64), persistent=False
        )

    def forward(self, X_ids: Tensor, E_ids: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N), (B, N, N), (B, N) -> node (B, N, 2), graph (B, 1), float64."""
        return molecular_features(X_ids, E_ids, node_mask, self.valences, self.weights)
