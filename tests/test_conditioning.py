"""Conditional denoisers, DiffusionModule with (x0, cond) batches and cond_drop_prob, and every bad input."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers.reliability import make_trainer, quiet_lightning

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess, sample
from diffkit.data.labeled import LabeledEightGaussiansDataModule
from diffkit.models import GraphTransformer, MLPDenoiser, TableDenoiser, TokenTransformer
from diffkit.models.conditioning import NULL_CLASS
from diffkit.module import DiffusionModule


@pytest.fixture(autouse=True)
def _quiet():
    quiet_lightning()


def _ids(b: int = 4) -> torch.Tensor:
    return torch.tensor([0, 1, 2, NULL_CLASS])[:b]


DENOISERS = {
    "mlp": lambda **kw: (MLPDenoiser(2, 10, hidden=16, depth=1, **kw), torch.randn(4, 2)),
    "transformer": lambda **kw: (
        TokenTransformer(4, 3, 5, 10, d_model=16, depth=1, heads=2, **kw),
        torch.randint(0, 4, (4, 5)),
    ),
    "table": lambda **kw: (
        TableDenoiser({"a": 2}, {"b": (3, 3)}, 10, hidden=16, depth=1, **kw),
        {"a": torch.randn(4, 2), "b": torch.randint(0, 3, (4,))},
    ),
    "graph": lambda **kw: (
        GraphTransformer(3, 2, 3, 2, 10, hidden=8, edge_hidden=4, global_hidden=8, depth=1, heads=2, **kw),
        {
            "X": torch.randint(0, 3, (4, 3)),
            "E": torch.zeros(4, 3, 3, dtype=torch.long),
            "mask": torch.ones(4, 3, dtype=torch.bool),
        },
    ),
}


def _build(name: str, **kw):
    """The denoiser with every parameter drawn at random (the transformer starts with zero gates and head)."""
    net, x = DENOISERS[name](**kw)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net, x


def _first(out):
    return next(iter(out.values())) if isinstance(out, dict) else out


@pytest.mark.parametrize("name", list(DENOISERS))
def test_shipped_denoisers_take_class_ids_and_features(name) -> None:
    torch.manual_seed(0)
    t = torch.tensor([1, 5, 9, 10])
    net, x = _build(name, num_classes=3)
    assert net.cond_spec.num_classes == 3
    null = _first(net(x, t))
    out = _first(net(x, t, _ids()))
    # the null id -1 is the learned null class (the same as cond=None); real ids change the output
    assert torch.equal(out[3], null[3])
    assert not torch.equal(out[:3], null[:3])
    feat, x = _build(name, cond_dim=2)
    assert feat.cond_spec.cond_dim == 2
    c = torch.tensor([[1.0, 2.0], [0.0, 1.0], [float("nan")] * 2, [3.0, 3.0]])
    out, null = _first(feat(x, t, c)), _first(feat(x, t))
    assert torch.equal(out[2], null[2]) and not torch.equal(out[0], null[0])
    plain, x = DENOISERS[name]()
    assert plain.cond_spec is None
    plain(x, t)  # unconditional: unchanged call
    with pytest.raises(ValueError, match="cond: this .* is unconditional"):
        plain(x, t, _ids())
    with pytest.raises(TypeError, match="cond: expected int64 class ids"):
        net(x, t, torch.zeros(4, 2))


# ---------------------------------------------------------------- bad inputs at sample()'s boundary
def _gauss():
    return GaussianProcess(5), MLPDenoiser(2, 5, hidden=8, depth=1, num_classes=3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(cond=torch.tensor([0, 3])), ValueError, r"cond: found class id 3, expected ids in \[0, 3\)"),
        (dict(cond=torch.tensor([0, -1])), ValueError, r"cond: found class id -1, expected ids in \[0, 3\)"),
        (dict(cond=torch.tensor([0, 1, 2])), ValueError, r"cond: expected class ids of shape \(2,\), got \(3,\)"),
        (dict(cond=torch.tensor([[0], [1]])), ValueError, r"cond: expected class ids of shape \(2,\), got \(2, 1\)"),
        (dict(cond=torch.tensor([0.0, 1.0])), TypeError, "cond: expected int64 class ids"),
        (
            dict(cond=torch.tensor([0, 1]), guidance_scale=-1.0),
            ValueError,
            "guidance_scale: expected a finite float >= 0",
        ),
        (
            dict(cond=torch.tensor([0, 1]), guidance_scale=float("nan")),
            ValueError,
            "guidance_scale: expected a finite float >= 0",
        ),
        (dict(guidance_scale=2.0), ValueError, "guidance_scale: 2.0 needs a cond"),
        (
            dict(known=torch.zeros(2, 3), known_mask=torch.ones(2, 3, dtype=torch.bool)),
            ValueError,
            r"known: shape \(2, 3\) does not match the sample shape \(2, 2\)",
        ),
        (
            dict(known=torch.zeros(2, 2, dtype=torch.long), known_mask=torch.ones(2, 2, dtype=torch.bool)),
            TypeError,
            "known: a Gaussian field expects floating-point data",
        ),
        (dict(known=torch.zeros(2, 2), known_mask=torch.ones(2, 2)), TypeError, "known_mask: expected a bool Tensor"),
        (
            dict(known=torch.zeros(2, 2), known_mask=torch.ones(2, 1, dtype=torch.bool)),
            ValueError,
            r"known_mask: shape \(2, 1\) does not match",
        ),
        (dict(known=torch.zeros(2, 2)), ValueError, "known_mask: infilling needs both"),
        (
            dict(known=torch.zeros(2, 2), known_mask=torch.ones(2, 2, dtype=torch.bool), resample_rounds=0),
            ValueError,
            "resample_rounds: expected an int >= 1",
        ),
    ],
)
def test_bad_inputs_are_named(kwargs, error, match) -> None:
    process, net = _gauss()
    with pytest.raises(error, match=match):
        sample(process, net, (2, 2), "eps", **kwargs)


def test_cond_for_an_unconditional_model_is_refused() -> None:
    with pytest.raises(ValueError, match="cond: the denoiser MLPDenoiser is unconditional"):
        sample(GaussianProcess(5), MLPDenoiser(2, 5, hidden=8, depth=1), (2, 2), "eps", cond=1)
    with pytest.raises(ValueError, match=r"cond: expected features of shape \(2, 4\), got \(2, 3\)"):
        sample(
            GaussianProcess(5), MLPDenoiser(2, 5, hidden=8, depth=1, cond_dim=4), (2, 2), "eps", cond=torch.zeros(2, 3)
        )


def test_known_ids_out_of_range_and_unknown_fields_are_named() -> None:
    process = CategoricalProcess(3, 5, "absorbing")
    net = TokenTransformer(4, 3, 4, 5, d_model=8, depth=1, heads=2)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"known: found class id 3, expected ids in \[0, 3\)"):
        sample(process, net, (2, 4), "x0", known=torch.full((2, 4), 3), known_mask=mask)
    # a value outside the range where the mask is False is ignored
    sample(process, net, (2, 4), "x0", known=torch.full((2, 4), 3), known_mask=torch.zeros(2, 4, dtype=torch.bool))
    table = ProductProcess({"a": GaussianProcess(5), "b": CategoricalProcess(3, 5)})
    tnet = TableDenoiser({"a": 2}, {"b": (3, 3)}, 5, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"known: unknown field\(s\) \['c'\]"):
        sample(
            table,
            tnet,
            {"a": (2, 2), "b": (2,)},
            {"a": "eps", "b": "x0"},
            known={"c": torch.zeros(2)},
            known_mask={"c": torch.ones(2, dtype=torch.bool)},
        )


# ---------------------------------------------------------------- DiffusionModule
class Spy(MLPDenoiser):
    """Records the cond of every training call."""

    def forward(self, x_t, t, cond=None):
        if self.training:
            self.seen.append(None if cond is None else cond.clone())
        return super().forward(x_t, t, cond)


def _module(p: float, seed: int = 3) -> DiffusionModule:
    torch.manual_seed(0)
    net = Spy(2, 20, hidden=16, depth=1, num_classes=8)
    net.seen = []
    return DiffusionModule(GaussianProcess(20), net, "v", cond_drop_prob=p, num_eval_samples=0, noise_seed=seed)


def test_module_trains_on_cond_batches_and_drops_from_its_own_stream(tmp_path: Path) -> None:
    data = LabeledEightGaussiansDataModule(num_train=512, num_val=64, batch_size=64)
    runs = []
    for _ in range(2):
        model = _module(0.5)
        make_trainer(tmp_path, max_steps=6, limit_val_batches=0).fit(model, data)
        runs.append(model.denoiser.seen)
    seen = torch.stack(runs[0])
    dropped = float((seen == NULL_CLASS).float().mean())
    assert 0.35 < dropped < 0.65, dropped  # 6 x 64 Bernoulli(0.5) draws
    assert bool(((seen >= 0) | (seen == NULL_CLASS)).all())
    # the drop masks are a function of (noise_seed, step): a second run draws the same ones
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    # sampling: an int cond is every sample's class; guidance runs the null model too
    model.denoiser.eval()
    xs = model.sample(16, cond=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (16, 2) and bool(torch.isfinite(xs).all())
    with pytest.raises(ValueError, match=r"cond: found class id 8, expected ids in \[0, 8\)"):
        model.sample(4, cond=8)


def test_cond_drop_prob_zero_keeps_every_cond(tmp_path: Path) -> None:
    model = _module(0.0)
    make_trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(
        model, LabeledEightGaussiansDataModule(num_train=256, num_val=64, batch_size=64)
    )
    assert bool((torch.stack(model.denoiser.seen) >= 0).all())
    with pytest.raises(ValueError, match=r"cond_drop_prob: expected a probability in \[0, 1\)"):
        _module(1.0)


def test_training_batch_with_bad_cond_is_named(tmp_path: Path) -> None:
    model = _module(0.1)
    ds = torch.utils.data.TensorDataset(torch.randn(32, 2), torch.full((32,), 9))
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    with pytest.raises(ValueError, match=r"cond: found class id 9, expected ids in \[0, 8\)"):
        make_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, loader)


def _fit(root: Path, max_steps: int, every: int, ckpt_path: Path | None = None) -> None:
    torch.manual_seed(7)
    model = DiffusionModule(
        GaussianProcess(20),
        MLPDenoiser(2, 20, hidden=16, depth=1, num_classes=8),
        "v",
        cond_drop_prob=0.3,
        ema_decay=0.9,
        num_eval_samples=0,
        noise_seed=5,
    )
    data = LabeledEightGaussiansDataModule(num_train=96, num_val=16, batch_size=32, seed=1)  # 3 batches per epoch
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1, filename="{step}")
    trainer = make_trainer(
        root, max_steps=max_steps, callbacks=[ckpt], enable_checkpointing=True, deterministic=True, limit_val_batches=0
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)


def test_cond_drop_resume_is_bit_exact(tmp_path: Path) -> None:
    """8 steps in one run == 4 steps, a checkpoint in the middle of an epoch, and 4 more resumed:
    the drop masks come from the module's per-step stream, so every weight is identical."""
    _fit(tmp_path / "full", 8, 4)
    _fit(tmp_path / "half", 4, 4)
    _fit(tmp_path / "resumed", 8, 4, ckpt_path=tmp_path / "half" / "step=4.ckpt")
    load = lambda p: torch.load(p / "step=8.ckpt", map_location="cpu", weights_only=False)  # noqa: E731
    full, resumed = load(tmp_path / "full"), load(tmp_path / "resumed")
    for key in ("state_dict", "current_model_state"):
        for name, value in full[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}[{name!r}] differs after resume"
    assert resumed["diffkit"]["rng"]["train_steps"] == 8


