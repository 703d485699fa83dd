"""End-to-end runs of the `diffkit` CLI, in-process (a Lightning import costs ~10 s per process).

Every shipped config is trained for a few steps on a small data draw, checkpointed, and sampled
from the checkpoint alone; resuming continues the step count; --print_config round-trips; bad
configs stop with a message naming the problem.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffkit.cli import main, sample_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))

# A few optimizer steps on a small draw of the data: enough to run every hook (fit, validation
# with sampling and the NLL bound, checkpointing) in seconds.
FAST = [
    "--trainer.max_steps=4",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.num_eval_samples=16",
    "--data.init_args.num_train=64",
    "--data.init_args.num_val=32",
    "--data.init_args.batch_size=16",
]


def run_cli(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh directory: the configs write to runs/<name>/ relative to the cwd."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def check_samples(samples, model_reference) -> None:
    """Samples must have the data's kind, per-example shape and (for ids) range."""
    if isinstance(model_reference, dict):
        assert set(samples) == set(model_reference)
        for k in samples:
            check_samples(samples[k], model_reference[k])
        return
    assert samples.dtype == model_reference.dtype
    assert samples.shape[1:] == model_reference.shape[1:]
    if samples.is_floating_point():
        assert torch.isfinite(samples).all()
    else:
        assert samples.min() >= 0


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_fits_checkpoints_and_samples(config: Path, in_tmp: Path, monkeypatch) -> None:
    run_cli(monkeypatch, ["fit", "--config", str(config), *FAST])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    metrics = only(list(in_tmp.glob("runs/*/logs/version_0/metrics.csv"))).read_text()
    for name in ("train/loss", "val/loss", "val/nll_bits_per_element"):
        assert name in metrics
    # Sampling needs the checkpoint alone (no config): hyperparameters rebuild the model.
    png = in_tmp / "samples.png"
    samples = sample_from_checkpoint(ckpt, num_samples=8, num_steps=5, output=in_tmp / "s.pt", plot=png, progress=False)
    reference = state["diffkit"]["reference"]
    check_samples(samples, reference)
    assert png.read_bytes()[:4] == b"\x89PNG"
    saved = torch.load(in_tmp / "s.pt", weights_only=False)
    assert saved["num_steps"] == 5 and saved["seed"] == 0


def test_categorical_samples_stay_in_range(in_tmp: Path, monkeypatch) -> None:
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/markov_absorbing.yaml"), *FAST])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    samples = sample_from_checkpoint(ckpt, num_samples=32, plot=None, output=in_tmp / "s.pt", progress=False)
    # absorbing: the mask id (8) must never survive to t = 0
    assert samples.dtype == torch.long and samples.min() >= 0 and samples.max() < 8


def test_sample_subcommand_from_checkpoint(in_tmp: Path, monkeypatch) -> None:
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/swiss_roll.yaml"), *FAST])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    run_cli(
        monkeypatch,
        [
            "sample",
            "--ckpt_path",
            str(ckpt),
            "--num_samples",
            "10",
            "--num_steps",
            "7",
            "--output",
            "out.pt",
            "--no_progress",
        ],
    )
    saved = torch.load(in_tmp / "out.pt", weights_only=False)
    assert saved["samples"].shape == (10, 2) and saved["num_steps"] == 7
    assert (in_tmp / "out.png").read_bytes()[:4] == b"\x89PNG"
    same = sample_from_checkpoint(
        ckpt, num_samples=10, num_steps=7, plot=None, output=in_tmp / "again.pt", progress=False
    )
    assert torch.equal(same, saved["samples"])  # one seed, one answer


def test_resume_from_checkpoint_continues_the_step_count(in_tmp: Path, monkeypatch) -> None:
    cfg = str(ROOT / "examples/configs/markov_uniform.yaml")
    run_cli(monkeypatch, ["fit", "--config", cfg, *FAST])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    resumed = [a for a in FAST if not a.startswith("--trainer.max_steps")] + ["--trainer.max_steps=8"]
    run_cli(monkeypatch, ["fit", "--config", cfg, *resumed, "--ckpt_path", str(ckpt), "--trainer.logger=false"])
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 8


