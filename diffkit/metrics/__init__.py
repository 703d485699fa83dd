"""Sample-quality metrics: pure functions in ``functional`` under thin torchmetrics ``Metric`` classes.

One stack: ``DiffusionModule`` logs only these ``Metric`` objects, the ones its data module's
``sample_metrics()`` returns (``default_sample_metrics`` otherwise); graph metrics live in
``diffkit.metrics.graphs`` (fixed reference, final evaluation) and ``diffkit.metrics.graph_samples``
(two-sample, validation).
"""

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
from diffkit.metrics.manifold import (
    Coverage,
    Density,
    KNNPrecision,
    KNNRecall,
    ManifoldDistanceRatio,
    coverage,
    density,
    knn_precision,
    knn_recall,
    manifold_distance,
)
from diffkit.metrics.quality import default_sample_metrics
from diffkit.metrics.samples import (
    MMD,
    ColumnwiseDistances,
    SlicedWasserstein,
    TokenFrequencyDistance,
    TokenTotalVariation,
    metric_floor,
)

__all__ = [
    "Coverage",
    "Density",
    "KNNPrecision",
    "KNNRecall",
    "ManifoldDistanceRatio",
    "coverage",
    "density",
    "knn_precision",
    "knn_recall",
    "manifold_distance",
    "MMD",
    "ColumnwiseDistances",
    "SlicedWasserstein",
    "TokenTotalVariation",
    "TokenFrequencyDistance",
    "default_sample_metrics",
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
