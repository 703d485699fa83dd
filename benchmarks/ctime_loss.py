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
from benchmarks.common import LOG2, generator, seeded_init
from benchmarks.training import STREAM_INIT, STREAM_SAMPLE, Budget, train
from diffkit.data import MarkovTokensDataModule
from diffkit.models import TokenTransformer
from diffkit.processes import MaskedProcess, UniformProcess


def main(kind: str, loss: str, steps: int | None = None, lr: float | None = None) -> str:
    torch.set_num_threads(1)
    cfg = ctime.FULL
    budget = Budget(steps or cfg.train.steps, cfg.train.batch_size, lr or cfg.train.lr)
    dm = MarkovTokensDataModule(
        cfg.num_classes, cfg.seq_len, num_train=cfg.num_train, num_val=max(cfg.num_eval, cfg.num_nll), seed=0
    )
    dm.setup()
    entropy = dm.true_entropy_nats_per_token() / LOG2
    K, body = cfg.num_classes, dict(seq_len=cfg.seq_len, d_model=cfg.d_model, depth=cfg.depth, heads=cfg.heads)
    with seeded_init(0, STREAM_INIT):
        if kind == "masked":
            proc, net = MaskedProcess(K), TokenTransformer(K + 1, K, num_steps=None, time_conditioning=False, **body)
        else:
            proc, net = UniformProcess(K), TokenTransformer(K, K, num_steps=None, **body)
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
