"""Gradient clipping and the masked schedule for the ctime suite's rows: one row trained for several
seeds with the suite's FULL budget, ``clip_grad_norm_`` at a given norm (Lightning's
``gradient_clip_val``) and, for the masked row, a given schedule.

    python -m benchmarks.ctime_clip "masked (continuous)" 0,1,2,3 [CLIP [SCHEDULE [LOSS]]]

Same data, network body, budget, evaluation and code path as ``benchmarks/ctime.py`` (its
``_run_one``); prints one line per seed (NLL-bound gap to the exact entropy in bits per token, bigram
TV at 128 sampling steps, training seconds) and the mean and standard deviation over the seeds.
CLIP defaults to 1.0 (the suite's); 0 trains without clipping. SCHEDULE (loglinear | linear | cosine)
replaces the masked row's alpha(t) (default: the suite's ``Config.masked_schedule``, cosine), LOSS
(kl | hybrid | simple) its loss (default: the suite's ``Config.masked_loss``, kl).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

import torch

from benchmarks import ctime


def main(
    row: str, seeds: list[int], clip: float = 1.0, schedule: str | None = None, loss: str | None = None
) -> list[dict]:
    torch.set_num_threads(1)
    cfg = dataclasses.replace(
        ctime.FULL,
        train=dataclasses.replace(ctime.FULL.train, grad_clip=clip if clip > 0 else None),
        masked_schedule=schedule or ctime.FULL.masked_schedule,
        masked_loss=loss or ctime.FULL.masked_loss,
    )
    label = (
        f"{row}, clip {clip:g}" + (f", {schedule} schedule" if schedule else "") + (f", {loss} loss" if loss else "")
    )
    dm, entropy = ctime.markov_data(cfg)
    results = []
    for seed in seeds:
        rows = ctime._run_one(row, dm, seed, cfg, entropy)
        tv = {r["sample_steps"]: r["bigram_tv"] for r in rows}
        results.append(
            {"seed": seed, "gap": rows[0]["nll_gap_bits"], "tv128": tv.get(128), "train_s": rows[0]["train_seconds"]}
        )
        print(
            f"{label}, seed {seed}: gap {rows[0]['nll_gap_bits']:.4f} bits/token, bigram TV at 128 steps "
            f"{tv.get(128, float('nan')):.4f}, train {rows[0]['train_seconds']:.0f} s",
            flush=True,
        )
    gaps = [r["gap"] for r in results]
    spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    print(f"{label}: gap {statistics.mean(gaps):.4f} +- {spread:.4f} over seeds {seeds}", flush=True)
    return results


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        args[0],
        [int(s) for s in args[1].split(",")],
        float(args[2]) if len(args) > 2 else 1.0,
        args[3] if len(args) > 3 else None,
        args[4] if len(args) > 4 else None,
    )