# ---------------------------------------------------------------- CLI
def test_cli_samples_a_class_with_guidance(tmp_path: Path, monkeypatch) -> None:
    from test_cli import FAST, ROOT, run_cli

    monkeypatch.chdir(tmp_path)
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/eight_gaussians_cond.yaml"), *FAST])
    ckpt = tmp_path / "runs/eight_gaussians_cond/checkpoints/last.ckpt"
    run_cli(monkeypatch, ["sample", "--ckpt_path", str(ckpt), "--num_samples", "6", "--num_steps", "5", "--cond", "3",
                          "--guidance_scale", "2.0", "--output", "g.pt", "--no_plot", "--no_progress"])  # fmt: skip
    saved = torch.load(tmp_path / "g.pt", weights_only=False)
    assert saved["samples"].shape == (6, 2) and saved["cond"] == "3" and saved["guidance_scale"] == 2.0
    with pytest.raises(ValueError, match=r"cond: found class id 8, expected ids in \[0, 8\)"):
        run_cli(monkeypatch, ["sample", "--ckpt_path", str(ckpt), "--cond", "8", "--no_plot", "--no_progress"])
    with pytest.raises(ValueError, match="guidance_scale: expected a finite float >= 0"):
        run_cli(
            monkeypatch,
            ["sample", "--ckpt_path", str(ckpt), "--cond", "1", "--guidance_scale", "-1", "--no_plot", "--no_progress"],
        )


