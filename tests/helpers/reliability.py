"""Module-level pieces of the reliability tests (resume, multi-process, fault, numerics).

Everything here is importable by name, so ``ddp_spawn`` can pickle it into worker processes.

* :class:`EpochSeededSampler`: a shuffling sampler whose order is a pure function of
  (seed, epoch); Lightning calls ``set_epoch`` at every epoch start, so a resumed run sees the
  same order as an uninterrupted one (a ``DataLoader(shuffle=True, generator=g)`` does not: a new
  run re-seeds ``g`` and replays epoch 0's order).
* :class:`RowsDataModule`: a Tensor (or dict of Tensors) served in fixed-size batches, by
  diffkit's :class:`~diffkit.data._base.ResumableDataLoader` (resumable mid-epoch).
* :class:`RestoreGlobalRNG`: keeps torch's global CPU RNG state in checkpoints, the state
  ``DiffusionModule`` draws t and the noise from (see tests/test_resume.py).
* :class:`FixedDrawModule`: a DiffusionModule whose t and noise for an example are fixed in
  advance (looked up by the example's row), so runs that split a batch differently (one
  process vs two) see the same t and noise for every example; :class:`SyncCheckModule` adds a
  torchmetrics value logged at validation.
* :class:`Throttle` and :class:`StepLog`: callbacks for the fault test (slow steps down; log the
  step each run starts from).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from diffkit.data._base import ResumableDataLoader, TensorDictDataset
from diffkit.module import DiffusionModule

__all__ = [
    "EpochSeededSampler",
    "RowsDataModule",
    "RestoreGlobalRNG",
    "FixedDrawModule",
    "SyncCheckModule",
    "Throttle",
    "StepLog",
    "quiet_lightning",
    "make_trainer",
]


def quiet_lightning() -> None:
    """Silence Lightning's info banners and the warnings tiny test runs trigger."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*weights_only.*")


def make_trainer(root: str | os.PathLike, **kw: Any) -> pl.Trainer:
    """A CPU Trainer with no logger, bar, summary or sanity check; ``kw`` overrides."""
    opts: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
    )
    opts.update(kw)
    return pl.Trainer(**opts)


class EpochSeededSampler(Sampler[int]):
    """Indices in a random order that depends only on (seed, epoch).

    Args:
        num_rows: dataset length.
        seed: base seed.
    """

    def __init__(self, num_rows: int, seed: int) -> None:
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_rows, generator=gen).tolist())


class RowsDataModule(pl.LightningDataModule):
    """Serve fixed rows: training shuffled by an :class:`EpochSeededSampler` (or in order).

    With ``shard=True`` (use with ``Trainer(use_distributed_sampler=False)``) rank r of W
    processes gets rows r, r + W, r + 2W, ... of each split, in order, so the union of the
    ranks' i-th batches is exactly the single-process i-th batch of W * batch_size rows.

    Args:
        train: (N, ...) Tensor or dict of (N, ...) Tensors.
        val: the same kind, for validation (default: ``train``).
        batch_size: rows per batch (per process).
        shuffle_seed: None serves training rows in order.
        shard: split the rows between processes as described above.
    """

    def __init__(
        self, train: Any, val: Any = None, batch_size: int = 16, shuffle_seed: int | None = 0, shard: bool = False
    ) -> None:
        super().__init__()
        self.train, self.val = train, train if val is None else val
        self.batch_size, self.shuffle_seed, self.shard = batch_size, shuffle_seed, shard

    def _rows(self, data: Any) -> Any:
        if not self.shard or self.trainer is None or self.trainer.world_size == 1:
            return data
        r, w = self.trainer.global_rank, self.trainer.world_size
        return {k: v[r::w] for k, v in data.items()} if isinstance(data, Mapping) else data[r::w]

    def train_dataloader(self) -> DataLoader:
        ds = TensorDictDataset(self._rows(self.train))
        sampler = None if self.shuffle_seed is None else EpochSeededSampler(len(ds), self.shuffle_seed)
        return ResumableDataLoader(ds, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDictDataset(self._rows(self.val)), batch_size=self.batch_size)


