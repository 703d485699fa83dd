"""Sample quality of 8x8 digits, seen through a digit classifier trained on the real training split.

A small MLP (64 -> 256 -> 128 -> 10, ReLU) is trained on the real training digits
(:func:`train_digit_classifier`); its 128-wide penultimate layer is the feature space. For a set of
images (gray levels 0..16) against real reference images:

    Frechet distance   FD = |mu_s - mu_r|^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2))
                       (Heusel et al. 2017, "GANs trained by a two time-scale update rule ...", eq. 6,
                       here in the classifier's feature space instead of Inception's)
    predictive entropy mean over images of H(p(y | x)) in nats: low when each image looks like one digit
    class entropy      H(mean over images of p(y | x)) in nats (at most ln 10 = 2.303): high when all
                       digits are drawn in balance
    coverage           number of classes that are the arg max for at least 1% of the images (0..10)

Each figure means something only next to the same figure for held-out real digits (the floor):
:func:`digit_quality` computes one set, ``benchmarks/digits.py`` prints both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "DigitClassifier",
    "train_digit_classifier",
    "frechet_distance",
    "DigitScores",
    "digit_quality",
    "DigitQuality",
]


class DigitClassifier(nn.Module):
    """MLP on 8x8 gray levels / 16: 64 -> 256 -> 128 (features) -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    @staticmethod
    def _inputs(levels: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(np.asarray(levels), dtype=torch.float32)
        if x.shape[-2:] != (8, 8) and x.shape[-1] != 64:
            raise ValueError(f"levels: expected (B, 8, 8) or (B, 64) gray levels, got {tuple(x.shape)}")
        return x.reshape(len(x), 64) / 16.0

    def features(self, levels: Tensor | np.ndarray) -> Tensor:
        """(B, 8, 8) levels 0..16 -> (B, 128) float32 penultimate features."""
        return self.body(self._inputs(levels))

    def forward(self, levels: Tensor | np.ndarray) -> Tensor:
        """(B, 8, 8) levels 0..16 -> (B, 10) logits."""
        return self.head(self.features(levels))


def train_digit_classifier(levels: np.ndarray, targets: np.ndarray, seed: int = 0, steps: int = 600) -> DigitClassifier:
    """Full-batch AdamW (lr 3e-3, weight decay 1e-4) on the real training digits; deterministic given ``seed``.

    Args:
        levels: (N, 8, 8) int gray levels 0..16.
        targets: (N,) int classes 0..9.
        seed: seeds the initialization.
        steps: optimizer steps.

    Returns:
        The classifier, in eval mode.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = model._inputs(levels), torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model.head(model.body(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """FD between Gaussians fitted to two feature sets (module docstring), in float64.

    Args:
        a: (N, D) features, N >= 2.
        b: (M, D) features, M >= 2.
    """
    a, b = a.double().cpu().numpy(), b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = (
        np.atleast_2d(np.cov(a, rowvar=False)),
        np.atleast_2d(np.cov(b, rowvar=False)),
    )  # (D, D), also for D = 1
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root))


class DigitScores(NamedTuple):
    """Figures of one set of digits (module docstring)."""

    frechet_distance: float
    predictive_entropy: float
    class_entropy: float
    coverage: int


def _scores(classifier: DigitClassifier, features: Tensor, reference_features: Tensor) -> DigitScores:
    probs = classifier.head(features).softmax(-1).double()  # (N, 10)
    per_image = -torch.special.xlogy(probs, probs).sum(-1).mean()
    marginal = probs.mean(0)
    share = torch.bincount(probs.argmax(-1), minlength=10).double() / len(probs)
    return DigitScores(
        frechet_distance(features, reference_features),
        float(per_image),
        float(-torch.special.xlogy(marginal, marginal).sum()),
        int((share >= 0.01).sum()),
    )


@torch.no_grad()
def digit_quality(
    classifier: DigitClassifier, levels: Tensor | np.ndarray, reference: Tensor | np.ndarray
) -> DigitScores:
    """The figures of ``levels`` against real ``reference`` digits (both (B, 8, 8) gray levels 0..16)."""
    return _scores(classifier, classifier.features(levels), classifier.features(reference))


class DigitQuality(Metric):
    """torchmetrics wrapper of :func:`digit_quality`: ``update(levels)`` adds generated digits,
    ``compute()`` scores them against the reference digits given at construction.

    Args:
        classifier: a trained :class:`DigitClassifier`.
        reference: (M, 8, 8) real gray levels (e.g. the training split).
    """

    full_state_update = False

    def __init__(self, classifier: DigitClassifier, reference: Tensor | np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier.eval()
        self.reference = torch.as_tensor(np.asarray(reference))
        self.add_state("features", default=[], dist_reduce_fx="cat")

    @torch.no_grad()
    def update(self, levels: Tensor | np.ndarray) -> None:
        """Add (B, 8, 8) generated gray levels 0..16."""
        self.features.append(self.classifier.features(levels))

    @torch.no_grad()
    def compute(self) -> DigitScores:
        return _scores(self.classifier, dim_zero_cat(self.features), self.classifier.features(self.reference))
