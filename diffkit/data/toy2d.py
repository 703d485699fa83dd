"""Four 2-D toy distributions and a data module over them.

Every sampler is a pure function ``f(n, generator=None) -> (n, 2) float32``. Each one draws from a
fixed "raw" distribution, then subtracts the raw distribution's exact mean and divides by its
exact standard deviation, coordinate by coordinate, so the data have mean 0 and standard
deviation 1 per coordinate (in distribution; a sample of n matches to about 1 / sqrt(n)).
The raw distributions and their exact moments are documented on each function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
from scipy import integrate
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from diffkit._checks import check_positive_int
from diffkit.data._base import SampledDataModule
from diffkit.metrics.manifold import MANIFOLDS, Coverage, Density, KNNPrecision, KNNRecall, ManifoldDistanceRatio

__all__ = ["swiss_roll", "eight_gaussians", "two_moons", "checkerboard", "TOY2D", "Toy2DDataModule"]

Toy2DName = Literal["swiss_roll", "eight_gaussians", "two_moons", "checkerboard"]

SWISS_ROLL_TURNS = (1.5 * math.pi, 4.5 * math.pi)  # range of the curve parameter t
SWISS_ROLL_NOISE = 0.5  # Gaussian noise std, raw units
EIGHT_GAUSSIANS_RADIUS = 2.0
EIGHT_GAUSSIANS_STD = 0.2
TWO_MOONS_NOISE = 0.1


def _uniform(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _normal(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, 2, generator=generator, dtype=torch.float64)


def _standardize(raw: Tensor, mean: tuple[float, float], var: tuple[float, float]) -> Tensor:
    """(raw - mean) / sqrt(var) per coordinate, cast to float32."""
    mean_t = torch.tensor(mean, dtype=torch.float64)
    std_t = torch.tensor(var, dtype=torch.float64).sqrt()
    return ((raw - mean_t) / std_t).to(torch.float32)


@functools.cache
def _swiss_roll_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Exact mean and variance of (t cos t, t sin t), t ~ U[a, b], by quadrature, plus noise variance."""
    a, b = SWISS_ROLL_TURNS

    def expect(f: Callable[[float], float]) -> float:
        return integrate.quad(f, a, b, limit=200)[0] / (b - a)

    mean = (expect(lambda t: t * math.cos(t)), expect(lambda t: t * math.sin(t)))
    second = (expect(lambda t: (t * math.cos(t)) ** 2), expect(lambda t: (t * math.sin(t)) ** 2))
    var = tuple(s - m**2 + SWISS_ROLL_NOISE**2 for s, m in zip(second, mean, strict=True))
    return mean, var


