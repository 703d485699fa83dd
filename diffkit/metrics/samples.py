"""Sample-quality metrics as torchmetrics ``Metric`` objects: thin state holders over ``functional``.

Two-sample metrics (``MMD``, ``SlicedWasserstein``, ``ColumnwiseDistances``) keep every sample in
list states reduced with ``dist_reduce_fx="cat"``, so under DDP ``compute()`` sees the samples of
all ranks and gives the single-process value. ``TokenTotalVariation`` compares against exact
reference distributions and keeps only count states (``dist_reduce_fx="sum"``). All are lower-is-
better and have ``full_state_update = False``. ``metric_floor`` gives the value that fresh draws of
the true data score, the level a perfect model cannot beat at that sample size.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from diffkit._checks import (
    check_bandwidth,
    check_columns,
    check_ids,
    check_order,
    check_points,
    check_positive_int,
    check_probabilities,
    check_same_features,
    check_sequences,
    check_tensor,
)
from diffkit.metrics.functional import (
    _bigram_counts,
    _token_counts,
    kl_divergence,
    mmd_rbf,
    sliced_wasserstein,
    total_variation,
    wasserstein_1d,
)

__all__ = [
    "MMD",
    "SlicedWasserstein",
    "TokenTotalVariation",
    "TokenFrequencyDistance",
    "ColumnwiseDistances",
    "metric_floor",
]


def _concat(state: list[Tensor] | Tensor, what: str) -> Tensor:
    """A list state (or its synced, concatenated form) as one tensor; raises if nothing was added."""
    if isinstance(state, list) and not state:
        raise RuntimeError(f"compute() needs at least one update(): no {what} were given.")
    return dim_zero_cat(state)


def _check_like_earlier(name: str, x: Tensor, earlier: list[Tensor] | Tensor) -> None:
    """x's trailing shape matches what earlier updates stored under the same state."""
    if isinstance(earlier, list) and earlier:
        check_same_features(name, x, f"earlier {name}", earlier[0])


def _normalized(counts: Tensor, what: str) -> Tensor:
    """Counts (..., K) -> float64 frequencies; raises if nothing was counted."""
    total = counts.sum()
    if total == 0:
        raise RuntimeError(f"compute() needs at least one update(): no {what} were counted.")
    return counts.double() / total


class _TwoPointClouds(Metric):
    """Accumulates two (N, D) float samples; subclasses give the distance between them."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    #: update() takes (samples, reference), both drawn: ``metric_floor`` compares two true draws.
    two_sample: ClassVar[bool] = True

    samples: list[Tensor]
    reference: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("samples", default=[], dist_reduce_fx="cat")
        self.add_state("reference", default=[], dist_reduce_fx="cat")

    def update(self, samples: Tensor, reference: Tensor) -> None:
        """Add a batch of model samples and a batch of reference (true) data.

        Args:
            samples: (N, D) float model samples; (N, d1, d2, ...) examples (e.g. images) are
                flattened to (N, d1 * d2 * ...).
            reference: (M, D) float reference samples, the same per-example shape; M may differ from N.
        """
        check_tensor("samples", samples)
        check_tensor("reference", reference)
        if samples.ndim > 2 and samples.shape[1:] == reference.shape[1:]:
            samples, reference = samples.flatten(1), reference.flatten(1)
        check_points("samples", samples)
        check_points("reference", reference)
        check_same_features("samples", samples, "reference", reference)
        _check_like_earlier("samples", samples, self.samples)
        self.samples.append(samples)
        self.reference.append(reference)

    def compute(self) -> Tensor:
        """The distance between all samples and all reference data added since the last reset."""
        return self._distance(_concat(self.samples, "samples"), _concat(self.reference, "reference"))

    @abc.abstractmethod
    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        """() distance between (N, D) samples and (M, D) reference."""


class MMD(_TwoPointClouds):
    """Unbiased squared MMD with a Gaussian kernel between model samples and reference data.

    ``compute()`` is ``functional.mmd_rbf(cat(samples), cat(reference), bandwidth)``. It is centred
    on 0 when the model is perfect and can then be slightly negative.

    Args:
        bandwidth: kernel width h > 0; None takes the median heuristic on the pooled data at compute time.
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ...).
    """

    def __init__(self, bandwidth: float | None = None, **kwargs: Any) -> None:
        check_bandwidth(bandwidth)
        super().__init__(**kwargs)
        self.bandwidth = bandwidth

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        return mmd_rbf(samples, reference, self.bandwidth)


class SlicedWasserstein(_TwoPointClouds):
    """Sliced Wasserstein-p distance between model samples and reference data.

    ``compute()`` is ``functional.sliced_wasserstein`` on the concatenated data with directions
    drawn from a CPU generator seeded with ``seed``: the same seed gives the same directions, so
    values are comparable across calls, runs and ranks.

    Args:
        num_projections: P >= 1 random directions.
        p: order, p >= 1.
        seed: seed of the directions.
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(self, num_projections: int = 128, p: float = 2, seed: int = 0, **kwargs: Any) -> None:
        check_positive_int("num_projections", num_projections)
        check_order(p)
        super().__init__(**kwargs)
        self.num_projections = num_projections
        self.p = p
        self.seed = seed

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return sliced_wasserstein(samples, reference, self.num_projections, self.p, generator)