def test_cli_infills_a_prefix_from_a_file(tmp_path: Path, monkeypatch) -> None:
    from test_cli import FAST, ROOT, run_cli

    monkeypatch.chdir(tmp_path)
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/markov_infill.yaml"), *FAST])
    ckpt = tmp_path / "runs/markov_infill/checkpoints/last.ckpt"
    known, mask = torch.zeros(1, 32, dtype=torch.long), torch.zeros(1, 32, dtype=torch.bool)
    known[0, :8], mask[0, :8] = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0]), True
    torch.save({"known": known, "known_mask": mask}, tmp_path / "prefix.pt")
    run_cli(
        monkeypatch,
        [
            "sample",
            "--ckpt_path",
            str(ckpt),
            "--num_samples",
            "5",
            "--num_steps",
            "10",
            "--known",
            "prefix.pt",
            "--output",
            "i.pt",
            "--no_plot",
            "--no_progress",
        ],
    )
    xs = torch.load(tmp_path / "i.pt", weights_only=False)["samples"]
    assert xs.shape == (5, 32) and torch.equal(xs[:, :8], known[:, :8].expand(5, 8)) and xs.max() < 8
    torch.save({"known": known}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="known: expected a file holding a dict with keys 'known' and 'known_mask'"):
        run_cli(monkeypatch, ["sample", "--ckpt_path", str(ckpt), "--known", "bad.pt", "--no_plot", "--no_progress"])


