"""EMA of the weights, built on Lightning's EMAWeightAveraging, with buffers kept live.

Lightning's ``WeightAveraging`` deep-copies the model when fit starts and, with
``use_buffers=False``, never updates the copy's buffers, yet it copies *all* of the copy's
buffers back into the model at validation, at the end of training, and into checkpoints. A
buffer filled after that copy (a "marginal" transition's class frequencies, filled from the
training data when fit starts) would be overwritten by the stale value; with ``use_buffers=True``
integer buffers are averaged as floats. ``EMA`` averages parameters only and copies the live
model's buffers into the average before each of those transfers, so buffers always mirror the
model being trained.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging

__all__ = ["EMA"]


class EMA(EMAWeightAveraging):
    """Exponential moving average of the parameters (decay per optimizer step).

    Args:
        decay: weight of the previous average, in (0, 1).
        **kwargs: passed to ``EMAWeightAveraging`` (e.g. ``update_starting_at_step``).
    """

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        super().__init__(decay=decay, use_buffers=False, **kwargs)

    @torch.no_grad()
    def _sync_buffers(self, pl_module: LightningModule) -> None:
        if self._average_model is None:
            return
        for average, current in zip(self._average_model.module.buffers(), pl_module.buffers(), strict=True):
            average.copy_(current)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync_buffers(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync_buffers(pl_module)
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._sync_buffers(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