class RestoreGlobalRNG(pl.Callback):
    """Save torch's global CPU RNG state in every checkpoint and restore it on resume.

    A workaround for tests: DiffusionModule draws t and noise from this global state, and
    Lightning does not checkpoint it.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["test_global_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        torch.set_rng_state(checkpoint["test_global_rng_state"])


def _rows_key(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


class FixedDrawModule(DiffusionModule):
    """DiffusionModule whose t and noise per example are fixed tables indexed by the example's row.

    ``_forward_loss`` still runs the library's own draw (``super()._forward_loss``) and records
    the t it drew (``drawn_t``), then computes the loss that is used with the fixed t and noise
    through the same public calls (``q_sample(x0, t, noise)``, ``denoiser``, ``process.loss``).

    Args:
        rows: (N, ...) every example the run can see (train and val), one row each.
        t_table: (N,) int64 time step of each row.
        noise_table: (N, ...) noise of each row (Gaussian: eps; categorical: Gumbel (..., K)).
        record_dir: if set, each rank writes the t it drew to ``record_dir/rank{r}.pt`` at train end.
        **kwargs: DiffusionModule arguments.
    """

    def __init__(
        self,
        *args: Any,
        rows: Tensor,
        t_table: Tensor,
        noise_table: Tensor,
        record_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rows, self.t_table, self.noise_table = rows, t_table, noise_table
        self.record_dir = record_dir
        self.drawn_t: list[Tensor] = []

    def _row_index(self, x0: Tensor) -> Tensor:
        keys, table = _rows_key(x0), _rows_key(self.rows).to(x0.device)
        match = (keys[:, None, :] == table[None, :, :]).all(-1)  # (B, N)
        assert bool((match.sum(1) == 1).all()), "every example must be exactly one known row"
        return match.float().argmax(1)

    def _forward_loss(
        self, x0: Any, generator: Any = None, cond: Any = None, mean: bool = False
    ) -> tuple[Tensor, Tensor, Any, Any]:
        _, drawn_t, _, _ = super()._forward_loss(x0, generator, cond, mean)
        if self.training:
            self.drawn_t.append(drawn_t.detach().cpu())
        idx = self._row_index(x0).cpu()
        t = self.t_table[idx].to(self.device)
        noised = self.process.q_sample(x0, t, self.noise_table[idx].to(self.device))
        output = self.denoiser(noised.x_t, t)
        loss = self.process.loss(
            output, x0, noised.x_t, t, noised.noise, self.param, self.loss_kind, self.hybrid_weight
        )
        return (loss.mean() if mean else loss), t, output, noised

    def on_train_end(self) -> None:
        if self.record_dir is not None:
            path = Path(self.record_dir) / f"rank{self.global_rank}.pt"
            torch.save(torch.stack(self.drawn_t), path)


class Throttle(pl.Callback):
    """Sleep after every training batch, so a run lasts long enough to be interrupted."""

    def __init__(self, seconds: float = 0.01) -> None:
        self.seconds = seconds

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        import time

        time.sleep(self.seconds)


class StepLog(pl.Callback):
    """Append ``global_step`` at train start and at every batch end to a text file (one line each)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text + "\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(f"start {trainer.global_step}")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._write(f"step {trainer.global_step}")


class SyncCheckModule(FixedDrawModule):
    """FixedDrawModule that also logs a torchmetrics value at validation: diffkit's ``MMD``
    between the model's x0 estimates and the clean batch (list states, gathered across ranks).
    Optimizer: SGD (lr 0.1), so weight differences are linear in gradient differences."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import functools

        from diffkit.metrics import MMD

        kwargs.setdefault("optimizer", functools.partial(torch.optim.SGD, lr=0.1))
        super().__init__(*args, **kwargs)
        self.val_mmd = MMD(bandwidth=1.0)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        x0 = self._unpack(batch)
        _, t, output, noised = self._forward_loss(x0)
        x0_hat = self.param.x0_from_output(self.process, output, noised.x_t, t)
        self.val_mmd.update(x0_hat.double(), x0.double())
        self.log("val/x0_hat_mmd", self.val_mmd, on_epoch=True)
