"""``GraphSampleMetrics``: graph MMDs and V.U.N. of sampled graphs against reference graphs drawn
alongside them (two samples), for validation during training.

``GraphMetrics`` (``diffkit.metrics.graphs``) scores against a fixed reference split (the final,
published-protocol numbers of ``diffkit evaluate-graphs``). This metric takes the reference graphs
in ``update`` instead, like the other two-sample metrics, so ``DiffusionModule`` computes its
floor the same way for every kind of data: the same metric between two independent draws of real
graphs (MMD floor; V.U.N. of real graphs, i.e. what the validity rule lets through).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import networkx as nx
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from diffkit.graphs import to_dense, to_networkx
from diffkit.metrics.graphs import VALIDITY, GraphMMD, graph_mmds, vun

__all__ = ["GraphSampleMetrics"]


class GraphSampleMetrics(Metric):
    """Degree / clustering / orbit / spectral MMD^2 and V.U.N. between sampled and reference graphs.

    ``update(samples, reference)`` takes dense batches {"X", "E", "mask"} (only E's upper triangle
    and the mask are read) and stores both padded to ``max_nodes`` in list states reduced with
    ``dist_reduce_fx="cat"``, so under DDP ``compute()`` sees every rank's graphs. ``compute()``
    returns float64 scalars:

        "mmd/<d>"   ``graph_mmds(samples, reference)`` for d in degree, clustering, orbit, spectre
                    (Gaussian-TV kernel, DiGress's sigmas; NaN when every sample is empty)
        "valid", "unique", "novel", "vun"   ``vun(samples, train_graphs, validity)``

    Args:
        train_graphs: the training graphs (novelty).
        max_nodes: N, the padded size of stored graphs; larger graphs raise.
        validity: a key of ``VALIDITY`` ("planar", "tree", "sbm", "sbm_cpu"), a graph -> bool
            callable, or None (then "valid" is 1).
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    #: update() takes (samples, reference), both drawn: the floor compares two real draws.
    two_sample: ClassVar[bool] = True

    def __init__(
        self,
        train_graphs: Sequence[nx.Graph],
        max_nodes: int,
        validity: Literal["planar", "tree", "sbm", "sbm_cpu"] | Callable[[nx.Graph], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(validity, str) and validity not in VALIDITY:
            raise ValueError(f"validity: expected one of {sorted(VALIDITY)}, a callable or None, got {validity!r}")
        if not train_graphs:
            raise ValueError("train_graphs: expected at least one graph, got none")
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise ValueError(f"max_nodes: expected an int >= 1, got {max_nodes!r}")
        super().__init__(**kwargs)
        self.train_graphs = list(train_graphs)
        self.max_nodes = max_nodes
        self.validity = VALIDITY[validity] if isinstance(validity, str) else validity
        for side in ("samples", "reference"):
            self.add_state(f"{side}_adjacency", default=[], dist_reduce_fx="cat")
            self.add_state(f"{side}_mask", default=[], dist_reduce_fx="cat")

    def _store(self, side: str, batch: Mapping[str, Tensor]) -> None:
        dense = to_dense(to_networkx(batch), max_nodes=self.max_nodes)
        getattr(self, f"{side}_adjacency").append((dense["E"] != 0).to(self.device, torch.uint8))
        getattr(self, f"{side}_mask").append(dense["mask"].to(self.device, torch.uint8))

    def update(self, samples: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> None:
        """Add a batch of sampled graphs and a batch of reference graphs (counts may differ).

        Args:
            samples: {"X": (B, N') int, "E": (B, N', N') int, "mask": (B, N') bool}, N' <= max_nodes.
            reference: the same for B' real graphs.
        """
        for name, batch in (("samples", samples), ("reference", reference)):
            if not isinstance(batch, Mapping):
                raise TypeError(
                    f"{name}: expected a dense graph batch (dict with 'X', 'E', 'mask'), got {type(batch).__name__}"
                )
        self._store("samples", samples)
        self._store("reference", reference)

    def _graphs(self, side: str) -> list[nx.Graph]:
        adjacency = getattr(self, f"{side}_adjacency")
        if isinstance(adjacency, list) and not adjacency:
            raise RuntimeError(f"compute() needs at least one update(): no {side} graphs were added.")
        E = dim_zero_cat(adjacency).long().cpu()
        mask = dim_zero_cat(getattr(self, f"{side}_mask")).bool().cpu()
        return to_networkx({"X": torch.zeros_like(mask, dtype=torch.int64), "E": E, "mask": mask})

    def compute(self) -> dict[str, Tensor]:
        """The values named in the class docstring."""
        samples, reference = self._graphs("samples"), self._graphs("reference")
        if any(g.number_of_nodes() > 0 for g in samples):
            mmd = graph_mmds(samples, reference)
        else:  # nothing to compare: every MMD is undefined
            mmd = GraphMMD(*[float("nan")] * len(GraphMMD._fields))
        out = {f"mmd/{name}": value for name, value in mmd._asdict().items()}
        out.update(vun(samples, self.train_graphs, self.validity)._asdict())
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