class TokenTotalVariation(Metric):
    """Token statistics of sampled sequences against exact reference distributions.

    ``compute()`` returns a dict with, for each reference given:
        - ``"unigram_tv"``: TV(sample unigram frequencies, reference_unigram);
        - ``"unigram_kl"``: KL(reference_unigram || sample unigram frequencies), in nats; inf when
          the samples miss a class the reference gives positive probability;
        - ``"bigram_tv"``: TV over the K * K consecutive pairs (``functional.bigram_histogram``).

    Args:
        num_classes: K >= 1.
        reference_unigram: (K,) float probabilities, or None.
        reference_bigram: (K, K) float probabilities of consecutive pairs (a, b), summing to 1 over
            both dims, or None. At least one reference is required.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    #: update() takes samples only; the reference is exact.
    two_sample: ClassVar[bool] = False

    def __init__(
        self,
        num_classes: int,
        reference_unigram: Tensor | None = None,
        reference_bigram: Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        check_positive_int("num_classes", num_classes)
        if reference_unigram is None and reference_bigram is None:
            raise ValueError("reference_unigram, reference_bigram: expected one of them (or both), got neither")
        for name, ref, shape in (
            ("reference_unigram", reference_unigram, (num_classes,)),
            ("reference_bigram", reference_bigram, (num_classes, num_classes)),
        ):
            if ref is not None:
                check_tensor(name, ref)
                if tuple(ref.shape) != shape:
                    raise ValueError(f"{name}: expected shape {shape}, got {tuple(ref.shape)}")
                check_probabilities(name, ref.reshape(-1))
        super().__init__(**kwargs)
        self.num_classes = num_classes
        # Derived from the arguments, so not saved in state_dict.
        self.register_buffer("reference_unigram", _as_float64(reference_unigram), persistent=False)
        self.register_buffer("reference_bigram", _as_float64(reference_bigram), persistent=False)
        if reference_unigram is not None:
            zeros = torch.zeros(num_classes, dtype=torch.int64)
            self.add_state("unigram_counts", zeros, dist_reduce_fx="sum")
        if reference_bigram is not None:
            zeros = torch.zeros(num_classes, num_classes, dtype=torch.int64)
            self.add_state("bigram_counts", zeros, dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        """Count the tokens (and consecutive pairs) of a batch of sampled sequences.

        Args:
            samples: (N, L) int64 token ids in [0, K); L >= 2 when a bigram reference is set.
        """
        if self.reference_bigram is None:
            check_ids("samples", samples, self.num_classes, ndim=2, nonempty=True, always=True)
        else:
            check_sequences("samples", samples, self.num_classes)
            self.bigram_counts += _bigram_counts(samples, self.num_classes)
        if self.reference_unigram is not None:
            self.unigram_counts += _token_counts(samples, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        """The distances named in the class docstring, as () float64 tensors."""
        result = {}
        if self.reference_unigram is not None:
            unigram = _normalized(self.unigram_counts, "tokens")
            result["unigram_tv"] = total_variation(unigram, self.reference_unigram)
            result["unigram_kl"] = kl_divergence(self.reference_unigram, unigram)
        if self.reference_bigram is not None:
            bigram = _normalized(self.bigram_counts, "token pairs")
            result["bigram_tv"] = total_variation(bigram.reshape(-1), self.reference_bigram.reshape(-1))
        return result


class TokenFrequencyDistance(Metric):
    """Token statistics of sampled sequences against reference sequences (two samples, no exact reference).

    Keeps the ids in list states reduced with ``dist_reduce_fx="cat"``, so under DDP ``compute()``
    sees every rank's sequences. ``compute()`` returns a dict:
        - ``"unigram_tv"``: TV(sample unigram frequencies, reference unigram frequencies);
        - ``"bigram_tv"``: TV over the K * K consecutive pairs; only for sequences of length >= 2.

    Args:
        num_classes: K >= 1, or None for max id + 1 over both sets at compute time.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    #: update() takes (samples, reference), both drawn: the floor compares two true draws.
    two_sample: ClassVar[bool] = True

    samples: list[Tensor]
    reference: list[Tensor]

    def __init__(self, num_classes: int | None = None, **kwargs: Any) -> None:
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("samples", default=[], dist_reduce_fx="cat")
        self.add_state("reference", default=[], dist_reduce_fx="cat")

    def update(self, samples: Tensor, reference: Tensor) -> None:
        """Add sampled and reference sequences.

        Args:
            samples: (N, L) or (N,) int64 ids in [0, K).
            reference: (M, L) or (M,) int64 ids, the same L.
        """
        limit = self.num_classes if self.num_classes is not None else torch.iinfo(torch.int64).max
        for name, ids in (("samples", samples), ("reference", reference)):
            check_tensor(name, ids)
            check_ids(name, ids.reshape(ids.shape[0], -1), limit, ndim=2, nonempty=True, always=True)
        check_same_features("samples", samples, "reference", reference)
        _check_like_earlier("samples", samples.reshape(samples.shape[0], -1), self.samples)
        self.samples.append(samples.reshape(samples.shape[0], -1))
        self.reference.append(reference.reshape(reference.shape[0], -1))

    def compute(self) -> dict[str, Tensor]:
        """The distances named in the class docstring, as () float64 tensors."""
        x, y = _concat(self.samples, "samples"), _concat(self.reference, "reference")  # (N, L), (M, L)
        k = self.num_classes if self.num_classes is not None else int(max(x.max(), y.max())) + 1
        result = {
            "unigram_tv": total_variation(
                _normalized(_token_counts(x, k), "tokens"), _normalized(_token_counts(y, k), "tokens")
            )
        }
        if x.shape[1] > 1:
            p, q = (_normalized(_bigram_counts(z, k), "token pairs").reshape(-1) for z in (x, y))
            result["bigram_tv"] = total_variation(p, q)
        return result


