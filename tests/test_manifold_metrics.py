"""k-NN precision / recall, density / coverage and the manifold distance ratio against brute-force
references written plainly with Python loops over small point sets."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.data.toy2d import eight_gaussians, swiss_roll, two_moons
from diffkit.metrics import metric_floor
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


def _dist(a, b):
    return math.dist(a, b)


def _radius(points, i, k):
    d = sorted(_dist(points[i], points[j]) for j in range(len(points)) if j != i)
    return d[k - 1]


def _brute(real, fake, k):
    real, fake = real.tolist(), fake.tolist()
    r_real = [_radius(real, i, k) for i in range(len(real))]
    r_fake = [_radius(fake, j, k) for j in range(len(fake))]
    precision = sum(any(_dist(f, r) <= r_real[i] for i, r in enumerate(real)) for f in fake) / len(fake)
    recall = sum(any(_dist(r, f) <= r_fake[j] for j, f in enumerate(fake)) for r in real) / len(real)
    dens = sum(sum(_dist(f, r) <= r_real[i] for i, r in enumerate(real)) for f in fake) / (k * len(fake))
    cov = sum(any(_dist(f, r) <= r_real[i] for f in fake) for i, r in enumerate(real)) / len(real)
    return precision, recall, dens, cov


@pytest.mark.parametrize("k", [1, 3])
def test_knn_metrics_match_brute_force(k):
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    fake = 1.5 * torch.randn(30, 2, generator=gen, dtype=torch.float64) + 0.5
    want = _brute(real, fake, k)
    got = (knn_precision(fake, real, k), knn_recall(fake, real, k), density(fake, real, k), coverage(fake, real, k))
    for g, w in zip(got, want, strict=True):
        assert float(g) == pytest.approx(w, abs=1e-12)
    # a spread-out model has lower precision than recall, and the values are not trivial
    assert 0 < want[0] < 1 and 0 < want[3] < 1


def test_metric_classes_pool_updates_like_the_functions():
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(50, 3, generator=gen)
    fake = torch.randn(60, 3, generator=gen) * 0.5
    for cls, fn in [(KNNPrecision, knn_precision), (KNNRecall, knn_recall), (Density, density), (Coverage, coverage)]:
        m = cls(k=4)
        m.update(fake[:25], real[:20])
        m.update(fake[25:], real[20:])
        assert float(m.compute()) == pytest.approx(float(fn(fake, real, 4)), abs=1e-12)


def test_perfect_copy_scores_one():
    real = torch.randn(30, 2, generator=torch.Generator().manual_seed(2))
    assert float(knn_precision(real, real, 3)) == 1.0
    assert float(knn_recall(real, real, 3)) == 1.0
    assert float(coverage(real, real, 3)) == 1.0


def _brute_curve_distance(points, curve):
    return [min(_dist(p, c) for c in curve) for p in points.tolist()]


def test_swiss_roll_distance_matches_brute_force_on_the_curve():
    from diffkit.metrics.manifold import manifold_points

    pts = swiss_roll(20, torch.Generator().manual_seed(3))
    dense = manifold_points("swiss_roll").tolist()
    want = _brute_curve_distance(pts, dense[::5])  # every 5th point: still far finer than the noise
    got = manifold_distance(pts, "swiss_roll").tolist()
    for g, w in zip(got, want, strict=True):
        assert g <= w + 1e-12 and w - g < 1e-3


def test_eight_gaussians_distance_is_to_the_nearest_centre():
    s = math.sqrt(2.0**2 / 2 + 0.2**2)  # std of the raw data: sqrt(R^2 / 2 + sigma^2)
    centres = [(2 * math.cos(2 * math.pi * k / 8) / s, 2 * math.sin(2 * math.pi * k / 8) / s) for k in range(8)]
    pts = torch.tensor([[0.0, 0.0], [1.5, 0.1], [-1.0, -1.0]])
    want = _brute_curve_distance(pts, centres)
    assert manifold_distance(pts, "eight_gaussians").tolist() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(
    "name,sampler", [("swiss_roll", swiss_roll), ("eight_gaussians", eight_gaussians), ("two_moons", two_moons)]
)
def test_ratio_is_one_on_real_data_and_sees_blur(name, sampler):
    real = sampler(2000, torch.Generator().manual_seed(4))
    fresh = sampler(2000, torch.Generator().manual_seed(5))
    metric = ManifoldDistanceRatio(name)
    floor = float(metric_floor(metric, lambda n, seed: sampler(n, torch.Generator().manual_seed(10 + seed)), 2000))
    assert abs(floor - 1) < 0.08
    blurred = fresh + 0.1 * torch.randn(fresh.shape, generator=torch.Generator().manual_seed(6))
    metric.update(blurred, real)
    assert float(metric.compute()) > 1.15  # 0.1 extra noise (standardized units) is plain to see
    # the RBF-MMD style metrics cannot be fooled either: precision drops
    assert float(knn_precision(blurred, real)) < float(knn_precision(fresh, real))


def test_bad_inputs():
    with pytest.raises(ValueError, match="name"):
        ManifoldDistanceRatio("checkerboard")
    with pytest.raises(ValueError, match="k"):
        KNNPrecision(k=0)
    with pytest.raises(ValueError, match="points"):
        manifold_distance(torch.zeros(3, 3), "swiss_roll")
    with pytest.raises(ValueError, match="samples"):
        knn_precision(torch.zeros(3, 2), torch.zeros(10, 2), k=5)


def test_toy_data_module_supplies_the_metrics_and_validation_logs_them(tmp_path):
    import lightning.pytorch as pl

    from diffkit import DiffusionModule
    from diffkit.data import Toy2DDataModule
    from diffkit.models import MLPDenoiser
    from diffkit.processes import GaussianProcess

    assert "manifold_ratio" not in Toy2DDataModule("checkerboard").sample_metrics()
    dm = Toy2DDataModule("swiss_roll", num_train=64, num_val=64, batch_size=32)
    assert set(dm.sample_metrics()) == {
        "mmd",
        "swd",
        "precision",
        "recall",
        "density",
        "coverage",
        "manifold_ratio",
    }  # base + blur metrics
    model = DiffusionModule(GaussianProcess(10), MLPDenoiser(2, 10, hidden=16, depth=1), "eps", num_eval_samples=32)
    tr = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    tr.fit(model, dm)
    logged = tr.callback_metrics
    # an untrained model is far from the curve; fresh data sit at the floor, ~1
    assert float(logged["val/manifold_ratio"]) > 2 * float(logged["val/manifold_ratio_floor"])
    assert abs(float(logged["val/manifold_ratio_floor"]) - 1) < 0.5
    assert 0 <= float(logged["val/precision"]) <= 1
