"""Training speed of the shipped configs under different torch intra-op thread counts, side by side.

    OMP_NUM_THREADS unset:  python -m benchmarks.threads [--rounds 2] [--out runs/benchmarks/threads]

One process; for each round, each config and each thread count (``default``: what torch chose at
start-up, then 1 and 2 via ``torch.set_num_threads``) in turn, a fresh ``diffkit fit`` of the
config runs for a few hundred steps with validation, logging and checkpoints off, and the wall time
of the steps after a warm-up is recorded. Interleaving the settings within each round lets the
load of a shared machine hit all of them alike. Writes ``results.csv`` and prints a table of the
median steps per second and the ratio to the default.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: config -> training steps timed per run (after WARMUP steps).
CONFIGS = {
    "swiss_roll": ("examples/configs/swiss_roll.yaml", 150),
    "markov_absorbing": ("examples/configs/markov_absorbing.yaml", 100),
    "graphs/planar_cpu": ("examples/configs/graphs/planar_cpu.yaml", 40),
}
WARMUP = 10


def _timed_fit(config: str, steps: int, threads: int) -> float:
    """Steps per second of ``steps`` training steps (after WARMUP) of ``config`` on ``threads`` threads."""
    from lightning.pytorch import Callback

    from diffkit.cli import _cli_class

    marks: dict[str, float] = {}

    class Clock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001, D102
            if trainer.global_step == WARMUP:
                marks["start"] = time.perf_counter()

        def on_train_end(self, trainer, pl_module):  # noqa: ANN001, D102
            marks["end"] = time.perf_counter()

    torch.set_num_threads(threads)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the configs write runs/<name>/ relative to the working directory
        try:
            cli = _cli_class()(
                args=[
                    "--config",
                    str(ROOT / config),
                    f"--trainer.max_steps={WARMUP + steps}",
                    "--trainer.limit_val_batches=0",
                    "--trainer.logger=false",
                    "--trainer.enable_progress_bar=false",
                    "--trainer.enable_model_summary=false",
                ],
                run=False,
            )
            cli.trainer.callbacks.append(Clock())
            cli.trainer.fit(cli.model, cli.datamodule)
        finally:
            os.chdir(cwd)
    return steps / (marks["end"] - marks["start"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/threads"))
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: per config, CONFIGS)")
    parser.add_argument("--settings", nargs="*", default=["default", "1", "2"], help="thread settings to time")
    args = parser.parse_args()
    default = torch.get_num_threads()
    settings = {k: v for k, v in {"default": default, "1": 1, "2": 2}.items() if k in args.settings}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(args.rounds):
        for name in args.configs:
            config, steps = CONFIGS[name]
            steps = args.steps or steps
            for label, threads in settings.items():
                load = os.getloadavg()[0]
                rate = _timed_fit(config, steps, threads)
                rows.append(
                    {
                        "round": r,
                        "config": name,
                        "threads": label,
                        "num_threads": threads,
                        "steps_per_s": rate,
                        "load1": load,
                    }
                )
                print(
                    f"round {r} {name:18s} threads={label:7s} ({threads}) {rate:8.2f} steps/s  load {load:.2f}",
                    flush=True,
                )
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\ntorch default threads: {default}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("| config | default | 1 thread | 2 threads | 1 / default |")
    print("|---|---|---|---|---|")
    for name in args.configs:
        med = {
            lab: statistics.median(x["steps_per_s"] for x in rows if x["config"] == name and x["threads"] == lab)
            for lab in settings
        }
        cells = [f"{med[lab]:.2f}" if lab in med else "-" for lab in ("default", "1", "2")]
        ratio = f"{med['1'] / med['default']:.1f}x" if {"1", "default"} <= set(med) else "-"
        print(f"| {name} | {' | '.join(cells)} | {ratio} |")


if __name__ == "__main__":
    main()
