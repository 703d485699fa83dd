"""The loss-second-moment importance sampler of t: unbiased by enumeration, and it follows the losses."""

from __future__ import annotations

import pytest
import torch

from diffkit.resample import LossSecondMomentResampler


def test_weighted_estimate_is_unbiased_by_enumeration():
    T = 12
    r = LossSecondMomentResampler(T, history=3)
    g = torch.Generator().manual_seed(0)
    loss_of_t = torch.rand(T, generator=g, dtype=torch.float64) * torch.logspace(0, -3, T, dtype=torch.float64)
    for _ in range(4):  # warm up: 3 noisy losses per t
        t = torch.arange(1, T + 1)
        r.update(t, loss_of_t * (1 + 0.1 * torch.randn(T, generator=g, dtype=torch.float64)))
    assert r.warmed_up()
    p = r.probabilities()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12) and not torch.allclose(p, torch.full_like(p, 1 / T))
    # E_{t ~ p}[w(t) L(t)] = sum_t p(t) L(t) / (T p(t)) over every t, exactly the uniform average
    weights = 1.0 / (T * p)
    assert float((p * weights * loss_of_t).sum()) == pytest.approx(float(loss_of_t.mean()), rel=1e-12)
    # and the weights returned by sample() are these w(t)
    drawn = r.sample(500, torch.Generator().manual_seed(1))
    torch.testing.assert_close(drawn.weights.double(), weights[drawn.t - 1].float().double())
    assert int(drawn.t.min()) >= 1 and int(drawn.t.max()) <= T


def test_uniform_until_warm_and_follows_the_second_moment():
    r = LossSecondMomentResampler(4, history=2, uniform_prob=0.0 + 1e-9)
    torch.testing.assert_close(r.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    r.update(torch.tensor([1, 1, 2, 2, 3, 3, 4]), torch.tensor([3.0, 4.0, 1.0, 1.0, 0.0, 0.0, 2.0]))
    assert not r.warmed_up()
    r.update(torch.tensor([4, 4]), torch.tensor([2.0, 2.0]))  # t = 4 keeps its last two losses
    p = r.probabilities()
    want = torch.tensor([(12.5) ** 0.5, 1.0, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(p, want / want.sum(), atol=1e-8, rtol=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_steps"):
        LossSecondMomentResampler(0)
    with pytest.raises(ValueError, match="uniform_prob"):
        LossSecondMomentResampler(5, uniform_prob=0.0)


def test_module_trains_with_importance_sampling(tmp_path):
    import lightning.pytorch as pl

    from diffkit import DiffusionModule, GaussianProcess
    from diffkit.data import Toy2DDataModule
    from diffkit.models import MLPDenoiser

    with pytest.raises(ValueError, match="importance_sampling"):
        DiffusionModule(GaussianProcess(5), MLPDenoiser(2, 5, hidden=8, depth=1), "eps", importance_sampling=True)
    proc = GaussianProcess(5, reverse_variance="learned")
    model = DiffusionModule(
        proc,
        MLPDenoiser(2, 5, hidden=8, depth=1, learn_variance=True),
        "eps",
        loss="hybrid",
        importance_sampling=True,
        num_eval_samples=0,
    )
    dm = Toy2DDataModule("swiss_roll", num_train=256, num_val=32, batch_size=32)
    pl.Trainer(
        accelerator="cpu",
        max_steps=12,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    ).fit(model, dm)
    assert model.resampler.warmed_up()  # 12 steps x 32 draws filled 10 losses at each of the 5 t
    assert not torch.allclose(model.resampler.probabilities(), torch.full((5,), 0.2, dtype=torch.float64))
