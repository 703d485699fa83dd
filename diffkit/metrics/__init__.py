"""Sample-quality metrics: pure functions in ``functional`` under thin torchmetrics ``Metric`` classes."""

from diffkit.metrics.functional import (
    bigram_counts,
    bigram_histogram,
    kl_divergence,
    median_pairwise_distance,
    mmd_rbf,
    sliced_wasserstein,
    token_counts,
    token_histogram,
    total_variation,
    wasserstein_1d,
)
from diffkit.metrics.samples import (
    MMD,
    ColumnwiseDistances,
    SlicedWasserstein,
    TokenTotalVariation,
    metric_floor,
)

__all__ = [
    "MMD",
    "ColumnwiseDistances",
    "SlicedWasserstein",
    "TokenTotalVariation",
    "metric_floor",
    "bigram_counts",
    "bigram_histogram",
    "kl_divergence",
    "median_pairwise_distance",
    "mmd_rbf",
    "sliced_wasserstein",
    "token_counts",
    "token_histogram",
    "total_variation",
    "wasserstein_1d",
]
