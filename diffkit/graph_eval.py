"""Evaluate a trained graph diffusion checkpoint on the SPECTRE / DiGress protocol.

    diffkit evaluate-graphs --ckpt_path runs/graphs_planar_cpu/checkpoints/last.ckpt --out runs/graphs_planar_cpu/eval

loads the checkpoint (its ``state_dict`` holds the EMA weights when the run used ``ema_decay``),
samples as many graphs as the dataset's test split has (node counts drawn from the training
data's, recorded by the module), and writes into ``--out``:

- ``samples.g6``: the generated graphs, one graph6 line each (``networkx.read_graph6`` reads them
  back as a list);
- ``metrics.json``: :class:`diffkit.metrics.graphs.GraphMetrics` against the test split (MMD^2
  of degree / clustering / orbit / spectre, their ratios to the train-vs-test MMD^2, V.U.N. and
  the valid fraction of the test graphs), the train-vs-test MMD^2 themselves, plus the dataset, the
  checkpoint's step, the seed and
  the wall times;
- ``samples.png``: generated graphs drawn next to training graphs (spring layout).

The dataset is read from the checkpoint (``GraphDataModule.state_dict`` records it) or, for runs
whose checkpoints lack it, from the ``config.yaml`` LightningCLI wrote in the run folder; pass
``dataset=`` to override. A run trained on the user's own graph file (``GraphFileDataModule``)
is evaluated on that file's test split (the checkpoint records the path, the split and the file's
hash; a changed file is refused), and its samples are written in the file's own format
(``samples.g6`` / ``.s6`` / ``.pkl``, with the original node / edge attribute values).

Validity (the "V" of V.U.N.): the dataset's rule, or any ``graph -> bool`` function given by import
path (``--validity my_module.is_valid``; the current directory is importable), which overrides it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx

__all__ = ["evaluate_graph_checkpoint", "draw_graph_grid", "write_graph6", "read_graph6"]


def write_graph6(graphs: Sequence[nx.Graph], path: str | Path) -> Path:
    """Write graphs as graph6, one per line (no header), readable by ``networkx.read_graph6``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for g in graphs:
            f.write(nx.to_graph6_bytes(nx.convert_node_labels_to_integers(g), header=False))
    return path


def read_graph6(path: str | Path) -> list[nx.Graph]:
    """The graphs of a file written by :func:`write_graph6` (always a list, even of one graph)."""
    lines = [line.strip() for line in Path(path).read_bytes().splitlines() if line.strip()]
    return [nx.from_graph6_bytes(line) for line in lines]


def draw_graph_grid(
    generated: Sequence[nx.Graph],
    train: Sequence[nx.Graph],
    path: str | Path,
    per_side: int = 16,
    title: str = "",
    seed: int = 0,
) -> Any:
    """Draw up to ``per_side`` generated graphs (left panel) next to as many training graphs (right).

    Each panel is a square grid of small axes, one graph each, spring layout seeded by ``seed``.

    Args:
        generated: generated graphs.
        train: training graphs (the first ``per_side`` are drawn).
        path: PNG path (parent folders are created).
        per_side: graphs per panel (a square number gives a full grid).
        title: figure title.
        seed: seed of the spring layouts.

    Returns:
        The matplotlib Figure (closed; its ``axes`` are the 2 * rows * cols graph axes).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = max(1, math.ceil(math.sqrt(per_side)))
    rows = max(1, math.ceil(per_side / cols))
    fig = plt.figure(figsize=(2 * 2.2 * cols + 0.4, 2.2 * rows + 0.8), layout="constrained")
    panels = fig.subfigures(1, 2, wspace=0.02)
    for panel, graphs, name in ((panels[0], generated, "generated"), (panels[1], train, "training")):
        graphs = list(graphs)[:per_side]
        panel.suptitle(f"{name} ({len(graphs)} shown)")
        axes = panel.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k >= len(graphs):
                continue
            g = graphs[k]
            if g.number_of_nodes() == 0:
                ax.set_title("(empty)", fontsize=7)
                continue
            pos = nx.spring_layout(g, seed=seed)
            nx.draw_networkx_edges(g, pos, ax=ax, width=0.6, alpha=0.7)
            nx.draw_networkx_nodes(g, pos, ax=ax, node_size=10, node_color="#1f77b4")
            ax.set_title(f"n={g.number_of_nodes()} m={g.number_of_edges()}", fontsize=7)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig


def _graph_file_state(checkpoint: dict) -> dict[str, Any] | None:
    """What ``GraphFileDataModule.state_dict`` stored in the checkpoint (its ``init_args`` rebuild it), or None."""
    for value in checkpoint.values():
        if isinstance(value, dict) and "init_args" in value and "diffkit_sample_format" in value:
            return value
    return None


def _dataset_args(ckpt_path: Path, checkpoint: dict) -> dict[str, Any]:
    """GraphDataModule arguments of the run: from the checkpoint, else from the run's config.yaml."""
    saved = checkpoint.get("GraphDataModule") or checkpoint.get("datamodule_hyper_parameters") or {}
    if "dataset" in saved:
        return {k: saved[k] for k in ("dataset", "seed", "cache_dir") if k in saved}
    import yaml

    run = ckpt_path.resolve().parent.parent
    for config in [run / "config.yaml", *sorted(run.glob("*/*/config.yaml")), *sorted(run.glob("*/config.yaml"))]:
        if config.is_file():
            data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
            args = data.get("init_args") or {}
            if "dataset" in args:
                return {k: args[k] for k in ("dataset", "seed", "cache_dir") if k in args}
    raise ValueError(
        f"ckpt_path: cannot tell which graph dataset {ckpt_path} was trained on (no GraphDataModule "
        "arguments in the checkpoint, no config.yaml in its run folder); pass dataset="
    )


