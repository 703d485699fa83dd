"""One process or two give the same answer.

The same model is fitted twice: on one CPU process with batches of 16, and on two
(``Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn")``, gloo) with 8 rows per process,
rank r holding rows r, r + 2, ... so that the two ranks' i-th batches together are exactly the
single process's i-th batch.

DiffusionModule draws t and the noise inside ``training_step`` from torch's global RNG, so the
two runs would not see the same t and noise (and, as ``test_ranks_draw_different_timesteps``
shows, the two ranks see the *same* draws as each other). To compare like with like, the runs use
``helpers.reliability.FixedDrawModule``: each example's t and noise are fixed in advance and looked
up by row, and the loss goes through the library's own ``q_sample`` / ``denoiser`` /
``process.loss``. With that:

* the weights after 2 SGD steps agree to float32 rounding (DDP averages the per-rank mean
  gradients, which is the single-process mean for equal shards);
* ``val/loss`` (logged with ``sync_dist``) and a torchmetrics value (diffkit's ``MMD`` between x0
  estimates and clean data, list states gathered across ranks) equal the single-process ones.

The 2-process run (~20-25 s, mostly imports in the spawned workers) happens once per module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.reliability import RowsDataModule, SyncCheckModule, make_trainer, quiet_lightning

from diffkit import GaussianProcess
from diffkit.models import MLPDenoiser

T = 10
TRAIN, VAL = 32, 32
PER_RANK_BATCH = 8
STEPS = 2  # one epoch of 2 batches in both runs, then one validation


def build_model(record_dir: str | None) -> SyncCheckModule:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(TRAIN + VAL, 2, generator=g)
    t_table = torch.randint(1, T + 1, (TRAIN + VAL,), generator=g)
    noise = torch.randn(TRAIN + VAL, 2, generator=g)
    torch.manual_seed(0)
    net = MLPDenoiser(2, T, hidden=32, depth=2)
    return SyncCheckModule(
        GaussianProcess(T),
        net,
        "eps",
        num_eval_samples=0,
        rows=rows,
        t_table=t_table,
        noise_table=noise,
        record_dir=record_dir,
    )


def data(model: SyncCheckModule, batch_size: int) -> RowsDataModule:
    return RowsDataModule(model.rows[:TRAIN], model.rows[TRAIN:], batch_size=batch_size, shuffle_seed=None, shard=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    quiet_lightning()
    root = tmp_path_factory.mktemp("ddp")
    single = build_model(None)
    make_trainer(root / "one", max_steps=STEPS, use_distributed_sampler=False).fit(
        single, data(single, 2 * PER_RANK_BATCH)
    )
    multi = build_model(str(root))
    trainer = make_trainer(
        root / "two", max_steps=STEPS, devices=2, strategy="ddp_spawn", use_distributed_sampler=False
    )
    trainer.fit(multi, data(multi, PER_RANK_BATCH))
    return {
        "single": single,
        "single_metrics": dict(single.trainer.callback_metrics),
        "multi": multi,  # ddp_spawn loads rank 0's final weights back into this object
        "multi_metrics": dict(trainer.callback_metrics),
        "drawn": [torch.load(Path(root) / f"rank{r}.pt") for r in range(2)],
    }


def test_two_processes_match_one_for_the_first_steps(runs) -> None:
    init = build_model(None).state_dict()
    single, multi = runs["single"].state_dict(), runs["multi"].state_dict()
    moved = 0.0
    for name, w in single.items():
        torch.testing.assert_close(multi[name], w, rtol=0, atol=1e-6, msg=f"{name}: 2 processes vs 1")
        moved = max(moved, float((w - init[name]).abs().max()))
    assert moved > 1e-3, "the comparison is vacuous: the weights did not move"


@pytest.mark.parametrize("name", ["val/loss", "val/x0_hat_mmd"])
def test_validation_metrics_sync_across_processes(runs, name) -> None:
    one, two = runs["single_metrics"][name], runs["multi_metrics"][name]
    assert bool(torch.isfinite(one))
    torch.testing.assert_close(
        two, one, rtol=1e-5, atol=1e-6, msg=f"{name}: 2 processes {float(two)} vs 1 process {float(one)}"
    )


def test_ranks_draw_different_timesteps(runs) -> None:
    rank0, rank1 = runs["drawn"]
    assert rank0.shape == rank1.shape == (STEPS, PER_RANK_BATCH)
    assert not torch.equal(rank0, rank1), f"both ranks drew t = {rank0.tolist()}"
