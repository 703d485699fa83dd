"""Sinusoidal time embeddings (Vaswani et al. 2017 sec. 3.5, as used by DDPM, Ho et al. 2020).

Every denoiser sees time as the fraction t / T in [0, 1], never as the raw integer step, so a model
trained with one number of steps T stays sensible when sampled with another. Component k of the
embedding of a fraction u is

    cos(TIME_SCALE * u * f_k)  for k < dim // 2,   sin(TIME_SCALE * u * f_{k - dim // 2}) after,
    f_k = max_period^(-k / (dim // 2)),

so the frequencies run from 1 down to about 1 / max_period (improved-diffusion's layout: cosines
first, then sines; an odd ``dim`` gets one trailing zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffkit._checks import check_float, check_positive_int

__all__ = ["TIME_SCALE", "timestep_embedding", "sinusoidal_frequencies", "SinusoidalEmbedding", "TimeEmbedding"]

#: What t / T is multiplied by before the sinusoid. DDPM fed the integer step t in 0..1000
#: straight in; with frequencies between 1 and 1 / max_period, an argument in [0, 1] would turn all
#: but the few highest-frequency components by less than one radian, so most of the embedding
#: would be constant. Scaling the fraction by 1000 restores DDPM's phase range for any T.
TIME_SCALE = 1000.0


def sinusoidal_frequencies(dim: int, max_period: float = 10000.0) -> Tensor:
    """The frequencies f_k = max_period^(-k / half), k = 0..half-1, half = dim // 2.

    Args:
        dim: embedding width (>= 1).
        max_period: the longest period, 1 / f for the lowest frequency in the limit of large dim.

    Returns:
        (dim // 2,) float64 frequencies, decreasing from 1.
    """
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)


def _sinusoid(angles: Tensor, dim: int) -> Tensor:
    """[cos(angles), sin(angles)] padded with one zero column when ``dim`` is odd: (B, half) -> (B, dim)."""
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))  # (B, dim)
    return emb


def timestep_embedding(t_frac: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of the time fraction u = t / T (module docstring for the formula).

    Args:
        t_frac: (B,) float time fractions, nominally in [0, 1] (0 is data, 1 the prior).
        dim: embedding width (>= 1).
        max_period: controls the lowest frequency, about 1 / max_period.

    Returns:
        (B, dim) embedding, same float dtype and device as ``t_frac``.

    Raises:
        TypeError: if ``t_frac`` is not a float Tensor.
        ValueError: if ``t_frac`` is not 1-D or ``dim`` is not positive.
    """
    check_float("t_frac", t_frac)
    if t_frac.ndim != 1:
        raise ValueError(f"t_frac: expected shape (B,), got {tuple(t_frac.shape)}")
    check_positive_int("dim", dim)
    freqs = sinusoidal_frequencies(dim, max_period).to(device=t_frac.device, dtype=t_frac.dtype)
    angles = (TIME_SCALE * t_frac)[:, None] * freqs  # (B, half)
    return _sinusoid(angles, dim)


class SinusoidalEmbedding(nn.Module):
    """``timestep_embedding(t / T, dim)`` for integer steps, with its frequency table built once.

    The table TIME_SCALE / T * f_k is a non-persistent buffer (derived from the hyperparameters),
    so a forward pass is one multiply, a cos, a sin and a concatenation. Checking ``t`` is the
    caller's job (the denoiser's public forward).

    Args:
        num_steps: T, the number of diffusion steps.
        dim: embedding width (>= 1).
        max_period: as in ``timestep_embedding``.
    """

    def __init__(self, num_steps: int, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        check_positive_int("num_steps", num_steps)
        check_positive_int("dim", dim)
        self.num_steps = num_steps
        self.dim = dim
        freqs = TIME_SCALE / num_steps * sinusoidal_frequencies(dim, max_period)
        self.register_buffer("freqs", freqs.to(torch.float32), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """Embed integer steps.

        Args:
            t: (B,) int64 steps in 0..T.

        Returns:
            (B, dim) float embedding in the buffer's dtype.
        """
        angles = t[:, None] * self.freqs  # (B, half)
        return _sinusoid(angles, self.dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t / T followed by Linear -> SiLU -> Linear (DDPM's time MLP).

    Args:
        num_steps: T, the number of diffusion steps.
        dim: output width.
        sinusoidal_dim: width of the sinusoidal features (defaults to ``dim``).
        max_period: as in ``timestep_embedding``.
    """

    def __init__(
        self, num_steps: int, dim: int, sinusoidal_dim: int | None = None, max_period: float = 10000.0
    ) -> None:
        super().__init__()
        sinusoidal_dim = dim if sinusoidal_dim is None else sinusoidal_dim
        self.sinusoid = SinusoidalEmbedding(num_steps, sinusoidal_dim, max_period)
        self.mlp = nn.Sequential(nn.Linear(sinusoidal_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """Embed integer steps.

        Args:
            t: (B,) int64 steps in 0..T.

        Returns:
            (B, dim) float embedding.
        """
        return self.mlp(self.sinusoid(t))
