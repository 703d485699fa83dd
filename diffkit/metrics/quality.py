"""``default_sample_metrics``: the sample metrics that fit a kind of data, as a ``MetricCollection``.

``DiffusionModule`` logs, at every validation / test epoch end, the metrics that its data module's
``sample_metrics()`` returns; a data module without that hook gets these defaults, chosen from one
example batch:

- float examples (N, ...) -> ``{"mmd": MMD(), "swd": SlicedWasserstein()}`` on the flattened examples;
- class ids (N, L) or (N,) -> ``{"tokens": TokenFrequencyDistance(K)}`` (unigram / bigram TV);
- a dict of (N,) class ids and (N,) / (N, D) floats (a table) -> ``{"columns": ColumnwiseDistances(...)}``.

Every metric here is two-sample (``update(samples, reference)``), so its floor is the same metric
between two independent draws of the true data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torchmetrics import MetricCollection

from diffkit.metrics.samples import MMD, ColumnwiseDistances, SlicedWasserstein, TokenFrequencyDistance

__all__ = ["default_sample_metrics"]


def _num_classes(name: str, num_classes: int | Mapping[str, int] | None, field: str | None = None) -> int:
    k = num_classes.get(field) if isinstance(num_classes, Mapping) else num_classes
    if k is None:
        raise ValueError(f"num_classes: {name} holds class ids but no number of classes was given for it")
    return int(k)


def default_sample_metrics(example: Any, num_classes: int | Mapping[str, int] | None = None) -> MetricCollection:
    """The default sample metrics for data shaped like ``example`` (see the module docstring).

    Args:
        example: a batch: a (N, ...) Tensor, or a dict of (N,) / (N, D) Tensors (a table).
        num_classes: K for id data: an int (None: the largest id seen + 1), or field -> K for a
            table's id fields (required there).

    Returns:
        A ``MetricCollection`` of two-sample metrics.

    Raises:
        ValueError: a table's id field without ``num_classes``; a dict with a "mask" entry or a field of
            more than two dims (graphs and other structured data need their data module's
            ``sample_metrics()``).
        TypeError: ``example`` is neither a Tensor nor a dict of Tensors.
    """
    if isinstance(example, Tensor):
        if example.is_floating_point():
            return MetricCollection({"mmd": MMD(), "swd": SlicedWasserstein()})
        return MetricCollection(
            {"tokens": TokenFrequencyDistance(num_classes if isinstance(num_classes, int) else None)}
        )
    if not isinstance(example, Mapping):
        raise TypeError(f"example: expected a Tensor or a dict of Tensors, got {type(example).__name__}")
    odd = [k for k, v in example.items() if k == "mask" or not isinstance(v, Tensor) or v.ndim > 2]
    if odd:
        raise ValueError(
            f"example: fields {odd} are not table columns ((N,) ids or (N,) / (N, D) floats); give the data "
            "module a sample_metrics() that returns metrics for this data"
        )
    numeric = [k for k, v in example.items() if v.is_floating_point()]
    categorical = {
        k: _num_classes(f"field {k!r}", num_classes, k) for k, v in example.items() if not v.is_floating_point()
    }
    return MetricCollection({"columns": ColumnwiseDistances(categorical, numeric)})
