"""scikit-learn's bundled handwritten digits (1,797 images, 8x8 pixels, 17 gray levels 0..16), no download.

Two views of the same pixels (Alpaydin & Kaynak 1998, UCI "optdigits", as shipped by
``sklearn.datasets.load_digits``):

- ``kind="gaussian"``: (B, 1, 8, 8) float32, level / 8 - 1 in [-1, 1], for a GaussianProcess;
- ``kind="categorical"``: (B, 8, 8) int64 levels in [0, 17), for a CategoricalProcess with 17 classes.

Splits are a seeded permutation cut by fractions (``diffkit.data._records``); ``labels=True`` yields
``(x0, cond)`` batches with the digit class 0..9 as ``cond``. Samples are written as an .npy of gray
levels 0..16 (Gaussian samples rounded) and drawn as a PNG grid (:class:`DigitsFormat`).
scikit-learn is an optional dependency (``pip install scikit-learn``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from diffkit._checks import check_positive_int
from diffkit.data._records import RecordDataModule, split_indices
from diffkit.formats import SampleFormat, register_format

__all__ = ["load_digit_images", "DigitsFormat", "DigitsDataModule", "LEVELS"]

LEVELS = 17  # gray levels 0..16
DigitsKind = Literal["gaussian", "categorical"]


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: ((N, 8, 8) int64 gray levels 0..16, (N,) int64 classes 0..9).

    Raises:
        ImportError: scikit-learn is not installed (the message says how to install it).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("DigitsDataModule needs scikit-learn: pip install scikit-learn") from err
    bunch = load_digits()
    return bunch.images.astype(np.int64), bunch.target.astype(np.int64)


def levels_from_gaussian(x: Tensor | np.ndarray) -> np.ndarray:
    """(B, 1, 8, 8) or (B, 8, 8) float in [-1, 1] -> (B, 8, 8) int64 levels round((x + 1) * 8), clipped to 0..16."""
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    x = x.reshape(len(x), 8, 8)
    return np.clip(np.rint((x + 1.0) * 8.0), 0, LEVELS - 1).astype(np.int64)


@register_format
@dataclasses.dataclass
class DigitsFormat(SampleFormat):
    """Digit samples -> (B, 8, 8) int64 gray levels 0..16, written as .npy and drawn as a PNG grid."""

    kind: ClassVar[str] = "digits"
    draws_samples: ClassVar[bool] = True
    pixel_kind: str = "gaussian"

    @property
    def suffix(self) -> str:
        return ".npy"

    def decode(self, samples: Tensor) -> np.ndarray:
        """(B, 1, 8, 8) float (Gaussian) or (B, 8, 8) int64 (categorical) -> (B, 8, 8) int64 levels."""
        if self.pixel_kind == "gaussian":
            return levels_from_gaussian(samples)
        return samples.detach().cpu().numpy().astype(np.int64).reshape(len(samples), 8, 8)

    def write(self, samples: Tensor, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self.decode(samples))
        return path

    def plot(self, samples: Tensor, path: str | Path, title: str = "") -> Path:
        """A square grid of up to 100 samples (white ink on black, as level / 16)."""
        return draw_digit_grid(self.decode(samples), path, title)


def draw_digit_grid(levels: np.ndarray, path: str | Path, title: str = "", max_images: int = 100) -> Path:
    """Draw (B, 8, 8) gray levels 0..16 as one PNG grid of up to ``max_images`` digits."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    levels = np.asarray(levels)[:max_images]
    cols = math.ceil(math.sqrt(len(levels)))
    rows = math.ceil(len(levels) / cols)
    canvas = np.zeros((rows * 9 + 1, cols * 9 + 1))
    for k, img in enumerate(levels):
        r, c = divmod(k, cols)
        canvas[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = img / (LEVELS - 1)
    fig, ax = plt.subplots(figsize=(0.5 * cols + 0.5, 0.5 * rows + 0.8))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


class DigitsDataModule(RecordDataModule):
    """scikit-learn's digits as Gaussian or categorical pixels (module docstring).

    Args:
        kind: "gaussian" ((B, 1, 8, 8) float32 in [-1, 1]) or "categorical" ((B, 8, 8) int64 in [0, 17)).
        val_fraction: fraction of the 1,797 images in the val split.
        test_fraction: fraction in the test split.
        batch_size: images per batch, >= 1.
        seed: non-negative seed of the split and the shuffling.
        labels: yield ``(x0, cond)`` with the digit class as ``cond`` (for conditional models).
        num_train: use only the first ``num_train`` images of the train split (None: all), for quick runs.
        num_val: use only the first ``num_val`` images of the val and test splits (None: all).
        num_workers: DataLoader worker processes, >= 0.

    Raises:
        ValueError: an unknown ``kind`` (the message lists the valid ones), bad fractions or sizes.
    """

    def __init__(
        self,
        kind: DigitsKind = "gaussian",
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 128,
        seed: int = 0,
        labels: bool = False,
        num_train: int | None = None,
        num_val: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(val_fraction, test_fraction, batch_size, seed, num_workers)
        for name, value in (("num_train", num_train), ("num_val", num_val)):
            if value is not None:
                check_positive_int(name, value)
        self.num_train, self.num_val = num_train, num_val
        if kind not in ("gaussian", "categorical"):
            raise ValueError(f"kind: unknown {kind!r}; expected one of ['categorical', 'gaussian']")
        self.kind = kind
        self.use_labels = labels

    def read_records(self) -> tuple[np.ndarray, np.ndarray | None]:
        images, targets = load_digit_images()
        return images, (targets if self.use_labels else None)

    def setup(self, stage: str | None = None) -> None:
        """Load and split once (the base's), then keep the first ``num_train`` / ``num_val`` images of each split."""
        if self._splits is not None:
            return
        super().setup(stage)
        for name, cap in (("train", self.num_train), ("val", self.num_val), ("test", self.num_val)):
            if cap is not None:
                self._splits[name] = self._splits[name][:cap]
                if self._cond is not None:
                    self._cond[name] = self._cond[name][:cap]

    def build_format(self, train: Sequence[Any]) -> DigitsFormat:
        return DigitsFormat(pixel_kind=self.kind)

    def encode(self, records: np.ndarray) -> Tensor:
        levels = torch.from_numpy(np.asarray(records, dtype=np.int64))  # (n, 8, 8)
        if self.kind == "categorical":
            return levels
        return (levels.to(torch.float32) / 8.0 - 1.0).unsqueeze(1)  # (n, 1, 8, 8)

    def split_levels(self, name: str) -> np.ndarray:
        """(n, 8, 8) int64 gray levels of a split (whatever ``kind``), for metrics."""
        return self.sample_format.decode(self.split(name))

    def split_targets(self, name: str) -> np.ndarray:
        """(n,) int64 digit classes of a split (whether or not ``labels`` is on)."""
        images, targets = load_digit_images()
        cap = self.num_train if name == "train" else self.num_val
        return targets[split_indices(len(images), self.val_fraction, self.test_fraction, self.seed)[name]][:cap]
