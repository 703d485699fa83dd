"""Metrics that see blur: k-NN precision / recall, density / coverage, and the distance of 2-D toy
samples to the manifold that generated them, as torchmetrics ``Metric`` objects.

An RBF MMD with a median bandwidth scores a slightly blurred swiss roll at its floor; these do not:

* **Precision / recall** (Kynkaanniemi et al. 2019, "Improved precision and recall metric", eqs. 1-3):
  the real manifold is the union of balls B(r_i, NND_k(r_i)) around each real point r_i, with
  NND_k its distance to its k-th nearest real neighbour (itself excluded); precision is the
  fraction of generated points inside the real manifold, recall the fraction of real points
  inside the generated one (balls around generated points, radii among generated points).
* **Density / coverage** (Naeem et al. 2020, "Reliable fidelity and diversity metrics", eqs. 3-4):
      density  = 1 / (k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]
      coverage = 1 / N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]
  with X the N real points and Y the M generated ones. Density is about 1 for a perfect model.
* **Manifold distance ratio**: the mean Euclidean distance of samples to the generating curve (the
  swiss roll's spiral, the two moons' half circles) or points (eight gaussians' centres), divided
  by the same mean for real data. Real data's distance is the noise level, so a ratio near 1 means
  samples are as sharp as the data; blur shows up as a ratio above 1, collapse onto the curve
  as a ratio below 1. Distances are in the standardized coordinates the data sets return.

All keep their points in list states reduced with ``dist_reduce_fx="cat"`` (pooled under DDP)
and take ``update(samples, reference)``, so :func:`diffkit.metrics.metric_floor` gives their value
on two draws of real data.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from diffkit._checks import check_points, check_positive_int
from diffkit.metrics.samples import _TwoPointClouds

__all__ = [
    "knn_radii",
    "knn_precision",
    "knn_recall",
    "density",
    "coverage",
    "manifold_points",
    "manifold_distance",
    "KNNPrecision",
    "KNNRecall",
    "Density",
    "Coverage",
    "ManifoldDistanceRatio",
    "MANIFOLDS",
]

ManifoldName = Literal["swiss_roll", "eight_gaussians", "two_moons"]
#: Toy data sets with a known generating manifold.
MANIFOLDS: tuple[str, ...] = ("swiss_roll", "eight_gaussians", "two_moons")

_CHUNK = 1024  # rows of the pairwise-distance matrix formed at once


def knn_radii(points: Tensor, k: int) -> Tensor:
    """NND_k: each point's distance to its k-th nearest neighbour in the same set, itself excluded.

    Args:
        points: (N, D) float, N > k.
        k: k >= 1.

    Returns:
        (N,) float64 radii.
    """
    x = points.double()
    radii = []
    for rows in x.split(_CHUNK):
        d = torch.cdist(rows, x)  # (n, N); the k + 1 smallest include the point itself (distance 0)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _inside_counts(queries: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """(Q,) int64: for each query, how many balls B(centre_i, radius_i) contain it (distance <= radius)."""
    c = centres.double()
    counts = [(torch.cdist(q, c) <= radii).sum(1) for q in queries.double().split(_CHUNK)]
    return torch.cat(counts)


def _check_knn(samples: Tensor, reference: Tensor, k: int) -> None:
    check_positive_int("k", k)
    check_points("samples", samples, min_rows=k + 1)
    check_points("reference", reference, min_rows=k + 1)
    if samples.shape[1] != reference.shape[1]:
        raise ValueError(f"reference: expected the D of samples {tuple(samples.shape)}, got {tuple(reference.shape)}")


def knn_precision(samples: Tensor, reference: Tensor, k: int = 5) -> Tensor:
    """Fraction of samples inside the real k-NN manifold (Kynkaanniemi et al. 2019 eqs. 1-2).

    Args:
        samples: (M, D) float generated points; reference: (N, D) float real points; k: neighbourhood size.

    Returns:
        () float64 in [0, 1].
    """
    _check_knn(samples, reference, k)
    return (_inside_counts(samples, reference, knn_radii(reference, k)) > 0).double().mean()


def knn_recall(samples: Tensor, reference: Tensor, k: int = 5) -> Tensor:
    """Fraction of real points inside the generated k-NN manifold (Kynkaanniemi et al. 2019 eq. 3)."""
    _check_knn(samples, reference, k)
    return (_inside_counts(reference, samples, knn_radii(samples, k)) > 0).double().mean()


def density(samples: Tensor, reference: Tensor, k: int = 5) -> Tensor:
    """1 / (k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))] (Naeem et al. 2020 eq. 3); () float64, ~1 when perfect."""
    _check_knn(samples, reference, k)
    counts = _inside_counts(samples, reference, knn_radii(reference, k))
    return counts.double().sum() / (k * samples.shape[0])


def coverage(samples: Tensor, reference: Tensor, k: int = 5) -> Tensor:
    """1 / N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))] (Naeem et al. 2020 eq. 4); () float64 in [0, 1]."""
    _check_knn(samples, reference, k)
    radii = knn_radii(reference, k)
    # ball i is covered iff its nearest sample lies within its radius
    nearest = torch.cat([torch.cdist(r, samples.double()).min(1).values for r in reference.double().split(_CHUNK)])
    return (nearest <= radii).double().mean()


# ------------------------------------------------------------------ generating manifolds
@functools.cache
def manifold_points(name: ManifoldName, num: int = 200_000) -> np.ndarray:
    """A dense (P, 2) float64 sampling of a toy set's generating manifold, in the standardized
    coordinates of :mod:`diffkit.data.toy2d` (same mean and std as the data).

    swiss_roll: the spiral (t cos t, t sin t), t in [1.5 pi, 4.5 pi], ``num`` points evenly in t;
    two_moons: the two half circles, ``num`` // 2 points each; eight_gaussians: the 8 centres.
    """
    from diffkit.data import toy2d

    if name == "swiss_roll":
        a, b = toy2d.SWISS_ROLL_TURNS
        t = np.linspace(a, b, num)
        raw = np.stack([t * np.cos(t), t * np.sin(t)], 1)
        mean, var = toy2d._swiss_roll_moments()
    elif name == "eight_gaussians":
        angle = np.arange(8) * (2 * math.pi / 8)
        raw = toy2d.EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], 1)
        v = toy2d.EIGHT_GAUSSIANS_RADIUS**2 / 2 + toy2d.EIGHT_GAUSSIANS_STD**2
        mean, var = (0.0, 0.0), (v, v)
    elif name == "two_moons":
        u = np.linspace(0, math.pi, num // 2)
        upper = np.stack([np.cos(u), np.sin(u)], 1)
        lower = np.stack([1 - np.cos(u), 0.5 - np.sin(u)], 1)
        raw = np.concatenate([upper, lower])
        nv = toy2d.TWO_MOONS_NOISE**2
        mean, var = (0.5, 0.25), (0.75 + nv, 9 / 16 - 1 / math.pi + nv)
    else:
        raise ValueError(f"name: expected one of {list(MANIFOLDS)}, got {name!r}")
    return (raw - np.asarray(mean)) / np.sqrt(np.asarray(var))


@functools.cache
def _tree(name: str) -> cKDTree:
    return cKDTree(manifold_points(name))


def manifold_distance(points: Tensor, name: ManifoldName) -> Tensor:
    """Each point's Euclidean distance to the generating manifold of toy set ``name``.

    The curve is sampled densely (200k points; spacing below 1e-4 in standardized units, so the
    error is far below the data's noise of ~0.05).

    Args:
        points: (N, 2) float standardized points.
        name: "swiss_roll", "eight_gaussians" or "two_moons".

    Returns:
        (N,) float64 distances.
    """
    if name not in MANIFOLDS:
        raise ValueError(f"name: expected one of {list(MANIFOLDS)}, got {name!r}")
    check_points("points", points)
    if points.shape[1] != 2:
        raise ValueError(f"points: expected shape (N, 2), got {tuple(points.shape)}")
    dist, _ = _tree(name).query(points.detach().double().cpu().numpy())
    return torch.as_tensor(dist, dtype=torch.float64)


# ------------------------------------------------------------------ Metric classes
class _KNNMetric(_TwoPointClouds):
    """A k-NN fidelity / diversity score of (samples, reference); higher is better."""

    higher_is_better = True

    def __init__(self, k: int = 5, **kwargs: Any) -> None:
        check_positive_int("k", k)
        super().__init__(**kwargs)
        self.k = k


class KNNPrecision(_KNNMetric):
    """:func:`knn_precision` of all samples against all reference data added since the last reset."""

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        return knn_precision(samples, reference, self.k)


class KNNRecall(_KNNMetric):
    """:func:`knn_recall` of all samples against all reference data added since the last reset."""

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        return knn_recall(samples, reference, self.k)


class Density(_KNNMetric):
    """:func:`density` (Naeem et al. 2020); about 1 for a perfect model, above 1 when samples crowd the modes."""

    higher_is_better = None  # type: ignore[assignment]  # 1 is best

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        return density(samples, reference, self.k)


class Coverage(_KNNMetric):
    """:func:`coverage` (Naeem et al. 2020)."""

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        return coverage(samples, reference, self.k)


class ManifoldDistanceRatio(_TwoPointClouds):
    """mean manifold_distance(samples) / mean manifold_distance(reference) for a 2-D toy set.

    1 means samples lie as close to the generating curve (or centres) as real data; blur gives
    a ratio above 1. Lower is better down to 1.

    Args:
        name: "swiss_roll", "eight_gaussians" or "two_moons".
        **kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(self, name: ManifoldName, **kwargs: Any) -> None:
        if name not in MANIFOLDS:
            raise ValueError(f"name: expected one of {list(MANIFOLDS)}, got {name!r}")
        super().__init__(**kwargs)
        self.name = name

    def _distance(self, samples: Tensor, reference: Tensor) -> Tensor:
        return manifold_distance(samples, self.name).mean() / manifold_distance(reference, self.name).mean()