def test_print_config_round_trip(in_tmp: Path, monkeypatch, capsys) -> None:
    cfg = str(ROOT / "examples/configs/table.yaml")
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, ["fit", "--config", cfg, "--print_config"])
    first = capsys.readouterr().out
    assert yaml.safe_load(first)["model"]["process"]["class_path"] == "diffkit.processes.ProductProcess"
    (in_tmp / "printed.yaml").write_text(first)
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, ["fit", "--config", "printed.yaml", "--print_config"])
    assert capsys.readouterr().out == first


def test_invalid_parametrization_names_the_choices(in_tmp: Path, monkeypatch) -> None:
    cfg = str(ROOT / "examples/configs/markov_uniform.yaml")
    with pytest.raises(
        ValueError,
        match=r"parametrization: 'eps' is not valid for CategoricalProcess; expected one of \['previous-step', 'x0'\]",
    ):
        run_cli(monkeypatch, ["fit", "--config", cfg, *FAST, "--model.parametrization=eps"])


def test_denoiser_output_shape_mismatch_is_named(in_tmp: Path, monkeypatch) -> None:
    cfg = str(ROOT / "examples/configs/markov_uniform.yaml")
    with pytest.raises(
        ValueError,
        match=r"denoiser output: shape \(16, 32, 5\) does not match the 'x0' parametrization of CategoricalProcess, "
        r"which expects \(16, 32, 8\)",
    ):
        run_cli(monkeypatch, ["fit", "--config", cfg, *FAST, "--model.denoiser.init_args.num_outputs=5"])


def test_resume_uses_the_checkpoint_hyperparameters(in_tmp: Path, monkeypatch) -> None:
    """LightningCLI's documented behaviour: with --ckpt_path, the checkpoint's saved model
    hyperparameters replace the config's, so a resumed run cannot silently change the process.
    (Fitting a *different* module on a checkpoint in Python is refused: tests/test_module.py.)"""
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/markov_uniform.yaml"), *FAST])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    more = [a for a in FAST if not a.startswith("--trainer.max_steps")] + ["--trainer.max_steps=6"]
    run_cli(
        monkeypatch,
        ["fit", "--config", str(ROOT / "examples/configs/markov_absorbing.yaml"), *more, "--ckpt_path", str(ckpt)],
    )
    resumed = torch.load(in_tmp / "runs/markov_absorbing/checkpoints/last.ckpt", weights_only=False)
    assert resumed["global_step"] == 6
    assert resumed["hyper_parameters"]["process"]["init_args"]["transition"] == "uniform"


def test_user_class_from_cwd_plugs_in_by_import_path(in_tmp: Path, monkeypatch) -> None:
    """A user's own data module in their own file, next to their config, with no change to diffkit."""
    (in_tmp / "my_data.py").write_text(
        "import torch\n"
        "from diffkit.data import SampledDataModule\n"
        "class Ring(SampledDataModule):\n"
        "    def __init__(self, num_train=64, num_val=32, batch_size=16, seed=0):\n"
        "        super().__init__(num_train, num_val, batch_size, seed, 0)\n"
        "    def draw(self, n, generator):\n"
        "        a = torch.rand(n, generator=generator) * 6.2832\n"
        "        return torch.stack([a.cos(), a.sin()], 1)\n"
    )
    cfg = yaml.safe_load((ROOT / "examples/configs/swiss_roll.yaml").read_text())
    cfg["data"] = {"class_path": "my_data.Ring", "init_args": {"num_train": 64, "num_val": 32, "batch_size": 16}}
    (in_tmp / "ring.yaml").write_text(yaml.safe_dump(cfg))
    fast = [a for a in FAST if not a.startswith("--data.")]
    monkeypatch.delitem(sys.modules, "my_data", raising=False)
    run_cli(monkeypatch, ["fit", "--config", "ring.yaml", *fast])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4


# ----------------------------------------------------------------------------------- issue 13: CLI surface

import csv  # noqa: E402

import lightning.pytorch as pl  # noqa: E402


