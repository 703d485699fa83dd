"""Labelled toy data for conditional models: batches ``(x0, cond)`` (docs/conditioning.md).

:func:`eight_gaussians_labeled` draws the eight-Gaussians distribution of
:func:`diffkit.data.toy2d.eight_gaussians` together with each point's mode k in 0..7, and
:class:`LabeledEightGaussiansDataModule` serves it as ``(x0 (B, 2) float32, cond (B,) int64)``
pairs, the batch a ``DiffusionModule`` with a class-conditional denoiser trains on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

from diffkit._checks import check_positive_int
from diffkit.data._base import SampledDataModule
from diffkit.data.toy2d import EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD

__all__ = ["eight_gaussians_labeled", "eight_gaussians_centers", "LabeledEightGaussiansDataModule"]

_SCALE = math.sqrt(EIGHT_GAUSSIANS_RADIUS**2 / 2 + EIGHT_GAUSSIANS_STD**2)  # the exact std per coordinate


def eight_gaussians_centers() -> Tensor:
    """(8, 2) float32 mode centers of the standardized eight Gaussians, mode k at angle 2 pi k / 8."""
    angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], -1) / _SCALE).float()


def eight_gaussians_labeled(n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """n points of the standardized eight Gaussians and their modes.

    Raw: k ~ U{0..7}, x = R (cos 2 pi k / 8, sin 2 pi k / 8) + N(0, 0.2^2 I) with R = 2, divided by
    the exact std sqrt(R^2 / 2 + 0.2^2) (as :func:`diffkit.data.toy2d.eight_gaussians`).

    Returns:
        (x (n, 2) float32, k (n,) int64).
    """
    check_positive_int("n", n)
    k = torch.randint(0, 8, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64) * (EIGHT_GAUSSIANS_STD / _SCALE)
    return (eight_gaussians_centers().double()[k] + noise).float(), k


def _as_pair(items: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    batch = default_collate(items)
    return batch["x0"], batch["cond"]


class LabeledEightGaussiansDataModule(SampledDataModule):
    """Eight Gaussians with the mode as the condition: batches ``(x0 (B, 2), cond (B,) int64)``.

    Args:
        num_train, num_val, batch_size, seed, num_workers: as
            :class:`~diffkit.data._base.SampledDataModule` (fixed splits, resumable shuffling).

    Example:
        >>> dm = LabeledEightGaussiansDataModule(num_train=64, num_val=8, batch_size=16)
        >>> x0, cond = next(iter(dm.train_dataloader()))
        >>> tuple(x0.shape), cond.dtype
        ((16, 2), torch.int64)
    """

    def __init__(
        self, num_train: int = 20000, num_val: int = 2000, batch_size: int = 256, seed: int = 0, num_workers: int = 0
    ) -> None:
        super().__init__(num_train, num_val, batch_size, seed, num_workers)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one example: (2,)."""
        return (2,)

    def draw(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """{"x0": (n, 2) float32, "cond": (n,) int64}; the loaders turn rows into (x0, cond) pairs."""
        x, k = eight_gaussians_labeled(n, generator)
        return {"x0": x, "cond": k}

    def sample_reference(self, n: int, seed: int) -> Any:
        return super().sample_reference(n, seed)["x0"]

    def sample_metrics(self):
        """The default metrics of the points alone (MMD, sliced Wasserstein): validation samples
        the model unconditionally (the null condition) and compares the points, not the labels."""
        from diffkit.metrics.quality import default_sample_metrics

        return default_sample_metrics(eight_gaussians_labeled(2, torch.Generator().manual_seed(0))[0])

    def train_dataloader(self):
        loader = super().train_dataloader()
        loader.collate_fn = _as_pair
        return loader

    def _loader(self, name: str, shuffle: bool, generator: torch.Generator | None = None):
        loader = super()._loader(name, shuffle, generator)
        loader.collate_fn = _as_pair
        return loader
