"""`diffkit evaluate-graphs` (diffkit/graph_eval.py) on a checkpoint of a few steps: the files it
writes, the metrics' keys and ranges, the picture; and the graph6 round trip."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import networkx as nx
import pytest
from PIL import Image

from diffkit.cli import main
from diffkit.graph_eval import draw_graph_grid, read_graph6, write_graph6

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model.denoiser.init_args.hidden=16", "--model.denoiser.init_args.edge_hidden=8",
    "--model.denoiser.init_args.global_hidden=16", "--model.denoiser.init_args.depth=1",
    "--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
]  # fmt: skip


def run_cli(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)


def test_graph6_round_trip(tmp_path: Path) -> None:
    graphs = [nx.path_graph(3), nx.complete_graph(5), nx.empty_graph(4), nx.relabel_nodes(nx.cycle_graph(4), {0: "a"})]
    back = read_graph6(write_graph6(graphs, tmp_path / "g.g6"))
    assert len(back) == len(graphs)
    assert all(nx.is_isomorphic(a, b) for a, b in zip(graphs, back, strict=True))
    assert len(nx.read_graph6(tmp_path / "g.g6")) == len(graphs)  # plain networkx reads it too


def test_draw_graph_grid_has_two_panels(tmp_path: Path) -> None:
    fig = draw_graph_grid([nx.path_graph(4)] * 3, [nx.cycle_graph(5)] * 9, tmp_path / "grid.png", per_side=9)
    assert len(fig.axes) == 2 * 9
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG" and im.width > im.height


def test_evaluate_graphs_on_a_tiny_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = ROOT / "examples" / "configs" / "graphs" / "planar_cpu.yaml"
    run_cli(monkeypatch, ["fit", "--config", str(config), f"--data.init_args.cache_dir={tmp_path / 'cache'}", *TINY])
    ckpt = tmp_path / "runs" / "graphs_planar_cpu" / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    run_cli(monkeypatch, ["evaluate-graphs", "--ckpt_path", str(ckpt), "--out", str(out), "--num_steps", "10"])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "planar_cpu" and metrics["global_step"] == 3 and metrics["ema"] is True
    assert metrics["num_samples"] == metrics["num_test"] == 40  # the protocol: as many as the test split
    for name in ("degree", "clustering", "orbit", "spectre"):
        assert metrics[f"mmd/{name}"] >= -1e-12
        assert math.isfinite(metrics[f"ratio/{name}"]) and metrics[f"ratio/{name}"] >= 0
    for key in ("valid", "unique", "novel", "vun", "reference/valid"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["vun"] <= min(metrics["valid"], metrics["unique"], metrics["novel"])
    assert metrics["reference/valid"] == 1.0  # Delaunay graphs are connected and planar

    graphs = read_graph6(out / "samples.g6")
    assert len(graphs) == 40
    assert all(16 <= g.number_of_nodes() <= 24 for g in graphs)  # sizes from the training node counts
    with Image.open(out / "samples.png") as im:
        assert im.format == "PNG" and im.width > im.height  # two panels side by side


def test_evaluate_graphs_reads_the_dataset_from_config_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint without the data module's record (older runs) falls back to the run's config.yaml."""
    from diffkit.graph_eval import _dataset_args

    run = tmp_path / "run"
    (run / "logs" / "version_0").mkdir(parents=True)
    (run / "logs" / "version_0" / "config.yaml").write_text("data:\n  init_args:\n    dataset: tree_cpu\n    seed: 3\n")
    assert _dataset_args(run / "checkpoints" / "last.ckpt", {}) == {"dataset": "tree_cpu", "seed": 3}
    assert (
        _dataset_args(run / "x.ckpt", {"GraphDataModule": {"dataset": "sbm_cpu", "seed": 0, "cache_dir": None}})[
            "dataset"
        ]
        == "sbm_cpu"
    )
    with pytest.raises(ValueError, match="dataset="):
        _dataset_args(tmp_path / "elsewhere" / "checkpoints" / "last.ckpt", {})
