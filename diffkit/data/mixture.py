"""Gaussian mixtures with an exact density, and a data module over a seeded well-separated one.

    p(x) = sum_m w_m N(x; mu_m, diag(sigma_m^2))

A mixture's log density is exact (a logsumexp over components), so a model's likelihood can be
compared with the true one. Its entropy has no closed form; :meth:`GaussianMixture.entropy`
estimates H = -E[log p(X)] by Monte Carlo with the exact log density and reports the standard error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from diffkit._checks import check_non_negative_int, check_positive_int
from diffkit.data._base import SampledDataModule, seeded_generator, stream_seed

__all__ = ["EntropyEstimate", "GaussianMixture", "well_separated_mixture", "GaussianMixtureDataModule"]

_LOG_2PI = math.log(2 * math.pi)


class EntropyEstimate(NamedTuple):
    """A Monte Carlo entropy estimate, in nats.

    Attributes:
        estimate: -mean(log p(x_i)) over the samples x_i ~ p.
        stderr: standard error of the estimate, std(log p(x_i)) / sqrt(n).
    """

    estimate: float
    stderr: float


def _as_float64(name: str, value: Tensor | float | list) -> Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return tensor


class GaussianMixture:
    """A mixture of M axis-aligned Gaussians in D dimensions; parameters held in float64.

    Args:
        means: (M, D) float component means mu_m.
        stds: component standard deviations: a float (shared, isotropic), (M,) (isotropic per
            component) or (M, D) (diagonal); all > 0.
        weights: (M,) mixture weights w_m, >= 0 and summing to 1; None for uniform weights.

    Raises:
        ValueError: if a shape does not match, a std is not positive, or the weights are not a
            probability vector.

    Example:
        >>> gmm = GaussianMixture(torch.tensor([[-3.0], [3.0]]), stds=1.0)
        >>> round(gmm.log_prob(torch.tensor([[-3.0]])).item(), 4)  # log(0.5 N(0; 0, 1)), tail of +3 ~ 0
        -1.6121
    """

    def __init__(self, means: Tensor, stds: Tensor | float = 1.0, weights: Tensor | None = None) -> None:
        means = _as_float64("means", means)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means: expected shape (M, D) with M, D >= 1, got {tuple(means.shape)}")
        num_components, dim = means.shape
        stds = _as_float64("stds", stds)
        if stds.ndim > 2 or (stds.ndim >= 1 and stds.shape != means.shape[: stds.ndim]):
            raise ValueError(
                f"stds: expected shape (), ({num_components},) or {tuple(means.shape)}, got {tuple(stds.shape)}"
            )
        if not (stds > 0).all():
            raise ValueError(f"stds: expected values > 0, got a minimum of {stds.min().item()}")
        stds = stds.reshape(-1, 1) if stds.ndim == 1 else stds
        if weights is None:
            weights = torch.full((num_components,), 1.0 / num_components, dtype=torch.float64)
        weights = _as_float64("weights", weights)
        if weights.shape != (num_components,):
            raise ValueError(f"weights: expected shape ({num_components},), got {tuple(weights.shape)}")
        if (weights < 0).any() or abs(weights.sum().item() - 1) > 1e-6:
            raise ValueError(f"weights: expected values >= 0 summing to 1, got {weights.tolist()}")
        self.means = means
        self.stds = stds.expand(num_components, dim).clone()  # (M, D)
        self.weights = weights / weights.sum()  # exact normalization after the 1e-6 check

    @property
    def num_components(self) -> int:
        """M, the number of components."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """D, the dimension of the data."""
        return self.means.shape[1]

    def mean(self) -> Tensor:
        """(D,) float64 exact mean sum_m w_m mu_m."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """(D, D) float64 exact covariance sum_m w_m (diag(sigma_m^2) + mu_m mu_m^T) - mean mean^T."""
        second = torch.einsum("m,md,me->de", self.weights, self.means, self.means)  # (D, D)
        second = second + torch.diag(self.weights @ self.stds**2)
        mean = self.mean()
        return second - torch.outer(mean, mean)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n points: a component m ~ Cat(w), then x ~ N(mu_m, diag(sigma_m^2)).

        Args:
            n: number of points, >= 1.
            generator: torch random generator (None: torch's default generator).

        Returns:
            (n, D) float32 points.
        """
        return self._sample64(n, generator).to(torch.float32)

    def _sample64(self, n: int, generator: torch.Generator | None) -> Tensor:
        check_positive_int("n", n)
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[component] + self.stds[component] * noise

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density, log sum_m w_m N(x; mu_m, diag(sigma_m^2)), by logsumexp.

        Args:
            x: (..., D) float points.

        Returns:
            (...) float64 log densities, in nats.

        Raises:
            TypeError: if ``x`` is not a floating-point Tensor.
            ValueError: if its last dim is not D.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x: expected a float Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (..., {self.dim}), got {tuple(x.shape)}")
        z = (x.to(torch.float64).unsqueeze(-2) - self.means) / self.stds  # (..., M, D)
        log_norm = -0.5 * self.dim * _LOG_2PI - self.stds.log().sum(-1)  # (M,)
        log_components = -0.5 * (z**2).sum(-1) + log_norm + self.weights.log()  # (..., M)
        return torch.logsumexp(log_components, dim=-1)

    def entropy(self, num_samples: int = 200_000, seed: int = 0) -> EntropyEstimate:
        """Monte Carlo estimate of the differential entropy H = -E[log p(X)], X ~ p, in nats.

        A Gaussian mixture's entropy has no closed form; this averages the exact log density over
        ``num_samples`` draws, so the estimate is unbiased with the reported standard error.

        Args:
            num_samples: number of draws, >= 2.
            seed: non-negative seed of the draws.

        Returns:
            EntropyEstimate(estimate, stderr), both in nats (total over the D dimensions).
        """
        check_positive_int("num_samples", num_samples)
        if num_samples < 2:
            raise ValueError(f"num_samples: expected an int >= 2 (for a standard error), got {num_samples}")
        check_non_negative_int("seed", seed)
        log_p = self.log_prob(self._sample64(num_samples, seeded_generator(seed)))  # (num_samples,)
        return EntropyEstimate(-log_p.mean().item(), log_p.std().item() / math.sqrt(num_samples))


