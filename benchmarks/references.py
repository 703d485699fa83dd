"""True differential entropies of the 2-D benchmark data, in nats per dimension.

A model's expected NLL is at least the data's entropy, H(p) <= E_p[-log p_model(x)], so the NLL
bound minus the entropy is the sum of the model's KL to the data and the bound's own slack.

- ``mixture``: the data module's Monte Carlo estimate with the exact mixture density.
- ``eight_gaussians``: after standardization it is exactly a mixture of 8 isotropic Gaussians
  (centres R (cos 2 pi k / 8, sin 2 pi k / 8) / s, std sigma / s, s = sqrt(R^2 / 2 + sigma^2)), so
  the same estimate with :class:`diffkit.data.GaussianMixture`.
- ``swiss_roll``: raw x = c(u) + N(0, sigma^2 I), u ~ U[a, b], c(u) = (u cos u, u sin u); its
  density p(x) = E_u N(x; c(u), sigma^2 I) is a 1-D integral, evaluated on a fine midpoint grid in u
  (grid spacing in x far below sigma), and H is estimated by Monte Carlo. Standardizing by the
  exact per-coordinate std s_i (quadrature) shifts the entropy by -sum_i log s_i.
"""

from __future__ import annotations

import math

import torch
from scipy import integrate
from torch import Tensor

from diffkit.data import GaussianMixture, toy2d

__all__ = ["entropy_nats_per_dim", "eight_gaussians_mixture", "swiss_roll_entropy"]


def eight_gaussians_mixture() -> GaussianMixture:
    """The standardized eight-Gaussians distribution as an exact GaussianMixture."""
    radius, std = toy2d.EIGHT_GAUSSIANS_RADIUS, toy2d.EIGHT_GAUSSIANS_STD
    scale = math.sqrt(radius**2 / 2 + std**2)
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1) / scale  # (8, 2)
    return GaussianMixture(means, stds=std / scale)


def _swiss_roll_stds() -> tuple[float, float]:
    """Exact per-coordinate std of the raw swiss roll (quadrature over u, plus the noise)."""
    a, b = toy2d.SWISS_ROLL_TURNS

    def expect(f) -> float:
        return integrate.quad(f, a, b, limit=200)[0] / (b - a)

    stds = []
    for trig in (math.cos, math.sin):
        mean = expect(lambda u, trig=trig: u * trig(u))
        second = expect(lambda u, trig=trig: (u * trig(u)) ** 2)
        stds.append(math.sqrt(second - mean**2 + toy2d.SWISS_ROLL_NOISE**2))
    return stds[0], stds[1]


def _swiss_roll_log_density(x: Tensor, grid: int) -> Tensor:
    """log p_raw(x) = log mean_j N(x; c(u_j), sigma^2 I) over ``grid`` midpoints u_j: (n, 2) -> (n,)."""
    a, b = toy2d.SWISS_ROLL_TURNS
    sigma = toy2d.SWISS_ROLL_NOISE
    u = a + (b - a) * (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    curve = torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=-1)  # (grid, 2)
    out = []
    for chunk in x.split(2048):
        sq = torch.cdist(chunk, curve).pow(2)  # (chunk, grid)
        log_n = -sq / (2 * sigma**2) - math.log(2 * math.pi * sigma**2)
        out.append(torch.logsumexp(log_n, dim=-1) - math.log(grid))
    return torch.cat(out)


def swiss_roll_entropy(num_samples: int, seed: int, grid: int = 4000) -> float:
    """Differential entropy of the standardized swiss roll, nats (total over 2 dims), by Monte Carlo."""
    a, b = toy2d.SWISS_ROLL_TURNS
    gen = torch.Generator().manual_seed(seed)
    u = a + (b - a) * torch.rand(num_samples, generator=gen, dtype=torch.float64)
    noise = torch.randn(num_samples, 2, generator=gen, dtype=torch.float64)
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=-1) + toy2d.SWISS_ROLL_NOISE * noise  # (n, 2)
    h_raw = -_swiss_roll_log_density(x, grid).mean().item()
    return h_raw - sum(math.log(s) for s in _swiss_roll_stds())


def entropy_nats_per_dim(name: str, datamodule, num_samples: int, seed: int = 0) -> float:
    """True entropy per dimension (nats) of a benchmark data set.

    Args:
        name: "mixture", "eight_gaussians" or "swiss_roll".
        datamodule: the suite's data module (the mixture's carries its own estimate).
        num_samples: Monte Carlo draws for the eight-Gaussians and swiss-roll estimates.
        seed: seed of those draws.
    """
    if name == "mixture":
        return datamodule.true_entropy_nats_per_dim()
    if name == "eight_gaussians":
        return eight_gaussians_mixture().entropy(num_samples, seed).estimate / 2
    if name == "swiss_roll":
        return swiss_roll_entropy(num_samples, seed) / 2
    raise ValueError(f"name: no entropy reference for {name!r}")
