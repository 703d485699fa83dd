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
    run_cli(monkeypatch, ["sample", "--ckpt_path", str(ckpt), "--num_samples", "10", "--num_steps", "7", "--output", "out.pt", "--no_progress"])
    saved = torch.load(in_tmp / "out.pt", weights_only=False)
    assert saved["samples"].shape == (10, 2) and saved["num_steps"] == 7
    assert (in_tmp / "out.png").read_bytes()[:4] == b"\x89PNG"
    same = sample_from_checkpoint(ckpt, num_samples=10, num_steps=7, plot=None, output=in_tmp / "again.pt", progress=False)
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
    with pytest.raises(ValueError, match=r"parametrization: 'eps' is not valid for CategoricalProcess; expected one of \['previous-step', 'x0'\]"):
        run_cli(monkeypatch, ["fit", "--config", cfg, *FAST, "--model.parametrization=eps"])


def test_denoiser_output_shape_mismatch_is_named(in_tmp: Path, monkeypatch) -> None:
    cfg = str(ROOT / "examples/configs/markov_uniform.yaml")
    with pytest.raises(ValueError, match=r"denoiser output: shape \(16, 32, 5\) does not match the 'x0' parametrization of CategoricalProcess, which expects \(16, 32, 8\)"):
        run_cli(monkeypatch, ["fit", "--config", cfg, *FAST, "--model.denoiser.init_args.num_outputs=5"])


def test_resume_uses_the_checkpoint_hyperparameters(in_tmp: Path, monkeypatch) -> None:
    """LightningCLI's documented behaviour: with --ckpt_path, the checkpoint's saved model
    hyperparameters replace the config's, so a resumed run cannot silently change the process.
    (Fitting a *different* module on a checkpoint in Python is refused: tests/test_module.py.)"""
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/markov_uniform.yaml"), *FAST])
    ckpt = only(list(in_tmp.glob("runs/*/checkpoints/last.ckpt")))
    more = [a for a in FAST if not a.startswith("--trainer.max_steps")] + ["--trainer.max_steps=6"]
    run_cli(monkeypatch, ["fit", "--config", str(ROOT / "examples/configs/markov_absorbing.yaml"), *more, "--ckpt_path", str(ckpt)])
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