def test_product_dict_batches_carry_cond(tmp_path: Path) -> None:
    """A ProductProcess batch is a dict; its "cond" key is the condition, the other fields are x0."""
    from diffkit.data._base import TensorDictDataset

    torch.manual_seed(0)
    process = ProductProcess({"a": GaussianProcess(10), "b": CategoricalProcess(3, 10)})
    net = TableDenoiser({"a": 2}, {"b": (3, 3)}, 10, hidden=16, depth=1, num_classes=2)
    seen = []
    forward = net.forward

    def spy(x_t, t, cond=None):
        seen.append((sorted(x_t), None if cond is None else cond.clone()))
        return forward(x_t, t, cond)

    net.forward = spy
    model = DiffusionModule(process, net, {"a": "eps", "b": "x0"}, cond_drop_prob=0.5, num_eval_samples=0, noise_seed=1)
    rows = {"a": torch.randn(64, 2), "b": torch.randint(0, 3, (64,)), "cond": torch.randint(0, 2, (64,))}
    loader = torch.utils.data.DataLoader(TensorDictDataset(rows), batch_size=16)
    make_trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(model, loader)
    assert len(seen) == 4 and all(keys == ["a", "b"] for keys, _ in seen)
    conds = torch.cat([c for _, c in seen])
    assert bool(((conds == NULL_CLASS) | (conds >= 0)).all()) and bool((conds == NULL_CLASS).any())
    assert model.data_shape == {"a": (2,), "b": ()}
    xs = model.sample(5, cond=1, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert set(xs) == {"a", "b"} and xs["a"].shape == (5, 2)