def test_help_lists_every_subcommand_and_not_predict(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(monkeypatch, ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    listed = text[text.index("Available subcommands") :]
    for name in ("fit", "validate", "test", "sample", "evaluate-graphs"):
        assert f"\n    {name} " in listed, name
    assert "predict" not in listed  # sampling is `diffkit sample`; Lightning's predict needs data we do not have
    with pytest.raises(SystemExit) as stop:
        run_cli(monkeypatch, ["predict", "--config", str(ROOT / "examples/configs/swiss_roll.yaml")])
    assert stop.value.code != 0
    assert "predict" in capsys.readouterr().err


def test_sample_help_is_its_own(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(monkeypatch, ["sample", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "--ckpt_path" in out and "--image_shape" in out


def test_lightning_adverts_are_silenced(in_tmp: Path, monkeypatch, caplog) -> None:
    import logging

    from diffkit.cli import _not_an_advert

    tip = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "💡 Tip: For seamless cloud logging, try installing litlogger", None, None
    )
    normal = logging.LogRecord("x", logging.INFO, __file__, 1, "GPU available: False", None, None)
    assert not _not_an_advert(tip) and _not_an_advert(normal)
    for name in ("", "lightning", "lightning.pytorch", "lightning.fabric"):  # other tests may have quietened them
        caplog.set_level(logging.INFO, logger=name)
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/swiss_roll.yaml"), *FAST])
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "💡" in m]
    assert any("GPU available" in m for m in messages)  # Lightning's other info lines still show


@pytest.mark.parametrize("config", sorted((ROOT / "examples" / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_checkpoint_every_n_steps(config: Path) -> None:
    trainer = yaml.safe_load(config.read_text())["trainer"]
    (ckpt,) = [c["init_args"] for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert ckpt["save_last"] is True
    every = ckpt["every_n_train_steps"]
    assert 0 < every <= 1000 and trainer["max_steps"] % every == 0  # the final step is saved too


class Kill(pl.Callback):
    """Stops a run the hard way (an exception, as a killed job would) at a given step."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError(f"killed at step {self.at}")


def test_a_run_killed_before_its_first_validation_resumes_from_last(in_tmp: Path, monkeypatch) -> None:
    from diffkit.cli import _cli_class

    cfg = str(ROOT / "examples/configs/swiss_roll.yaml")
    # The shipped config's checkpointing (every 100 steps) and validation (every 20 epochs), a small
    # model, and epochs of 625 steps: the first validation would come long after the kill.
    small = [
        "--config",
        cfg,
        "--model.denoiser.init_args.hidden=16",
        "--model.denoiser.init_args.depth=1",
        "--data.init_args.batch_size=32",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--trainer.max_steps=110",
        "--trainer.enable_model_summary=false",
    ]
    cli = _cli_class()(args=small, run=False)
    cli.trainer.callbacks.insert(0, Kill(at=103))
    with pytest.raises(RuntimeError, match="killed at step 103"):
        cli.trainer.fit(cli.model, cli.datamodule)
    last = in_tmp / "runs/swiss_roll/checkpoints/last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 100
    assert (
        not list(in_tmp.glob("runs/swiss_roll/logs/version_0/*.csv"))
        or "val/loss" not in (in_tmp / "runs/swiss_roll/logs/version_0/metrics.csv").read_text()
    )  # killed before any validation
    run_cli(monkeypatch, ["fit", *small, "--ckpt_path", "last"])
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 110
    with open(in_tmp / "runs/swiss_roll/logs/version_1/metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps and min(steps) >= 100  # it went on from step 100, not from 0


@pytest.mark.parametrize("env, expected", [(None, 1), ("2", None)])
def test_cli_defaults_to_one_thread_unless_omp_num_threads_is_set(env, expected, monkeypatch) -> None:
    before = torch.get_num_threads()
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    torch.set_num_threads(3)
    try:
        with pytest.raises(SystemExit):
            run_cli(monkeypatch, ["--help"])
        assert torch.get_num_threads() == (expected or 3)  # OMP_NUM_THREADS set: left to torch / the user
    finally:
        torch.set_num_threads(before)
