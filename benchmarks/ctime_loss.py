"""Loss choice for the continuous-time rows of the ctime suite: one model trained with a given loss kind.

    python -m benchmarks.ctime_loss masked|uniform simple|kl|hybrid [STEPS [LR]]

Same data, network body, budget (default: the suite's, 4000 AdamW steps of 128 sequences at lr 2e-3; STEPS and LR
change it), seed 0 and evaluation as
``benchmarks/ctime.py``'s FULL rows; prints the NLL bound's gap to the exact entropy (bits per
token) and the bigram TV at 32 and 128 sampling steps. The hybrid loss is cross-entropy + 0.01 x
the continuous ELBO (as the discrete rows' shipped hybrid).
"""

from __future__ import annotations

import sys
import time

import torch

import diffkit
from benchmarks import ctime
from benchmarks.common import generator
from benchmarks.training import STREAM_SAMPLE, Budget, train


def main(kind: str, loss: str, steps: int | None = None, lr: float | None = None) -> str:
    torch.set_num_threads(1)
    cfg = ctime.FULL
    budget = Budget(steps or cfg.train.steps, cfg.train.batch_size, lr or cfg.train.lr)
    dm, entropy = ctime.markov_data(cfg)
    proc, net, _, _ = ctime._model(f"{kind} (continuous)", cfg, 0)  # the suite's row; the loss is this script's
    start = time.perf_counter()
    result = train(proc, net, dm.split("train"), "x0", budget, 0, loss=loss, hybrid_weight=0.01)
    nll = ctime._nll_bits(proc, net, dm.split("test")[: cfg.num_nll], cfg, 0)
    ref = dm.split("val")[: cfg.num_eval]
    lines = [
        f"{kind} continuous, loss={loss}, {budget.steps} steps at lr {budget.lr:g}: train {result.seconds:.0f} s, "
        f"bound {nll:.4f} bits/token, gap {nll - entropy:.4f}"
    ]
    for steps in (32, 128):
        x = diffkit.sample(
            proc, net, (cfg.num_eval, cfg.seq_len), "x0", num_steps=steps, generator=generator(0, STREAM_SAMPLE)
        )
        lines.append(f"  {steps} steps: bigram TV {ctime._bigram_tv(x, ref, proc.num_states):.4f}")
    lines.append(f"  wall {time.perf_counter() - start:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    print(
        main(args[0], args[1], int(args[2]) if len(args) > 2 else None, float(args[3]) if len(args) > 3 else None),
        flush=True,
    )
