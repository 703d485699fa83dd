"""DiffusionModule used directly (no CLI): data-derived state, EMA, checkpoints, errors."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess
from diffkit.data import TableDataModule
from diffkit.models import MLPDenoiser, TableDenoiser, TokenTransformer
from diffkit.module import DiffusionModule


class Loaders(pl.LightningDataModule):
    def __init__(self, train, val=None, batch_size: int = 16):
        super().__init__()
        self.train, self.val, self.batch_size = train, val, batch_size

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(self.val if self.val is not None else self.train, batch_size=self.batch_size)


def trainer(tmp_path, **kw) -> pl.Trainer:
    opts = dict(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    opts.update(kw)
    return pl.Trainer(**opts)


def gaussian_module(T: int = 20, **kw) -> DiffusionModule:
    return DiffusionModule(GaussianProcess(T), MLPDenoiser(2, T, hidden=32, depth=2), "eps", num_eval_samples=8, **kw)


def token_module(transition: str = "uniform", T: int = 20, **kw) -> DiffusionModule:
    p = CategoricalProcess(4, T, transition)
    net = TokenTransformer(p.num_states, 4, seq_len=6, num_steps=T, d_model=16, depth=1, heads=2)
    return DiffusionModule(p, net, "x0", num_eval_samples=8, **kw)


def test_marginal_transition_is_filled_from_the_data_and_survives_ema_and_checkpoint(tmp_path) -> None:
    dm = TableDataModule(num_train=256, num_val=64, batch_size=64)
    procs = {
        "num": GaussianProcess(20),
        "cluster": CategoricalProcess(4, 20, "marginal"),
        "bucket": CategoricalProcess(3, 20, "marginal"),
    }
    net = TableDenoiser({"num": 3}, {"cluster": (4, 4), "bucket": (3, 3)}, num_steps=20, hidden=32, depth=1)
    model = DiffusionModule(
        ProductProcess(procs), net, {"num": "eps", "cluster": "x0", "bucket": "x0"}, ema_decay=0.9, num_eval_samples=16
    )
    tr = trainer(tmp_path, max_steps=6, val_check_interval=3, num_sanity_val_steps=1)
    tr.fit(model, dm)
    dm.setup()
    train = dm.split("train")
    for field, k in (("cluster", 4), ("bucket", 3)):
        expected = torch.bincount(train[field], minlength=k).double() / train[field].numel()
        pi = model.process.fields[field].kernel.pi
        torch.testing.assert_close(pi, expected, rtol=0, atol=1e-12)
    path = tmp_path / "m.ckpt"
    tr.save_checkpoint(path)
    loaded = DiffusionModule.load_from_checkpoint(path, process=ProductProcess({**procs}), denoiser=net)
    torch.testing.assert_close(loaded.process.fields["cluster"].kernel.pi, model.process.fields["cluster"].kernel.pi)


def test_checkpoint_holds_the_ema_weights(tmp_path) -> None:
    x = torch.randn(64, 2)
    model = gaussian_module(ema_decay=0.5)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    tr = trainer(tmp_path, max_steps=6, callbacks=[ckpt_cb])
    tr.fit(model, Loaders(x))
    ckpt = torch.load(tmp_path / "step=2.ckpt", weights_only=True)  # written mid-training
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert set(averaged) == set(current)
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged if k.startswith("denoiser."))
    # At the end of fit the averaged weights are left in the model.
    final = torch.load(tmp_path / "step=6.ckpt", weights_only=True)["state_dict"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, final[k])


def test_checkpoint_of_another_process_is_refused(tmp_path) -> None:
    ids = torch.randint(0, 4, (32, 6))
    tr = trainer(tmp_path)
    tr.fit(token_module("uniform"), Loaders(ids))
    path = tmp_path / "uniform.ckpt"
    tr.save_checkpoint(path)
    with pytest.raises(
        ValueError,
        match=r"checkpoint: it was trained with a different "
        r"process(.|\n)*transition='uniform'(.|\n)*transition='absorbing'",
    ):
        trainer(tmp_path, max_steps=8).fit(token_module("absorbing"), Loaders(ids), ckpt_path=path)


def test_nan_in_data_is_named(tmp_path) -> None:
    x = torch.randn(32, 2)
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match="batch: found NaN or inf in Gaussian data"):
        trainer(tmp_path).fit(gaussian_module(), Loaders(x))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_in_a_later_batch_is_named_and_no_step_is_taken(tmp_path, value) -> None:
    """Training batches skip the upfront NaN scan (the non-finite loss catches it): a bad third batch
    is still named as bad data, before its optimizer step, and the weights stay finite."""
    x = torch.randn(48, 2)
    x[40, 0] = value  # batch 3 of 16
    module = gaussian_module()
    with pytest.raises(ValueError, match="batch: found NaN or inf in Gaussian data"):
        trainer(tmp_path, max_steps=10).fit(module, Loaders(x))
    assert module.global_step == 2
    assert all(torch.isfinite(p).all() for p in module.denoiser.parameters())


def test_integer_data_for_a_gaussian_process_is_named(tmp_path) -> None:
    with pytest.raises(TypeError, match="batch: a Gaussian field expects floating-point data, got dtype torch.int64"):
        trainer(tmp_path).fit(gaussian_module(), Loaders(torch.randint(0, 3, (32, 2))))


def test_class_id_out_of_range_is_named(tmp_path) -> None:
    ids = torch.randint(0, 4, (32, 6))
    ids[3, 2] = 4
    with pytest.raises(
        ValueError, match=r"batch: found class id 4, expected ids in \[0, 4\) \(id 4 is the absorbing mask state"
    ):
        trainer(tmp_path).fit(token_module("absorbing"), Loaders(ids))


def test_tuple_batches_of_several_tensors_are_refused(tmp_path) -> None:
    # (x0, cond) is a conditional batch (docs/conditioning.md): refused for an unconditional denoiser, naming cond
    ds = torch.utils.data.TensorDataset(torch.randn(32, 2), torch.randn(32, 2))
    with pytest.raises(ValueError, match="cond: the denoiser MLPDenoiser is unconditional"):
        trainer(tmp_path).fit(gaussian_module(), Loaders(ds))
    ds = torch.utils.data.TensorDataset(torch.randn(32, 2), torch.randn(32, 2), torch.randn(32, 2))
    with pytest.raises(
        ValueError, match=r"batch: expected a Tensor, a dict of Tensors, \(x0,\) or \(x0, cond\), got a 3-element list"
    ):
        trainer(tmp_path / "three").fit(gaussian_module(), Loaders(ds))


class ExplodingMLP(MLPDenoiser):
    """Returns NaN from the third training call on: a diverging run."""

    calls = 0

    def forward(self, x_t, t):
        out = super().forward(x_t, t)
        if self.training:
            ExplodingMLP.calls += 1
            if ExplodingMLP.calls >= 3:
                return out * float("nan")
        return out


def test_non_finite_loss_stops_with_step_and_times_and_keeps_the_last_checkpoint(tmp_path) -> None:
    x = torch.randn(64, 2)
    ok = trainer(tmp_path, max_steps=1)
    model = DiffusionModule(GaussianProcess(20), ExplodingMLP(2, 20, hidden=16, depth=1), "eps", num_eval_samples=0)
    ok.fit(model, Loaders(x))
    path = tmp_path / "good.ckpt"
    ok.save_checkpoint(path)
    before = path.read_bytes()
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at global step \d+ \(t = \["):
        trainer(tmp_path, max_steps=10).fit(model, Loaders(x), ckpt_path=path)
    assert path.read_bytes() == before
    assert "state_dict" in torch.load(path, weights_only=False)


def test_sample_is_reproducible_and_strides(tmp_path) -> None:
    model = gaussian_module()
    trainer(tmp_path).fit(model, Loaders(torch.randn(32, 2)))
    a = model.sample(6, num_steps=5, generator=torch.Generator().manual_seed(1))
    b = model.sample(6, num_steps=5, generator=torch.Generator().manual_seed(1))
    c = model.sample(6, num_steps=5, generator=torch.Generator().manual_seed(2))
    assert a.shape == (6, 2) and torch.equal(a, b) and not torch.equal(a, c)


def test_previous_step_cannot_stride() -> None:
    with pytest.raises(ValueError, match="cannot jump"):
        DiffusionModule(GaussianProcess(20), MLPDenoiser(2, 20, hidden=16), "previous-step", sample_steps=5)
    model = DiffusionModule(GaussianProcess(20), MLPDenoiser(2, 20, hidden=16), "previous-step")
    with pytest.raises(ValueError, match="cannot jump"):
        model.sample(4, num_steps=5, shape_like=torch.zeros(1, 2))
    assert model.sample(4, shape_like=torch.zeros(1, 2)).shape == (4, 2)


def test_sample_without_known_shape_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="the data shape is unknown"):
        gaussian_module().sample(3)


def test_bad_constructor_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"parametrization: 'eps' is not valid for CategoricalProcess"):
        DiffusionModule(CategoricalProcess(4, 10), MLPDenoiser(2, 10), "eps")
    with pytest.raises(ValueError, match="loss: unknown kind 'mse'"):
        DiffusionModule(GaussianProcess(10), MLPDenoiser(2, 10), "eps", loss="mse")
    with pytest.raises(ValueError, match="ema_decay: expected a value in"):
        DiffusionModule(GaussianProcess(10), MLPDenoiser(2, 10), "eps", ema_decay=1.5)
    with pytest.raises(TypeError, match="process: expected a ForwardProcess"):
        DiffusionModule("gaussian", MLPDenoiser(2, 10))


def test_trainer_test_reports_the_validation_metrics_on_the_test_split(tmp_path) -> None:
    from diffkit.data import Toy2DDataModule

    dm = Toy2DDataModule("swiss_roll", num_train=128, num_val=32, batch_size=32)
    model = gaussian_module(sample_steps=5)
    tr = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    tr.fit(model, dm)
    evaluator = trainer(tmp_path, limit_test_batches=1)
    (val,) = evaluator.validate(model, dm, verbose=False)
    (test,) = evaluator.test(model, dm, verbose=False)
    for key in ("loss", "nll_bits_per_element", "mmd", "mmd_floor"):
        assert math.isfinite(test[f"test/{key}"]), key
        assert f"val/{key}" in val
    # Another split, the same estimator: the test numbers are not the validation numbers.
    assert test["test/loss"] != val["val/loss"]
    # The test split is an independent draw: its data-vs-data floor is a real (positive) MMD.
    assert test["test/mmd_floor"] > 0


def test_diffusion_module_is_exported_lazily() -> None:
    """docs/design.md's ``diffkit.DiffusionModule``; ``import diffkit`` alone does not import Lightning."""
    import subprocess
    import sys

    code = (
        "import sys, diffkit; assert 'lightning' not in sys.modules; from diffkit import DiffusionModule; "
        "import diffkit.module as m; assert DiffusionModule is m.DiffusionModule and 'DiffusionModule' in "
        "diffkit.__all__"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_step_seeds_are_the_mix_of_seed_rank_stream_and_step() -> None:
    """Every step's seed is mix_seed(seed, rank, stream, step), also after a seed restored from a
    checkpoint (a new _rng_seed); mix_seed is the SplitMix64 chain written out here, whose first
    link from 0 is SplitMix64's published first output."""
    from diffkit.random_streams import TRAIN_STREAM as _TRAIN_STREAM
    from diffkit.random_streams import mix_seed as _mix_seed

    def splitmix64(x: int) -> int:
        m = (1 << 64) - 1
        z = (x + 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    def reference(*parts: int) -> int:
        h = 0
        for p in parts:
            h = splitmix64(h ^ p)
        return h >> 1

    assert splitmix64(0) == 0xE220A8397B1DCDAF  # SplitMix64 seeded with 0 (Vigna's splitmix64.c)
    for key in [(5,), (11, 0), (11, 0, _TRAIN_STREAM, 3), (2**63 - 1, 7, 2, 10**9), (11, 0, _TRAIN_STREAM, 4)]:
        assert _mix_seed(*key) == reference(*key)

    module = gaussian_module(noise_seed=11)
    assert [module._next_train_generator().initial_seed() for _ in range(4)] == [
        _mix_seed(11, 0, _TRAIN_STREAM, k) for k in range(4)
    ]
    gen = module._train_gen  # one generator, re-seeded in place each step (no new object per step)
    assert module._next_train_generator() is gen and module._next_train_generator(torch.device("cpu")) is gen
    module._rng_seed, module._train_steps = 12, 40
    assert [module._next_train_generator().initial_seed() for _ in range(2)] == [
        _mix_seed(12, 0, _TRAIN_STREAM, k) for k in (40, 41)
    ]
    assert (
        len(
            {_mix_seed(11, 0, _TRAIN_STREAM, k) for k in range(1000)}
            | {_mix_seed(11, 1, _TRAIN_STREAM, k) for k in range(1000)}
        )
        == 2000
    )
