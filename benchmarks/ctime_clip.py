"""Gradient clipping and the masked schedule for the ctime suite's rows: one row trained for several
seeds with the suite's FULL budget, ``clip_grad_norm_`` at a given norm (Lightning's
``gradient_clip_val``) and, for the masked row, a given schedule.

    python -m benchmarks.ctime_clip "masked (continuous)" 0,1,2,3 [CLIP [SCHEDULE [LOSS]]] [--ema DECAY]

Same data, network body, budget, evaluation and code path as ``benchmarks/ctime.py`` (its
``_run_one``); prints one line per seed (NLL-bound gap to the exact entropy in bits per token, bigram
TV at 128 sampling steps, training seconds) and the mean and standard deviation over the seeds.
CLIP defaults to 1.0 (the suite's); 0 trains without clipping. SCHEDULE (loglinear | linear | cosine)
replaces the masked row's alpha(t) (default: the suite's ``Config.masked_schedule``, cosine), LOSS
(kl | hybrid | simple) its loss (default: the suite's ``Config.masked_loss``, kl). ``--ema DECAY``
evaluates an exponential moving average of the weights (``Budget.ema_decay``; the shipped configs'
``ema_decay``) instead of the suite's setting; ``--ema 0`` evaluates the last iterate. ``--weight
count`` trains and bounds the masked row with ``MaskedProcess(elbo_weight="count")`` (loglinear).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from benchmarks import ctime


def main(
    row: str,
    seeds: list[int],
    clip: float = 1.0,
    schedule: str | None = None,
    loss: str | None = None,
    ema: float | None = None,
    weight: str | None = None,
) -> list[dict]:
    torch.set_num_threads(1)
    budget = dataclasses.replace(ctime.FULL.train, grad_clip=clip if clip > 0 else None)
    if ema is not None:
        budget = dataclasses.replace(budget, ema_decay=ema if ema > 0 else None)
    cfg = dataclasses.replace(
        ctime.FULL,
        train=budget,
        masked_schedule=schedule or ctime.FULL.masked_schedule,
        masked_loss=loss or ctime.FULL.masked_loss,
        masked_weight=weight or ctime.FULL.masked_weight,
    )
    label = (
        f"{row}, clip {clip:g}"
        + (f", {schedule} schedule" if schedule else "")
        + (f", {loss} loss" if loss else "")
        + (f", EMA {ema:g}" if ema is not None else "")
        + (f", {weight} weight" if weight else "")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row")
    parser.add_argument("seeds", help="comma-separated, e.g. 0,1,2,3")
    parser.add_argument("clip", nargs="?", type=float, default=1.0)
    parser.add_argument("schedule", nargs="?", default=None)
    parser.add_argument("loss", nargs="?", default=None)
    parser.add_argument("--ema", type=float, default=None, help="EMA decay (0: none; default: the suite's)")
    parser.add_argument("--weight", default=None, help="the masked row's elbo_weight: schedule | count")
    args = parser.parse_args()
    main(args.row, [int(s) for s in args.seeds.split(",")], args.clip, args.schedule, args.loss, args.ema, args.weight)
