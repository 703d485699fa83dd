"""scikit-learn's digits as Gaussian and categorical pixels, the U-Net denoiser and the digit metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from diffkit.data import DigitsDataModule  # noqa: E402
from diffkit.data.digits import DigitsFormat, load_digit_images  # noqa: E402
from diffkit.metrics.digits import DigitClassifier, DigitQuality, digit_quality, frechet_distance  # noqa: E402
from diffkit.models import UNet  # noqa: E402


def test_digits_views_and_level_round_trip(tmp_path) -> None:
    images, targets = load_digit_images()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    g, c = DigitsDataModule("gaussian"), DigitsDataModule("categorical")
    xg, xc = g.split("train"), c.split("train")
    assert xg.shape == (1258, 1, 8, 8) and xg.dtype == torch.float32 and xg.min() >= -1 and xg.max() <= 1
    assert xc.shape == (1258, 8, 8) and xc.dtype == torch.int64
    # both views are the same images, and decoding gives the gray levels back exactly
    np.testing.assert_array_equal(g.sample_format.decode(xg), xc.numpy())
    out = DigitsFormat(pixel_kind="gaussian").write(xg[:5], tmp_path / "d.npy")
    np.testing.assert_array_equal(np.load(out), xc[:5].numpy())
    assert DigitsFormat().plot(xg[:10], tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    # the split is a partition of the 1,797 images, and targets follow their images
    sizes = [len(c.split(k)) for k in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes == [1258, 180, 359]
    first = c.split_levels("test")[0]
    matches = np.flatnonzero((images == first).all(axis=(1, 2)))
    assert c.split_targets("test")[0] in targets[matches]


def test_digits_labels_and_caps() -> None:
    dm = DigitsDataModule("categorical", labels=True, num_train=40, num_val=10, batch_size=8)
    x0, cond = next(iter(dm.train_dataloader()))
    assert x0.shape == (8, 8, 8) and cond.shape == (8,) and len(dm.split("train")) == 40 and len(dm.split("test")) == 10
    assert np.array_equal(dm.labels("train").numpy(), dm.split_targets("train"))  # classes 0..9 are their own ids
    with pytest.raises(ValueError, match="kind: unknown 'binary'"):
        DigitsDataModule("binary")


def test_unet_layouts_and_learning() -> None:
    torch.manual_seed(0)
    t = torch.tensor([1, 50, 100])
    net = UNet(num_steps=100, channels=(8, 16), time_dim=16)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(net(x, t), torch.zeros(3, 1, 8, 8))  # zero-initialized output layer
    cat = UNet(num_steps=100, num_states=18, num_outputs=17, channels=(8, 16, 16), time_dim=16)
    assert cat(torch.randint(0, 18, (3, 8, 8)), t).shape == (3, 8, 8, 17)
    with pytest.raises(TypeError, match=r"\(B, H, W\) int64"):
        cat(torch.randn(3, 8, 8), t)
    with pytest.raises(ValueError, match="divisible by 4"):
        cat(torch.randint(0, 18, (3, 6, 6)), t)
    # a few steps fit a fixed target: the output depends on x and t, and gradients reach every layer
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    target = torch.sin(x * 3) + t.view(3, 1, 1, 1) / 100
    first = None
    for _ in range(60):
        loss = (net(x, t) - target).pow(2).mean()
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    assert all(p.grad is not None for p in net.parameters())


def test_frechet_distance_against_closed_forms() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    b = 2.0 + 3.0 * torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    # 1-D: (mu_a - mu_b)^2 + (s_a - s_b)^2 with the sample moments (unbiased variances)
    expected = (a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-6)
    # diagonal covariances: sum over dims
    c = torch.randn(3000, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    d = torch.randn(3000, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.5, 1.0, 0.5]) + 1
    assert frechet_distance(c, c) == pytest.approx(0.0, abs=1e-6)
    # independent covariances: close to the per-dimension sum of (mu diff)^2 + (s diff)^2 of the sample
    # moments (the sample's small off-diagonal covariances make the only difference)
    per_dim = ((c.mean(0) - d.mean(0)) ** 2).sum() + ((c.std(0) - d.std(0)) ** 2).sum()
    assert frechet_distance(c, d) == pytest.approx(float(per_dim), abs=0.01)


def test_digit_quality_functional_and_metric_agree() -> None:
    dm = DigitsDataModule("categorical")
    train, test = dm.split_levels("train")[:300], dm.split_levels("test")[:120]
    torch.manual_seed(0)
    clf = DigitClassifier().eval()
    direct = digit_quality(clf, test, train)
    metric = DigitQuality(clf, train)
    metric.update(test[:50])
    metric.update(test[50:])
    assert metric.compute() == direct
    assert 0 <= direct.coverage <= 10 and 0 <= direct.class_entropy <= np.log(10) + 1e-9
    noise = np.random.default_rng(0).integers(0, 17, (120, 8, 8))
    assert digit_quality(clf, noise, train).frechet_distance > direct.frechet_distance