def _as_float64(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach().to(torch.float64)


class ColumnwiseDistances(Metric):
    """Per-column distances between sampled and reference tables of mixed numeric / categorical fields.

    A table is a dict of tensors with one row per record: a numeric field is (N,) or (N, D)
    float, a categorical field is (N,) int64. ``compute()`` returns a dict:
        - ``"w1/<field>"`` (an (N,) numeric field) or ``"w1/<field>/<j>"`` (column j of an (N, D)
          one): exact 1-D Wasserstein-1 distance (``functional.wasserstein_1d``);
        - ``"tv/<field>"`` per categorical field: total variation between the class frequencies;
        - ``"mmd"`` if there are numeric fields: ``functional.mmd_rbf`` on all numeric columns side
          by side, each divided by the reference's standard deviation of that column (columns
          without spread are left as they are) so that no column dominates the kernel by its units.

    Args:
        categorical: field name -> number of classes K >= 1.
        numeric: numeric field names.
        bandwidth: MMD kernel width on the standardised columns; None takes the median heuristic.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    #: update() takes (samples, reference), both drawn: ``metric_floor`` compares two true draws.
    two_sample: ClassVar[bool] = True

    def __init__(
        self,
        categorical: Mapping[str, int] | None = None,
        numeric: Sequence[str] = (),
        bandwidth: float | None = None,
        **kwargs: Any,
    ) -> None:
        categorical = dict(categorical or {})
        numeric = list(numeric)
        if not categorical and not numeric:
            raise ValueError("categorical, numeric: expected at least one field, got none")
        if set(categorical) & set(numeric) or len(set(numeric)) != len(numeric):
            raise ValueError(
                f"categorical, numeric: expected distinct field names, got numeric={numeric}, "
                f"categorical={list(categorical)}"
            )
        for name, num_classes in categorical.items():
            check_positive_int(f"categorical[{name!r}]", num_classes)
        check_bandwidth(bandwidth)
        super().__init__(**kwargs)
        self.categorical = categorical
        self.numeric = numeric
        self.bandwidth = bandwidth
        # States are named by position: field names need not be valid attribute names.
        for i in range(len(numeric)):
            self.add_state(f"numeric_samples_{i}", default=[], dist_reduce_fx="cat")
            self.add_state(f"numeric_reference_{i}", default=[], dist_reduce_fx="cat")
        for i, num_classes in enumerate(categorical.values()):
            for side in ("samples", "reference"):
                zeros = torch.zeros(num_classes, dtype=torch.int64)
                self.add_state(f"categorical_{side}_counts_{i}", zeros, dist_reduce_fx="sum")

    def update(self, samples: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> None:
        """Add a sampled table and a reference table (row counts may differ between the two).

        Args:
            samples: field -> (N,) or (N, D) float for numeric fields, (N,) int64 for categorical
                ones; every declared field is required, other keys are ignored.
            reference: the same fields for M rows.
        """
        for side, table in (("samples", samples), ("reference", reference)):
            self._check_table(side, table)
        for i, name in enumerate(self.numeric):
            check_same_features(f"samples[{name!r}]", samples[name], f"reference[{name!r}]", reference[name])
            _check_like_earlier(f"samples[{name!r}]", samples[name], getattr(self, f"numeric_samples_{i}"))
            getattr(self, f"numeric_samples_{i}").append(samples[name])
            getattr(self, f"numeric_reference_{i}").append(reference[name])
        for i, (name, num_classes) in enumerate(self.categorical.items()):
            for side, table in (("samples", samples), ("reference", reference)):
                state = f"categorical_{side}_counts_{i}"
                setattr(self, state, getattr(self, state) + _token_counts(table[name], num_classes))

    def _check_table(self, side: str, table: object) -> None:
        if not isinstance(table, Mapping):
            raise TypeError(f"{side}: expected a dict of tensors, got {type(table).__name__}")
        missing = [name for name in [*self.numeric, *self.categorical] if name not in table]
        if missing:
            raise ValueError(f"{side}: missing field(s) {missing}; got keys {list(table)}")
        for name in self.numeric:
            check_columns(f"{side}[{name!r}]", table[name])
        for name, num_classes in self.categorical.items():
            check_ids(f"{side}[{name!r}]", table[name], num_classes, ndim=1, nonempty=True, always=True)
        rows = {name: table[name].shape[0] for name in [*self.numeric, *self.categorical]}
        if len(set(rows.values())) > 1:
            raise ValueError(f"{side}: expected the same number of rows in every field, got {rows}")

    def compute(self) -> dict[str, Tensor]:
        """The per-column distances (and numeric-block MMD) named in the class docstring."""
        result = self._numeric_distances() if self.numeric else {}
        for i, name in enumerate(self.categorical):
            p = _normalized(getattr(self, f"categorical_samples_counts_{i}"), f"samples[{name!r}]")
            q = _normalized(getattr(self, f"categorical_reference_counts_{i}"), f"reference[{name!r}]")
            result[f"tv/{name}"] = total_variation(p, q)
        return result

    def _numeric_distances(self) -> dict[str, Tensor]:
        result, sample_columns, reference_columns = {}, [], []
        for i, name in enumerate(self.numeric):
            x = _concat(getattr(self, f"numeric_samples_{i}"), f"samples[{name!r}]")  # (N,) or (N, D)
            y = _concat(getattr(self, f"numeric_reference_{i}"), f"reference[{name!r}]")  # (M,) or (M, D)
            w1 = wasserstein_1d(x, y, p=1)
            if x.ndim == 1:
                result[f"w1/{name}"] = w1
            else:
                result.update({f"w1/{name}/{j}": w1[j] for j in range(w1.shape[0])})
            sample_columns.append(x.reshape(x.shape[0], -1))
            reference_columns.append(y.reshape(y.shape[0], -1))
        x, y = torch.cat(sample_columns, 1), torch.cat(reference_columns, 1)  # (N, sum D), (M, sum D)
        scale = y.double().std(0)  # (sum D,)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        result["mmd"] = mmd_rbf(x.double() / scale, y.double() / scale, self.bandwidth).to(x.dtype)
        return result


def metric_floor(
    metric: Metric,
    reference_sampler: Callable[[int, int], Any],
    n: int,
    seed: int = 0,
) -> Any:
    """The metric's value on true data alone: its floor at sample size n.

    A perfect model's samples are fresh draws of the true data, so at sample size n no model
    scores reliably below this (estimators like MMD_u fluctuate around it). For a two-sample
    metric (``metric.two_sample`` True, or absent) it is the metric between the draws
    ``reference_sampler(n, 2 * seed)`` and ``reference_sampler(n, 2 * seed + 1)``; for a metric
    with an exact built-in reference (``two_sample`` False, e.g. ``TokenTotalVariation``) it is the
    metric of ``reference_sampler(n, 2 * seed)`` alone. Different seeds use disjoint sampler seeds,
    so floors for seeds 0, 1, 2, ... are independent repeats.

    The computation is local: ``metric`` is cloned and reset, the clone does not sync across
    processes (every rank gets the single-process value), and ``metric`` itself is unchanged.

    Args:
        metric: a metric configured as for the model's samples; its accumulated state is ignored.
        reference_sampler: (n, seed) -> n rows of true data, in the form ``metric.update`` takes.
        n: sample size n >= 1 (the size the model's metric is computed at).
        seed: repeat index >= 0.

    Returns:
        What ``metric.compute()`` returns.
    """
    check_positive_int("n", n)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    floor = metric.clone()
    floor.reset()
    # torchmetrics reads `_to_sync` in compute(); `sync_on_compute` alone restores it after forward().
    floor.sync_on_compute = floor._to_sync = False
    if getattr(metric, "two_sample", True):
        floor.update(reference_sampler(n, 2 * seed), reference_sampler(n, 2 * seed + 1))
    else:
        floor.update(reference_sampler(n, 2 * seed))
    return floor.compute()
