"""Process fingerprints: what a checkpoint records of the tables its process was built with.

A checkpoint stores the process's repr, but the tables a process builds from its arguments (the
schedule's alpha_bar, transition matrices) are non-persistent buffers that the state dict does not
hold; a model built with other arguments would silently use other tables. The fingerprint
summarizes them so :class:`~diffkit.DiffusionModule` can refuse such a checkpoint by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["process_fingerprint", "fingerprint_differences", "check_same_process"]


def process_fingerprint(process: nn.Module) -> dict[str, dict[str, Any]]:
    """What defines a process beyond its repr: its non-persistent buffers, summarized.

    Non-persistent buffers are the tables a process builds from its arguments (the schedule's
    alpha_bar, transition matrices Q / Qbar, a fixed stationary distribution); checkpoints do not
    hold them, so a model built with other arguments would silently use other tables. Persistent
    buffers (e.g. class frequencies filled from data) are in the state dict and are not included.

    Returns:
        buffer name -> {"shape": [...], "dtype": str, "stats": [4 floats]}, the stats being
        float64 projections of the values on fixed cosine vectors (compared with a tolerance, so
        last-bit differences between machines do not count as a different process).
    """
    out: dict[str, dict[str, Any]] = {}
    for prefix, module in process.named_modules():
        for name, buf in module._buffers.items():
            if buf is None or name not in module._non_persistent_buffers_set:
                continue
            values = buf.detach().to("cpu", torch.float64).flatten()
            n = values.numel()
            pos = (torch.arange(n, dtype=torch.float64) + 0.5) / max(n, 1)
            finite = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
            stats = [float((finite * torch.cos(torch.pi * k * pos)).sum()) for k in range(3)]
            stats.append(float(torch.isfinite(values).sum()))
            out[f"{prefix}.{name}" if prefix else name] = {
                "shape": list(buf.shape),
                "dtype": str(buf.dtype),
                "stats": stats,
            }
    return out


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two :func:`process_fingerprint` results."""
    diffs = []
    for name in sorted(set(saved) | set(current)):
        a, b = saved.get(name), current.get(name)
        if a is None or b is None:
            diffs.append(f"{name}: {'only in this model' if a is None else 'only in the checkpoint'}")
        elif list(a["shape"]) != list(b["shape"]):
            diffs.append(f"{name}: shape {tuple(a['shape'])} in the checkpoint, {tuple(b['shape'])} in this model")
        elif not all(
            abs(x - y) <= 1e-9 + 1e-8 * max(abs(x), abs(y)) for x, y in zip(a["stats"], b["stats"], strict=True)
        ):
            diffs.append(
                f"{name}: same shape {tuple(a['shape'])}, different values (e.g. another schedule or other "
                "transition matrices)"
            )
    return diffs


def check_same_process(info: Mapping[str, Any], process: nn.Module) -> None:
    """Compare a checkpoint's ``checkpoint["diffkit"]`` record with ``process``: repr, then fingerprint.

    Raises:
        ValueError: the checkpoint was trained with a different process (the message names what
            differs). A record without a fingerprint (older diffkit) passes with a warning after
            the repr check alone.
    """
    mismatch = (
        "checkpoint: it was trained with a different process.\n"
        f"  checkpoint: {info['process']}\n  this model: {repr(process)}\n"
    )
    if info["process"] != repr(process):
        raise ValueError(mismatch + "Build the model from the run's saved config.yaml, or start a new run")
    saved = info.get("process_fingerprint")
    if saved is None:
        warnings.warn(
            "checkpoint: has no process fingerprint (written by an older diffkit); only repr(process) was compared, "
            "so a different schedule or transition matrix would go unnoticed",
            stacklevel=3,
        )
        return
    diffs = fingerprint_differences(saved, process_fingerprint(process))
    if diffs:
        raise ValueError(
            mismatch
            + "".join(f"  differs: process.{d}\n" for d in diffs)
            + "Build the model from the run's saved config.yaml (same schedule and transition), or start a new run"
        )