def evaluate_graph_checkpoint(
    ckpt_path: str | Path,
    out: str | Path | None = None,
    num_samples: int | None = None,
    num_steps: int | None = None,
    seed: int = 0,
    dataset: str | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    per_side: int = 16,
    progress: bool = False,
    validity: str | None = None,
) -> dict[str, Any]:
    """Sample graphs from a checkpoint and score them against the test split (module docstring).

    Args:
        ckpt_path: a checkpoint written by ``diffkit fit`` on a ``GraphDataModule`` or a ``GraphFileDataModule``.
        out: output folder (default: ``<run folder>/eval``, the run folder holding ``checkpoints/``).
        num_samples: graphs to generate (default: the test split's size, as the protocol).
        num_steps: reverse steps (default: all T).
        seed: seeds the sampler.
        dataset: override the dataset name read from the run.
        cache_dir: GraphDataModule cache folder (default: the run's, else ``~/.cache/diffkit/graphs``).
        device: "cpu", "cuda", ...
        batch_size: graphs sampled per call.
        per_side: graphs drawn per panel of samples.png.
        progress: show a progress bar over the reverse steps.
        validity: import path of a ``graph -> bool`` rule ("my_module.is_valid") for V.U.N.,
            overriding the dataset's (default: the dataset's rule, or none).

    Returns:
        The metrics dict written to metrics.json.
    """
    import torch

    from diffkit.cli import load_model
    from diffkit.data.graph_files import GraphFileDataModule, resolve_callable
    from diffkit.data.graphs import GraphDataModule
    from diffkit.graphs import to_networkx
    from diffkit.metrics.graphs import GraphMetrics

    ckpt_path = Path(ckpt_path)
    # The run's metadata only (dataset arguments, step, EMA): memory-mapped, so the weights are not read twice.
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    if "MoleculeDataModule" in checkpoint and dataset is None:  # molecules: judged by RDKit (diffkit.molecule_eval)
        from diffkit.molecule_eval import evaluate_molecule_checkpoint

        return evaluate_molecule_checkpoint(
            ckpt_path, checkpoint, out, num_samples, num_steps, seed, device, batch_size, per_side, progress
        )
    model = load_model(ckpt_path, device)
    if model.size_counts is None:
        raise ValueError("ckpt_path: the checkpoint has no recorded node counts; was it trained on graph data?")
    # The run's metadata only (dataset arguments, step, EMA): memory-mapped, so the weights are not read twice.
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    file_state = _graph_file_state(checkpoint) if dataset is None else None
    if file_state is not None:  # trained on the user's own graph file
        dm = GraphFileDataModule(**file_state["init_args"])
        dm.load_state_dict(file_state)  # refuses a file that changed since training
        fmt, name = dm.sample_format, str(dm.path)
    else:
        args = _dataset_args(ckpt_path, checkpoint) if dataset is None else {"dataset": dataset}
        if cache_dir is not None:
            args["cache_dir"] = cache_dir
        dm, fmt, name = GraphDataModule(**args), None, args["dataset"]
    dm.setup()
    rule = resolve_callable(validity) if validity is not None else dm.validity
    rule_name = validity if validity is not None else (dm.validity_path if fmt is not None else dm.validity)
    test = dm.test_graphs()
    num_samples = len(test) if num_samples is None else num_samples
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    out = ckpt_path.resolve().parent.parent / "eval" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    gen = torch.Generator(device).manual_seed(seed)
    graphs: list[nx.Graph] = []
    while len(graphs) < num_samples:
        n = min(batch_size, num_samples - len(graphs))
        samples = model.sample(n, num_steps=num_steps, generator=gen, progress=progress)
        samples = {k: v.cpu() for k, v in samples.items()}
        graphs += to_networkx(samples) if fmt is None else fmt.decode(samples)
    sample_s = time.perf_counter() - start
    if fmt is None:
        write_graph6(graphs, out / "samples.g6")
    else:
        fmt.write(graphs, out / f"samples{fmt.suffix}")

    start = time.perf_counter()
    metric = GraphMetrics(test, dm.train_graphs(), dm.max_nodes, rule)
    metric.update(graphs)
    values = {k: float(v) for k, v in metric.compute().items()}
    # The ratios' denominators: MMD^2 between the train and test splits (the "fresh data" reference).
    values.update({f"train_vs_test/{k}": float(v) for k, v in metric.baseline()._asdict().items()})
    # DeFoG-style ratios (denominators rounded to 4 decimals, zeros dropped; no wavelet term):
    # diffkit.metrics.graph_ratios
    from diffkit.metrics.graph_ratios import rounded_ratios

    names = [k.split("/", 1)[1] for k in values if k.startswith("mmd/")]
    rounded = rounded_ratios({k: values[f"mmd/{k}"] for k in names}, {k: values[f"train_vs_test/{k}"] for k in names})
    values.update({f"ratio_rounded/{k}": v for k, v in rounded.ratios.items()}, **{"ratio_rounded/mean": rounded.mean})
    metric_s = time.perf_counter() - start

    steps = num_steps or model.process.num_steps
    result = {
        **values,
        "dataset": name,
        "validity": rule_name,
        "checkpoint": str(ckpt_path),
        "global_step": int(checkpoint.get("global_step", -1)),
        "epoch": int(checkpoint.get("epoch", -1)),
        "ema": "current_model_state" in checkpoint,
        "num_samples": num_samples,
        "num_test": len(test),
        "num_steps": steps,
        "seed": seed,
        "sample_wall_s": round(sample_s, 2),
        "metric_wall_s": round(metric_s, 2),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    draw_graph_grid(
        graphs,
        dm.train_graphs(),
        out / "samples.png",
        per_side=per_side,
        title=f"{Path(name).name}: step {result['global_step']}, {steps} reverse steps, V.U.N. "
        f"{100 * values['vun']:.0f}%",
    )
    return result


def _parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="diffkit evaluate-graphs",
        description="Sample graphs from a checkpoint trained on a GraphDataModule or GraphFileDataModule and score "
        "them against the test split.",
    )
    p.add_argument("--ckpt_path", "--ckpt", required=True, help="checkpoint written by `diffkit fit`")
    p.add_argument("--out", default=None, help="output folder (default: <run folder>/eval)")
    p.add_argument(
        "--num_samples", "--num-samples", type=int, default=None, help="graphs to generate (default: test split size)"
    )
    p.add_argument("--num_steps", type=int, default=None, help="reverse steps (default: all T)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default=None, help="override the dataset name read from the run")
    p.add_argument("--cache_dir", default=None, help="GraphDataModule cache folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--per_side", type=int, default=16, help="graphs drawn per panel of samples.png")
    p.add_argument("--progress", action="store_true", help="progress bar over the reverse steps")
    p.add_argument(
        "--validity",
        default=None,
        help="import path of a graph -> bool rule, e.g. my_module.is_valid (overrides the dataset's)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``diffkit evaluate-graphs ...`` (also ``python -m diffkit.graph_eval ...``): print and return the metrics."""
    ns = _parser().parse_args(None if argv is None else list(argv))
    result = evaluate_graph_checkpoint(
        ns.ckpt_path,
        ns.out,
        ns.num_samples,
        ns.num_steps,
        ns.seed,
        ns.dataset,
        ns.cache_dir,
        ns.device,
        per_side=ns.per_side,
        progress=ns.progress,
        validity=ns.validity,
    )
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