def swiss_roll(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A noisy 2-D spiral (the swiss roll seen from its axis), standardized.

    Raw: t ~ U[1.5 pi, 4.5 pi], x = (t cos t, t sin t) + N(0, 0.5^2 I). Then each coordinate is
    centered and scaled by the raw distribution's exact mean and std (by quadrature over t).

    Args:
        n: number of points, >= 1.
        generator: torch random generator (None: torch's default generator).

    Returns:
        (n, 2) float32 points, mean 0 and std 1 per coordinate in distribution.
    """
    check_positive_int("n", n)
    a, b = SWISS_ROLL_TURNS
    t = a + (b - a) * _uniform(n, generator)  # (n,)
    curve = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1)  # (n, 2)
    raw = curve + SWISS_ROLL_NOISE * _normal(n, generator)
    return _standardize(raw, *_swiss_roll_moments())


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Eight equally weighted Gaussians on a circle, standardized.

    Raw: center k ~ U{0..7} at angle 2 pi k / 8 on the circle of radius R = 2, plus N(0, 0.2^2 I).
    Exact moments: mean 0, variance R^2 / 2 + 0.2^2 per coordinate, so the data are divided by
    sqrt(2.04) (radius about 1.40, component std about 0.14).

    Args:
        n: number of points, >= 1.
        generator: torch random generator (None: torch's default generator).

    Returns:
        (n, 2) float32 points, mean 0 and std 1 per coordinate in distribution.
    """
    check_positive_int("n", n)
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.to(torch.float64) * (2 * math.pi / 8)
    centers = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # (n, 2)
    raw = centers + EIGHT_GAUSSIANS_STD * _normal(n, generator)
    var = EIGHT_GAUSSIANS_RADIUS**2 / 2 + EIGHT_GAUSSIANS_STD**2
    return _standardize(raw, (0.0, 0.0), (var, var))


def two_moons(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles, standardized.

    Raw (scikit-learn's ``make_moons``): with probability 1/2 the upper moon (cos u, sin u), else the
    lower moon (1 - cos u, 1/2 - sin u), u ~ U[0, pi], plus N(0, 0.1^2 I). Exact moments:
    mean (1/2, 1/4); variance 3/4 + 0.1^2 for x and 9/16 - 1/pi + 0.1^2 for y.

    Args:
        n: number of points, >= 1.
        generator: torch random generator (None: torch's default generator).

    Returns:
        (n, 2) float32 points, mean 0 and std 1 per coordinate in distribution.
    """
    check_positive_int("n", n)
    u = math.pi * _uniform(n, generator)
    lower = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64)  # 1: lower moon
    x = torch.cos(u) + lower * (1 - 2 * torch.cos(u))
    y = torch.sin(u) + lower * (0.5 - 2 * torch.sin(u))
    raw = torch.stack([x, y], dim=-1) + TWO_MOONS_NOISE * _normal(n, generator)  # (n, 2)
    noise_var = TWO_MOONS_NOISE**2
    return _standardize(raw, (0.5, 0.25), (0.75 + noise_var, 9 / 16 - 1 / math.pi + noise_var))


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 "black" cells of a 4 x 4 checkerboard, standardized.

    Raw: uniform on the cells of [-2, 2]^2 where floor(x) + floor(y) is even. Both marginals are
    U[-2, 2] (mean 0, variance 4/3), so the data are multiplied by sqrt(3) / 2.

    Args:
        n: number of points, >= 1.
        generator: torch random generator (None: torch's default generator).

    Returns:
        (n, 2) float32 points, mean 0 and std 1 per coordinate in distribution.
    """
    check_positive_int("n", n)
    x = 4 * _uniform(n, generator) - 2
    row = 2 * torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) - 2  # -2 or 0
    y = _uniform(n, generator) + row + torch.remainder(torch.floor(x), 2)  # shift up one cell in odd columns
    return _standardize(torch.stack([x, y], dim=-1), (0.0, 0.0), (4 / 3, 4 / 3))


TOY2D: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    "swiss_roll": swiss_roll,
    "eight_gaussians": eight_gaussians,
    "two_moons": two_moons,
    "checkerboard": checkerboard,
}


class Toy2DDataModule(SampledDataModule):
    """Fixed train / val / test draws from one of the 2-D toy distributions.

    Batches are plain (B, 2) float32 Tensors. See :class:`~diffkit.data._base.SampledDataModule`
    for the splits, seeding and shuffling.

    Args:
        name: which distribution: "swiss_roll", "eight_gaussians", "two_moons" or "checkerboard".
        num_train: number of training points, >= 1.
        num_val: number of validation (and test) points, >= 1.
        batch_size: points per batch, >= 1.
        seed: non-negative seed of the splits and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        ValueError: if ``name`` is unknown, or a size or seed is out of range.
        TypeError: if a size or seed is not an int.

    Example:
        >>> dm = Toy2DDataModule("two_moons", num_train=100, num_val=10, batch_size=32)
        >>> dm.setup()
        >>> tuple(next(iter(dm.train_dataloader())).shape)
        (32, 2)
    """

    def __init__(
        self,
        name: Toy2DName = "swiss_roll",
        num_train: int = 20000,
        num_val: int = 2000,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        if name not in TOY2D:
            raise ValueError(f"name: expected one of {sorted(TOY2D)}, got {name!r}")
        super().__init__(num_train, num_val, batch_size, seed, num_workers)
        self.name = name

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one example: (2,)."""
        return (2,)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, 2) float32 points of the chosen distribution."""
        return TOY2D[self.name](n, generator)

    def sample_metrics(self) -> MetricCollection:
        """The base module's MMD and sliced Wasserstein, plus torchmetrics Metrics that see blur, each
        updated with ``(samples, reference)``: k-NN precision / recall and density / coverage (k = 5),
        and for the sets with a known generating manifold the distance ratio to it (1 = as sharp as
        the data)."""
        metrics: dict[str, Metric] = {
            "precision": KNNPrecision(),
            "recall": KNNRecall(),
            "density": Density(),
            "coverage": Coverage(),
        }
        if self.name in MANIFOLDS:
            metrics["manifold_ratio"] = ManifoldDistanceRatio(self.name)
        collection = super().sample_metrics()
        collection.add_metrics(metrics)
        return collection
