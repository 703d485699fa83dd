"""The benchmark runner.

    python -m benchmarks gaussian|categorical|factorization|speed|all [--quick] [--seeds N]
                         [--out DIR] [--threads N] [--write-docs] [--docs-dir DIR]
    python -m benchmarks docs [--out DIR] [--docs-dir DIR]      # only rebuild docs/benchmarks.md

Each suite writes into ``<out>/<suite>/``: results.csv, results_raw.csv, table.md, PNG plots and
summary.json (the command, wall time, machine and budgets). ``--write-docs`` then rebuilds
``docs/benchmarks.md`` from every suite found under ``<out>`` (so suites may be run one at a time).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks import SUITES
from benchmarks.common import Settings, machine_info, settings_dict, write_json

DEFAULT_OUT = Path("runs/benchmarks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Run diffkit's benchmark suites.")
    parser.add_argument(
        "suite",
        choices=[*SUITES, "all", "docs"],
        help="which suite to run ('all' runs every suite in turn; 'docs' runs none and rebuilds the docs page)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test that finishes in seconds")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 3, or 1 with --quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default: 1, stable timings on a shared machine)"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="rebuild docs/benchmarks.md from every suite under --out"
    )
    parser.add_argument(
        "--docs-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "docs",
        help="where --write-docs writes (default: the repository's docs/)",
    )
    return parser


def run_suite(name: str, args: argparse.Namespace, command: str) -> dict:
    """Run one suite, write its table.md and summary.json, and return the summary."""
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if seeds < 1:
        raise SystemExit(f"--seeds: expected a positive number, got {seeds}")
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(quick=args.quick, seeds=seeds, out=out)
    machine = machine_info()
    print(f"[{name}] running ({'quick' if args.quick else 'full'}, {seeds} seed(s)) -> {out}", flush=True)
    start = time.perf_counter()
    report = importlib.import_module(f"benchmarks.{name}").run(settings)
    wall = time.perf_counter() - start
    markdown = report.markdown()
    (out / "table.md").write_text(markdown)
    summary = {
        "suite": name,
        "command": command,
        "wall_seconds": round(wall, 1),
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "settings": settings_dict(settings),
        "config": report.config,
        "findings": report.findings,
        "markdown": markdown,
        "plots": [list(p) for p in report.plots],
    }
    write_json(out / "summary.json", summary)
    print(markdown)
    print(f"[{name}] done in {wall:.1f} s; files in {out}", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks " + " ".join(argv)
    names = {"all": SUITES, "docs": ()}.get(args.suite, (args.suite,))
    summaries = [run_suite(name, args, command) for name in names]
    if args.write_docs or args.suite == "docs":
        from benchmarks.docs import write_docs

        path = write_docs(args.out, args.docs_dir)
        print(f"wrote {path}")
    return summaries


if __name__ == "__main__":
    main()