def _separated_points(num_points: int, dim: int, min_distance: float, rng: np.random.Generator) -> np.ndarray:
    """Random sequential addition: uniform candidates in a cube, kept if >= min_distance from all kept.

    The cube's side, 2 * min_distance * ceil(num_points ** (1 / dim)), leaves room for several
    times ``num_points`` such points, so a jam is unlikely; 1000 candidates per point are tried.
    """
    side = 2 * min_distance * math.ceil(num_points ** (1 / dim))
    points = np.empty((0, dim))
    for candidate in rng.uniform(0, side, size=(1000 * num_points, dim)):
        if len(points) == 0 or np.linalg.norm(points - candidate, axis=1).min() >= min_distance:
            points = np.vstack([points, candidate])
            if len(points) == num_points:
                return points
    raise RuntimeError(f"internal: random sequential addition jammed placing {num_points} points in {dim} dims")


def well_separated_mixture(num_components: int, dim: int, separation: float, seed: int) -> GaussianMixture:
    """An equally weighted isotropic mixture with means at least ``separation`` stds apart.

    Means are placed at random (seeded) with pairwise distances >= separation, all components
    have std 1, and then everything is shifted and scaled so the mixture has mean 0 and average
    per-coordinate variance 1 (trace(Cov) = D). Scaling keeps the separation in units of std.

    Args:
        num_components: M, >= 1.
        dim: D, >= 1.
        separation: minimum distance between means in component stds, > 0.
        seed: non-negative seed of the placement.

    Returns:
        The GaussianMixture.
    """
    means = torch.from_numpy(_separated_points(num_components, dim, separation, np.random.default_rng(seed)))
    means = means - means.mean(0)
    scale = math.sqrt(dim / (means.pow(2).sum(-1).mean().item() + dim))  # total variance -> D
    return GaussianMixture(means * scale, stds=scale)


class GaussianMixtureDataModule(SampledDataModule):
    """Fixed train / val / test draws from a seeded, well-separated Gaussian mixture.

    The default is a 2-D mixture of 4 equally weighted components whose means are at least 8
    component stds apart, standardized to mean 0 and average variance 1 (see
    :func:`well_separated_mixture`). ``seed`` fixes both the mixture and the splits. Batches are
    plain (B, D) float32 Tensors.

    Args:
        dim: D, the data dimension, >= 1.
        num_components: M, >= 1.
        separation: minimum distance between component means, in component stds, > 0.
        num_train: number of training points, >= 1.
        num_val: number of validation (and test) points, >= 1.
        batch_size: points per batch, >= 1.
        seed: non-negative seed of the mixture, the splits and the shuffling.
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        TypeError: if a size or seed is not an int.
        ValueError: if a size, ``separation`` or ``seed`` is out of range.
    """

    def __init__(
        self,
        dim: int = 2,
        num_components: int = 4,
        separation: float = 8.0,
        num_train: int = 20000,
        num_val: int = 2000,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(num_train, num_val, batch_size, seed, num_workers)
        check_positive_int("dim", dim)
        check_positive_int("num_components", num_components)
        if not separation > 0:
            raise ValueError(f"separation: expected a value > 0 (in component stds), got {separation}")
        self.mixture = well_separated_mixture(num_components, dim, float(separation), stream_seed(seed, "structure"))
        self._entropy: EntropyEstimate | None = None

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one example: (D,)."""
        return (self.mixture.dim,)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, D) float32 points of the mixture."""
        return self.mixture.sample(n, generator)

    def true_entropy_nats_per_dim(self) -> float:
        """The mixture's entropy divided by D, in nats: a floor for a model's NLL per dim.

        A Monte Carlo estimate (200,000 draws, computed once); its standard error, from
        ``self.mixture.entropy()``, is typically around 1e-3 nats.
        """
        if self._entropy is None:
            self._entropy = self.mixture.entropy(seed=stream_seed(self.seed, "structure"))
        return self._entropy.estimate / self.mixture.dim
