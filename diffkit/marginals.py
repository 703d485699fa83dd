"""Class frequencies of training data, for categorical fields with ``transition="marginal"``.

DiGress's marginal transition noises towards the data's class frequencies. They are counted over
the elements that are real in the process's own sense (:meth:`ProductProcess.field_mask`): real
nodes of a masked field, and for a symmetric field each undirected pair i < j of real nodes once
(no diagonal), as :func:`diffkit.graphs.type_marginals` counts node and edge types.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from diffkit.processes.base import ForwardProcess
from diffkit.processes.categorical import CategoricalProcess
from diffkit.processes.product import ProductProcess

__all__ = ["pending_marginals", "class_counts", "fill_marginals"]


def pending_marginals(process: ForwardProcess) -> dict[str | None, CategoricalProcess]:
    """The categorical fields still waiting for class frequencies: field name (None for a lone
    process) -> process."""
    fields = process.fields.items() if isinstance(process, ProductProcess) else [(None, process)]
    return {name: p for name, p in fields if isinstance(p, CategoricalProcess) and p.needs_marginals}


def class_counts(process: ForwardProcess, x0: Any, field: str | None, num_classes: int) -> Tensor:
    """(num_classes,) float64 counts of the class ids of ``field`` over its real elements in batch x0."""
    if field is None:
        ids = x0
    else:
        ids = x0[field]
        real = process.field_mask(field, ids, x0.get(process.mask_key))
        if real is not None:
            ids = ids[real.expand_as(ids)]
    return torch.bincount(ids.flatten().cpu(), minlength=num_classes).double()


def fill_marginals(process: ForwardProcess, batches: Iterable[Any]) -> None:
    """Count the class ids of every pending "marginal" field over ``batches`` (clean x0) and set
    them (:meth:`CategoricalProcess.set_marginals`). Nothing to do when none is pending."""
    pending = pending_marginals(process)
    if not pending:
        return
    counts = {name: torch.zeros(p.num_classes, dtype=torch.float64) for name, p in pending.items()}
    for x0 in batches:
        for name, p in pending.items():
            counts[name] += class_counts(process, x0, name, p.num_classes)
    for name, p in pending.items():
        p.set_marginals(counts[name])
