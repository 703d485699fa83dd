"""A synthetic mixed table: numeric columns and categorical columns that depend on each other.

One row is drawn as

    cluster ~ Cat(0.4, 0.3, 0.2, 0.1)                                  4 classes
    raw     ~ N(CLUSTER_MEANS[cluster], L L^T)                          3 correlated numeric columns
    num     = (raw - m) / s                                             m, s: exact mean and std of raw
    score   = num . BUCKET_DIRECTION + BUCKET_NOISE * N(0, 1)
    bucket  = number of BUCKET_THRESHOLDS below score                   3 classes

so the cluster sets the means of the numeric columns and the bucket is a noisy threshold of a
numeric combination. A batch is a dict {"num": (B, 3) float32, "cluster": (B,) int64,
"bucket": (B,) int64}. Given the cluster, num and score are Gaussian, so the class marginals
of both categorical fields are exact (normal CDFs).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from diffkit._checks import check_positive_int
from diffkit.data._base import SampledDataModule

__all__ = ["sample_table", "categorical_fields", "numeric_fields", "table_class_marginals", "TableDataModule"]

CLUSTER_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
CLUSTER_MEANS = ((-2.0, -1.0, 0.0), (2.0, -1.0, 1.0), (0.0, 2.0, -1.0), (0.0, 0.0, 3.0))  # raw units
WITHIN_CHOL = ((1.0, 0.0, 0.0), (0.6, 0.8, 0.0), (0.0, 0.0, 0.5))  # L: within-cluster cov L L^T
BUCKET_DIRECTION = (1.0, -1.0, 0.5)
BUCKET_NOISE = 0.5
BUCKET_THRESHOLDS = (-0.75, 0.75)


def _f64(values: tuple) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


@functools.cache
def _standardization() -> tuple[Tensor, Tensor]:
    """Exact (3,) mean m and (3,) std s of raw: Cov = sum_k w_k (mu_k - m)(mu_k - m)^T + L L^T."""
    weights, means, chol = _f64(CLUSTER_WEIGHTS), _f64(CLUSTER_MEANS), _f64(WITHIN_CHOL)
    mean = weights @ means  # (3,)
    centered = means - mean  # (4, 3)
    var = weights @ centered**2 + (chol**2).sum(-1)  # diag(L L^T) = row sums of L^2
    return mean, var.sqrt()


def categorical_fields() -> dict[str, int]:
    """Categorical field name -> number of classes K: {"cluster": 4, "bucket": 3}."""
    return {"cluster": len(CLUSTER_WEIGHTS), "bucket": len(BUCKET_THRESHOLDS) + 1}


def numeric_fields() -> dict[str, int]:
    """Numeric field name -> width D: {"num": 3}."""
    return {"num": len(BUCKET_DIRECTION)}


def sample_table(n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Draw n rows of the table (see the module docstring for the model).

    Args:
        n: number of rows, >= 1.
        generator: torch random generator (None: torch's default generator).

    Returns:
        {"num": (n, 3) float32 standardized numeric columns, "cluster": (n,) int64 ids in [0, 4),
        "bucket": (n,) int64 ids in [0, 3)}.
    """
    check_positive_int("n", n)
    cluster = torch.multinomial(_f64(CLUSTER_WEIGHTS), n, replacement=True, generator=generator)  # (n,)
    noise = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    raw = _f64(CLUSTER_MEANS)[cluster] + noise @ _f64(WITHIN_CHOL).T  # (n, 3)
    mean, std = _standardization()
    num = (raw - mean) / std
    score_noise = torch.randn(n, generator=generator, dtype=torch.float64)
    score = num @ _f64(BUCKET_DIRECTION) + BUCKET_NOISE * score_noise  # (n,)
    bucket = torch.bucketize(score, _f64(BUCKET_THRESHOLDS))
    return {"num": num.to(torch.float32), "cluster": cluster, "bucket": bucket}


def _bucket_given_cluster() -> Tensor:
    """(4, 3) float64 exact p(bucket | cluster): score | cluster is N(a . mean_k, a^T C a + noise^2)."""
    mean, std = _standardization()
    direction, chol = _f64(BUCKET_DIRECTION), _f64(WITHIN_CHOL)
    score_mean = ((_f64(CLUSTER_MEANS) - mean) / std) @ direction  # (4,)
    score_std = (((direction / std) @ chol).pow(2).sum() + BUCKET_NOISE**2).sqrt()
    edges = torch.cat([_f64((-float("inf"),)), _f64(BUCKET_THRESHOLDS), _f64((float("inf"),))])  # (4,)
    cdf = torch.special.ndtr((edges - score_mean.unsqueeze(-1)) / score_std)  # (4, 4)
    return cdf[:, 1:] - cdf[:, :-1]


def table_class_marginals(field: str) -> Tensor:
    """Exact class frequencies of one categorical field.

    Args:
        field: "cluster" or "bucket".

    Returns:
        (K,) float64 probabilities.

    Raises:
        ValueError: if ``field`` is not a categorical field.
    """
    if field == "cluster":
        return _f64(CLUSTER_WEIGHTS)
    if field == "bucket":
        return _f64(CLUSTER_WEIGHTS) @ _bucket_given_cluster()
    raise ValueError(f"field: expected one of {sorted(categorical_fields())}, got {field!r}")


class TableDataModule(SampledDataModule):
    """Fixed train / val / test draws of the synthetic mixed table.

    Batches are dicts {"num": (B, 3) float32, "cluster": (B,) int64, "bucket": (B,) int64}.

    Args:
        num_train: number of training rows, >= 1.
        num_val: number of validation (and test) rows, >= 1.
        batch_size: rows per batch, >= 1.
        seed: non-negative seed of the splits and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        TypeError: if a size or seed is not an int.
        ValueError: if a size or seed is out of range.
    """

    def __init__(
        self,
        num_train: int = 20000,
        num_val: int = 2000,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(num_train, num_val, batch_size, seed, num_workers)

    def draw(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """n rows as a dict of Tensors (see :func:`sample_table`)."""
        return sample_table(n, generator)

    def sample_metrics(self) -> MetricCollection:
        """``{"columns": ColumnwiseDistances}``: per-column W1 / TV and an MMD over the numeric columns."""
        from diffkit.metrics.samples import ColumnwiseDistances

        return MetricCollection(
            {"columns": ColumnwiseDistances(self.categorical_fields(), list(self.numeric_fields()))}
        )

    def categorical_fields(self) -> dict[str, int]:
        """Categorical field name -> number of classes K."""
        return categorical_fields()

    def numeric_fields(self) -> dict[str, int]:
        """Numeric field name -> width D."""
        return numeric_fields()

    def class_marginals(self, field: str) -> Tensor:
        """(K,) float64 exact class frequencies of a categorical field ("cluster" or "bucket")."""
        return table_class_marginals(field)
