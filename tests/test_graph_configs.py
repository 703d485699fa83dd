"""The shipped graph configs (examples/configs/graphs/): every one parses and builds its model and
data module; the CPU-protocol ones train two steps through the CLI. The full-size ones (planar,
sbm, tree: DiGress-like, for a GPU) are parsed only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from diffkit.cli import _cli_class, _prepare, main
from diffkit.data import GraphDataModule
from diffkit.models import GraphTransformer

ROOT = Path(__file__).resolve().parents[1]
GRAPH_CONFIGS = ROOT / "examples" / "configs" / "graphs"
CPU = ["community_small", "sbm_cpu", "planar_cpu", "tree_cpu"]
FULL = ["planar", "sbm", "tree"]


def test_every_dataset_has_a_config() -> None:
    molecules = ("moses_cpu", "moses")  # tested in tests/test_molecules.py
    assert sorted(p.stem for p in GRAPH_CONFIGS.glob("*.yaml") if p.stem not in molecules) == sorted(CPU + FULL)


@pytest.mark.parametrize("name", CPU + FULL)
def test_graph_config_parses_and_builds(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _prepare()
    path = GRAPH_CONFIGS / f"{name}.yaml"
    cli = _cli_class()(args=["--config", str(path), f"--data.init_args.cache_dir={tmp_path / 'cache'}"], run=False)
    dm, model = cli.datamodule, cli.model
    assert isinstance(dm, GraphDataModule) and dm.dataset == name
    assert isinstance(model.denoiser, GraphTransformer)
    T = model.process.num_steps
    assert model.denoiser.num_steps == T and model.sample_steps in (None, T)
    assert all(p.num_steps == T for p in model.process.fields.values())
    header = path.read_text().split("seed_everything")[0]
    if name in FULL:
        assert T == 500 and "NOT RUN HERE" in header
    else:
        assert T <= 200 and "CPU protocol" in header
        raw = yaml.safe_load(path.read_text())
        assert raw["trainer"]["accelerator"] == "cpu"


@pytest.mark.parametrize("name", CPU)
def test_cpu_graph_config_trains_two_steps(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the configs write to runs/<name>/ relative to the cwd
    args = [
        "fit", "--config", str(GRAPH_CONFIGS / f"{name}.yaml"),
        "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)
    assert (tmp_path / "runs" / f"graphs_{name}" / "checkpoints" / "last.ckpt").is_file()
