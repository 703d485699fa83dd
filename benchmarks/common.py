"""What every suite shares: run settings, seeds, the machine, tables over seeds, files and plots.

A suite module exposes ``run(settings: Settings) -> Report``. The runner (``__main__.py``) times
it and writes ``summary.json`` and ``table.md``; the suite writes its own CSV files and plots into
``settings.out`` with :func:`write_csv` and :func:`save_figure`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Settings",
    "Report",
    "Table",
    "machine_info",
    "generator",
    "seeded_init",
    "aggregate",
    "mean_std",
    "fmt",
    "markdown_table",
    "write_csv",
    "new_figure",
    "save_figure",
    "LOG2",
]

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Settings:
    """How a suite is run.

    Attributes:
        quick: tiny budgets (a smoke test that finishes in seconds).
        seeds: number of seeds 0..seeds-1; every row runs every seed.
        out: this suite's output directory (created by the runner).
    """

    quick: bool
    seeds: int
    out: Path


@dataclass
class Table:
    """A Markdown table with a title and notes printed under it."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        text = f"### {self.title}\n\n" + markdown_table(self.headers, self.rows)
        if self.notes:
            text += "\n" + "\n".join(f"- {note}" for note in self.notes) + "\n"
        return text


@dataclass
class Report:
    """What a suite hands back to the runner.

    Attributes:
        tables: the result tables, in order.
        plots: (file name inside ``settings.out``, caption) pairs.
        findings: one-line key findings, shown above the tables.
        config: the budgets used (steps, batch sizes, T, ...), recorded in summary.json.
    """

    tables: list[Table]
    plots: list[tuple[str, str]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        parts = []
        if self.findings:
            parts.append("\n".join(f"- {line}" for line in self.findings) + "\n")
        parts += [table.markdown() for table in self.tables]
        return "\n".join(parts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version() -> str:
    """The repository's commit (read-only git calls), marked '+ local changes' if diffkit/ differs from it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "diffkit"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" + local changes in diffkit/" if dirty else "")


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, torch threads, torch / Python versions, the OS and the code version."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "diffkit_commit": code_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_1min_at_start": round(load, 2),
    }


def generator(seed: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one named random stream of one seed (streams never share numbers)."""
    return torch.Generator().manual_seed(1_000_003 * seed + stream)


@contextlib.contextmanager
def seeded_init(seed: int, stream: int = 0) -> Iterator[None]:
    """Seed torch's global RNG for a model's initialization, restoring its state afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(1_000_003 * seed + stream)
        yield


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are dropped."""
    finite = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not finite:
        return float("nan"), float("nan")
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


def aggregate(rows: Iterable[dict[str, Any]], keys: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Group per-seed rows by ``keys`` and give ``<metric>_mean`` / ``<metric>_std`` per group.

    Groups keep the order of their first row; ``seeds`` counts the rows of a group.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        agg = dict(zip(keys, key, strict=True))
        agg["seeds"] = len(members)
        for metric in metrics:
            agg[f"{metric}_mean"], agg[f"{metric}_std"] = mean_std([float(m[metric]) for m in members])
        out.append(agg)
    return out


def fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    """'mean ± std' with ``digits`` significant-ish decimals; 'n/a' for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    scale = max(abs(mean), abs(std or 0.0))
    form = ".2e" if 0 < scale < 1e-3 else f".{digits}f"
    if std is None:
        return format(mean, form)
    return f"{format(mean, form)} ± {format(std, form)}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as CSV, with the union of their keys as columns (first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.4):
    """A matplotlib (Agg) figure with a grid of axes (always a 2-D array)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save_figure(fig, path: Path) -> None:
    """Save a figure as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def settings_dict(settings: Settings) -> dict[str, Any]:
    d = asdict(settings)
    d["out"] = str(settings.out)
    return d
