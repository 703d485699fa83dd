"""DiffusionModule: one LightningModule that trains, evaluates and samples every ForwardProcess.

It orchestrates and does no math: times are drawn by the process, noise by ``q_sample``, the
loss and the ELBO terms by the process through the parametrization, sampling by
:func:`diffkit.sampling.sample`. Optimizers, LR schedules, EMA, checkpointing, logging and
multi-device training are Lightning's.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess, LossKind
from diffkit.processes.categorical import CategoricalProcess
from diffkit.processes.product import ProductProcess
from diffkit.ema import EMA
from diffkit.likelihood import nll_bound
from diffkit.sampling import sample as run_sampler

__all__ = ["DiffusionModule"]

ParametrizationArg = Union[str, Parametrization, dict[str, Union[str, Parametrization]]]


def _batch_size(x: Any) -> int:
    return next(v for v in x.values() if isinstance(v, Tensor)).shape[0] if isinstance(x, Mapping) else x.shape[0]


def _take(x: Any, n: int) -> Any:
    return {k: v[:n] for k, v in x.items()} if isinstance(x, Mapping) else x[:n]


def _cat(parts: list) -> Any:
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _to(x: Any, device: torch.device | str) -> Any:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, Mapping) else x.to(device)


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
            out[f"{prefix}.{name}" if prefix else name] = {"shape": list(buf.shape), "dtype": str(buf.dtype), "stats": stats}
    return out


def _fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two :func:`process_fingerprint` results."""
    diffs = []
    for name in sorted(set(saved) | set(current)):
        a, b = saved.get(name), current.get(name)
        if a is None or b is None:
            diffs.append(f"{name}: {'only in this model' if a is None else 'only in the checkpoint'}")
        elif list(a["shape"]) != list(b["shape"]):
            diffs.append(f"{name}: shape {tuple(a['shape'])} in the checkpoint, {tuple(b['shape'])} in this model")
        elif not all(abs(x - y) <= 1e-9 + 1e-8 * max(abs(x), abs(y)) for x, y in zip(a["stats"], b["stats"])):
            diffs.append(f"{name}: same shape {tuple(a['shape'])}, different values (e.g. another schedule or other transition matrices)")
    return diffs


# Random streams of the module's own generators (see DiffusionModule, "Randomness").
_TRAIN_STREAM, _VAL_STREAM = 1, 2


@dataclass
class _TrainStream:
    """Where the training stream is: the number of steps drawn so far. A plain object, so the
    per-step update skips nn.Module.__setattr__ (a few microseconds on a LightningModule)."""

    draws: int = 0


_MASK64 = (1 << 64) - 1


def _fold(h: int, part: int) -> int:
    """One link of a SplitMix64 chain (Steele et al. 2014): mix(h ^ part), mix a bijective 64-bit mixer."""
    x = ((h ^ (int(part) & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=256)
def _chain(*parts: int) -> int:
    """The chain's state after ``parts``; memoized (a pure function), so the (seed, rank, stream)
    prefix that every training step shares is folded once."""
    h = 0
    for p in parts:
        h = _fold(h, p)
    return h


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from one or more non-negative ints: each part folded into a SplitMix64 chain, so
    nearby keys (step n and n + 1, rank 0 and 1) give unrelated seeds. Pure Python ints, about a
    microsecond: it runs before every training step."""
    return _fold(_chain(*parts[:-1]), parts[-1]) >> 1


class DiffusionModule(pl.LightningModule):
    """Train and sample a diffusion model for any ForwardProcess.

    Args:
        process: the forward process (Gaussian, categorical, a ProductProcess, or your own).
        denoiser: ``denoiser(x_t, t)`` returning the parametrization's output.
        parametrization: "eps" | "x0" | "v" | "previous-step" (what the process accepts), a
            Parametrization object, or for a ProductProcess a dict field -> one of those.
        loss: "simple" (the parametrization's MSE / cross-entropy), "kl" (the ELBO's per-step
            terms, scaled by T) or "hybrid" (simple + hybrid_weight * kl).
        hybrid_weight: weight of the kl term in "hybrid".
        optimizer: optimizer factory over the denoiser's parameters (LightningCLI's
            ``optimizer`` class_path / init_args).
        lr_scheduler: optional LR scheduler factory.
        ema_decay: if set, an EMA of the parameters (:class:`diffkit.ema.EMA`, Lightning's
            EMAWeightAveraging with buffers kept live) is used for validation, checkpoints and sampling.
        sample_steps: reverse steps for validation samples (None: all T).
        sample_eta: DDIM's eta for Gaussian fields in validation samples (None: ancestral).
        num_eval_samples: samples drawn at each validation epoch end for the sample metrics
            (0 disables them); the floor uses as many fresh validation examples.
        validate_inputs: check every training batch (type, dtype, shape, class-id range) before using
            it; NaN / inf in Gaussian data, which always makes the loss non-finite, is named by the
            same check run when a loss is non-finite (one host sync per step instead of two).
        noise_seed: seed of the module's own random streams of t and noise (below); None: the
            seed that ``seed_everything`` set (env ``PL_GLOBAL_SEED``, i.e. ``seed_everything:``
            of a CLI config), else ``torch.initial_seed()``. (Not named ``seed``, which a data
            module's hyperparameters often hold: Lightning refuses to log clashing values.)

    Randomness: training draws t and the noise from a module-owned ``torch.Generator`` on the
    module's device, re-seeded before every training step from (noise_seed, global rank, number of
    training steps taken so far). So DDP ranks draw different t and noise, the draws do not
    depend on torch's global RNG (nor on validation, data loading or anything else that uses it),
    and a checkpoint only needs the seed and the step count (``checkpoint["diffkit"]["rng"]``) to
    resume the exact stream on every rank; a resumed run keeps its checkpoint's seed. Validation
    draws from a second generator re-seeded from (seed, global rank) at every validation epoch
    start, so every validation sees the same t and noise and never touches the training stream.
    (The validation-end NLL bound and samples keep their own generator seeded by the global step.)

    Raises:
        ValueError: a parametrization the process does not accept, an unknown loss.
    """

    def __init__(
        self,
        process: ForwardProcess,
        denoiser: nn.Module,
        parametrization: ParametrizationArg = "eps",
        loss: LossKind = "simple",
        hybrid_weight: float = 1e-3,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        ema_decay: Optional[float] = None,
        sample_steps: Optional[int] = None,
        sample_eta: Optional[float] = None,
        num_eval_samples: int = 1000,
        validate_inputs: bool = True,
        noise_seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        if not isinstance(process, ForwardProcess):
            raise TypeError(f"process: expected a ForwardProcess, got {type(process).__name__}")
        if not callable(denoiser):
            raise TypeError(f"denoiser: expected an nn.Module called as denoiser(x_t, t), got {type(denoiser).__name__}")
        if loss not in ("simple", "kl", "hybrid"):
            raise ValueError(f"loss: unknown kind {loss!r}; expected one of ['hybrid', 'kl', 'simple']")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay: expected a value in (0, 1) or None, got {ema_decay}")
        if num_eval_samples < 0:
            raise ValueError(f"num_eval_samples: expected >= 0, got {num_eval_samples}")
        if noise_seed is not None and (isinstance(noise_seed, bool) or not isinstance(noise_seed, int) or noise_seed < 0):
            raise ValueError(f"noise_seed: expected a non-negative int or None, got {noise_seed!r}")
        with warnings.catch_warnings():
            # Under LightningCLI the saved hyperparameters are the parsed config (class_path /
            # init_args), from which load_from_checkpoint rebuilds process and denoiser.
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module` and is already saved")
            self.save_hyperparameters()
        self._drop_unserializable_hparams()
        self.process = process
        self.denoiser = denoiser
        self.param = process.get_parametrization(parametrization)
        if sample_steps is not None:
            self._check_stride(sample_steps)
        self.loss_kind = loss
        self.hybrid_weight = hybrid_weight
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.ema_decay = ema_decay
        self.sample_steps = sample_steps
        self.sample_eta = sample_eta
        self.num_eval_samples = num_eval_samples
        self.validate_inputs = validate_inputs
        self.data_shape: Any = None  # per-example shape(s), recorded from the data
        self.reference: Any = None  # a few held-out examples, kept in checkpoints for plots
        self.size_counts: Tensor | None = None  # (N + 1,) node-count histogram of masked data
        self._output_checked = False
        self._eval_buffer: list = []
        self._eval_count = 0
        self.noise_seed = noise_seed
        self._rng_seed: int | None = None  # resolved when fit starts, or restored from a checkpoint
        self._stream = _TrainStream()  # the training stream's position (a plain object: updated every step)
        self._train_gen: torch.Generator | None = None
        self._val_gen: torch.Generator | None = None

    def __deepcopy__(self, memo: dict) -> DiffusionModule:
        """Deep copy (EMA's averaged model) sharing the trainer and the optimizer factories.

        Under DDP these hold process-group locks that cannot be copied; the averaged copy needs
        none of them.
        """
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        shared = ("optimizer_factory", "lr_scheduler_factory", "_trainer", "_fabric", "_device_mesh")
        for key, value in self.__dict__.items():
            if key in ("_train_gen", "_val_gen"):
                value = None  # the copy re-creates its own from the seed when it needs one
            object.__setattr__(new, key, value if key in shared else copy.deepcopy(value, memo))
        return new

    # ------------------------------------------------------------------ helpers
    def _drop_unserializable_hparams(self) -> None:
        """Keep only plain values (a CLI config's class_path dicts, numbers, strings).

        Objects passed in Python (a process, a denoiser, an optimizer class) would be pickled
        into the checkpoint and break ``weights_only`` loading; such checkpoints are loaded with
        ``DiffusionModule.load_from_checkpoint(path, process=..., denoiser=...)`` instead.
        """

        def plain(v: Any) -> bool:
            if isinstance(v, (str, int, float, bool, type(None))):
                return True
            if isinstance(v, (list, tuple)):
                return all(plain(x) for x in v)
            if isinstance(v, Mapping):
                return all(isinstance(k, str) and plain(x) for k, x in v.items())
            return False

        for store in (self._hparams, self._hparams_initial):
            for key in [k for k, v in store.items() if not plain(v)]:
                del store[key]

    def _params(self) -> list[Parametrization]:
        return list(self.param.values()) if isinstance(self.param, dict) else [self.param]

    def _check_stride(self, steps: int | None) -> None:
        if steps is not None and steps < self.process.num_steps:
            bad = [p.name for p in self._params() if not p.can_stride]
            if bad:
                raise ValueError(
                    f"num_steps: {steps} < T = {self.process.num_steps} needs strided jumps, but parametrization "
                    f"{bad[0]!r} predicts p(x_(t-1) | x_t) and cannot stride; use num_steps=None or an x0-based parametrization"
                )

    def _unpack(self, batch: Any, training: bool = False) -> Any:
        """x0 from a batch, checked when ``validate_inputs``: fully (``process.validate_x0``), or in a
        training step after the first by ``process._check_batch`` (its skipped value checks run on a
        non-finite loss). The first batch is always checked in full, so bad data is named as such
        before its denoiser output is checked."""
        if isinstance(batch, (list, tuple)):
            if len(batch) != 1:
                raise ValueError(
                    f"batch: expected a Tensor, a dict of Tensors or a 1-element list, got a {len(batch)}-element "
                    f"{type(batch).__name__} (a diffusion data module yields x0 only)"
                )
            batch = batch[0]
        if self.validate_inputs:
            light = training and self._output_checked
            (self.process._check_batch if light else self.process.validate_x0)(batch, "batch")
        return batch

    def _record_shape(self, x0: Any) -> None:
        if self.data_shape is None:
            if isinstance(x0, Mapping):
                self.data_shape = {k: tuple(v.shape[1:]) for k, v in x0.items()}
            else:
                self.data_shape = tuple(x0.shape[1:])
        if not isinstance(x0, Mapping):
            return
        mask_key = getattr(self.process, "mask_key", None)
        if self.training and mask_key in x0 and self.current_epoch == 0:
            # Node counts of the first epoch: sampling draws each sample's size from them.
            counts = torch.bincount(x0[mask_key].sum(1).cpu(), minlength=x0[mask_key].shape[1] + 1)
            self.size_counts = counts if self.size_counts is None else self.size_counts + counts

    def _check_output(self, output: Any, x_t: Any) -> None:
        """The first denoiser output's type, shape and values (once per module)."""
        if self._output_checked:
            return
        if isinstance(self.process, ProductProcess):
            if not isinstance(output, Mapping):
                raise TypeError(f"denoiser output: a ProductProcess needs a dict of fields {list(self.process.fields)}, got {type(output).__name__}")
            for f, proc in self.process.fields.items():
                if f not in output:
                    raise ValueError(f"denoiser output: missing field {f!r}; expected {list(self.process.fields)}")
                self.param[f].check_output(proc, output[f], x_t[f])
        else:
            self.param.check_output(self.process, output, x_t)
        self._output_checked = True

    # ------------------------------------------------------------------ random streams
    def _base_seed(self) -> int:
        """The seed of the module's streams: ``noise_seed``, else PL_GLOBAL_SEED, else torch.initial_seed()."""
        if self._rng_seed is None:
            if self.noise_seed is not None:
                self._rng_seed = int(self.noise_seed)
            elif os.environ.get("PL_GLOBAL_SEED", "").strip().lstrip("-").isdigit():
                self._rng_seed = int(os.environ["PL_GLOBAL_SEED"]) % (1 << 63)
            else:
                self._rng_seed = torch.initial_seed() % (1 << 63)
        return self._rng_seed

    def _seeded(self, attr: str, *key: int) -> torch.Generator:
        gen = getattr(self, attr)
        device = self.device
        if gen is None or gen.device != device:
            gen = torch.Generator(device)
            setattr(self, attr, gen)
        gen.manual_seed(_mix_seed(self._base_seed(), self.global_rank, *key))
        return gen

    def _next_train_generator(self) -> torch.Generator:
        """The training generator, re-seeded for the next training step (seed, rank, step)."""
        gen = self._seeded("_train_gen", _TRAIN_STREAM, self._stream.draws)
        self._stream.draws += 1
        return gen

    def _draw_generator(self) -> torch.Generator:
        """Where _forward_loss draws t and noise: the training step's generator, or validation's."""
        if self.training:
            return self._train_gen if self._train_gen is not None else self._next_train_generator()
        return self._val_gen if self._val_gen is not None else self._seeded("_val_gen", _VAL_STREAM)

    def _forward_loss(
        self, x0: Any, reduction: Literal["none", "mean"] = "none", generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Any, Any]:
        """Draw t and x_t, call the denoiser; returns (loss, t, output, x_t), the loss per example
        (B,) or, with ``reduction="mean"``, its batch mean.

        t and the noise come from ``generator`` (default: the module's stream for the current mode,
        see the class docstring), never from torch's global RNG. x0 was checked by :meth:`_unpack`
        (``validate_inputs``) and t is in 1..T by construction, so the process's unchecked
        ``_q_sample`` / ``_loss`` run; the output's shape and dtype are checked at every step
        (metadata only), its values once.
        """
        process = self.process
        gen = self._draw_generator() if generator is None else generator
        t = process.sample_timesteps(_batch_size(x0), device=gen.device, generator=gen)
        noised = process._q_sample(x0, t, generator=gen)
        output = self.denoiser(noised.x_t, t)
        self._check_output(output, noised.x_t)
        return self._process_loss(output, x0, noised, t, reduction), t, output, noised

    def _process_loss(self, output: Any, x0: Any, noised: Any, t: Tensor, reduction: Literal["none", "mean"] = "none") -> Tensor:
        """The process's loss; the library's own ``loss`` through its unchecked ``_loss`` (after the
        metadata-only shape checks), a plugin's overridden ``loss`` as it is."""
        process = self.process
        if type(process).loss in (ForwardProcess.loss, ProductProcess.loss):
            process._check_loss_inputs(self.param, output, x0, noised.x_t)
            return process._loss(output, x0, noised.x_t, t, noised.noise, self.param, self.loss_kind, self.hybrid_weight, reduction=reduction)
        loss = process.loss(output, x0, noised.x_t, t, noised.noise, self.param, self.loss_kind, self.hybrid_weight)
        return loss.mean() if reduction == "mean" else loss

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self) -> None:
        self._base_seed()  # resolve now (a checkpoint being resumed has already restored its own)
        self._fill_marginals()

    def _fill_marginals(self) -> None:
        """Give "marginal" categorical fields the class frequencies of the training data."""
        fields = self.process.fields.items() if isinstance(self.process, ProductProcess) else [(None, self.process)]
        pending = {name: p for name, p in fields if isinstance(p, CategoricalProcess) and p.needs_marginals}
        if not pending:
            return
        loader = self.trainer.fit_loop._data_source.dataloader()
        counts = {name: torch.zeros(p.num_classes, dtype=torch.float64) for name, p in pending.items()}
        mask_key = getattr(self.process, "mask_key", None)
        for batch in loader:
            batch = self._unpack(batch)
            for name, p in pending.items():
                ids = batch if name is None else batch[name]
                if name is not None and mask_key in batch:
                    ids = ids[self.process.field_mask(name, ids, batch[mask_key]).expand_as(ids)]
                counts[name] += torch.bincount(ids.flatten().cpu(), minlength=p.num_classes).double()
        for name, p in pending.items():
            p.set_marginals(counts[name])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, batch_size = self._training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def _training_loss(self, batch: Any) -> tuple[Tensor, int]:
        """All of :meth:`training_step` but the logging: (scalar loss, batch size).

        ``benchmarks/speed.py`` times this against the bare denoiser's step.

        Raises:
            FloatingPointError: a non-finite loss, naming the offending t.
        """
        x0 = self._unpack(batch, training=True)
        self._record_shape(x0)
        loss, t, output, noised = self._forward_loss(x0, "mean", self._next_train_generator())
        if not math.isfinite(loss.item()):
            if self.validate_inputs:
                self.process.validate_x0(x0, "batch")  # the value checks _check_batch left to this point
            with torch.no_grad():
                per_example = self._process_loss(output, x0, noised, t)
            bad = t[~torch.isfinite(per_example)].tolist()
            raise FloatingPointError(
                f"non-finite training loss at global step {self.global_step} (t = {bad}); nothing is saved for this "
                "step and the last checkpoint is intact. Check the data, the learning rate, or use loss='simple'"
            )
        return loss, t.shape[0]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", metrics=not self.trainer.sanity_checking)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """``diffkit test``: the validation metrics (loss, exact NLL bound, sample quality) on the
        test split, logged as ``test/...``."""
        self._eval_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start()

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _eval_step(self, batch: Any, stage: str) -> None:
        x0 = self._unpack(batch)
        self._record_shape(x0)
        per_example, t, output, noised = self._forward_loss(x0)
        n = t.shape[0]
        self.log(f"{stage}/loss", per_example.mean(), prog_bar=True, batch_size=n, sync_dist=True)
        if self._eval_count < 2 * self.num_eval_samples:
            keep = min(n, 2 * self.num_eval_samples - self._eval_count)
            self._eval_buffer.append(_to(_take(x0, keep), "cpu"))
            self._eval_count += keep

    def _eval_epoch_start(self) -> None:
        self._eval_buffer, self._eval_count = [], 0
        self._seeded("_val_gen", _VAL_STREAM)  # the same t and noise at every validation / test

    def _eval_epoch_end(self, stage: str, metrics: bool = True) -> None:
        """The NLL bound and sample metrics on the examples buffered by :meth:`_eval_step`:
        the first half is the reference, the second half the data-vs-data floor."""
        if not self._eval_buffer:
            return
        data = _cat(self._eval_buffer)
        self._eval_buffer, self._eval_count = [], 0
        if self.reference is None:
            self.reference = _take(data, self.num_eval_samples)
        if not metrics or self.num_eval_samples == 0:
            return
        n = _batch_size(data) // 2
        if n < 2:
            return
        # The full bound L_T + sum_t L_{t-1} (T denoiser calls) on the held-out examples.
        gen = torch.Generator(self.device).manual_seed(self.global_step)
        bound = nll_bound(self.process, self.denoiser, _to(_take(data, n), self.device), self.param, generator=gen)
        self.log(f"{stage}/nll_bits_per_element", bound.bits_per_element.mean(), sync_dist=True)
        mask_key = getattr(self.process, "mask_key", None)
        if isinstance(data, Mapping) and mask_key in data and self.size_counts is not None:  # graphs: DiGress's NLL
            from diffkit.graph_nll import graph_nll

            nll = graph_nll(bound.total, _take(data, n)[mask_key].to(self.device), self.size_counts)  # + -log p(N)
            self.log(f"{stage}/nll_nats_per_graph", nll.float().mean(), sync_dist=True)
        from diffkit.metrics.quality import sample_quality

        reference, fresh = _take(data, n), {k: v[n : 2 * n] for k, v in data.items()} if isinstance(data, Mapping) else data[n : 2 * n]
        samples = _to(self.sample(n, num_steps=self.sample_steps, eta=self.sample_eta, generator=gen, shape_like=reference), "cpu")
        for name, value in sample_quality(samples, reference).items():
            self.log(f"{stage}/{name}", value, sync_dist=True)
        for name, value in sample_quality(fresh, reference).items():
            self.log(f"{stage}/{name}_floor", value, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.denoiser.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    def configure_callbacks(self) -> list:
        if self.ema_decay is None:
            return []
        return [EMA(decay=self.ema_decay)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store ``checkpoint["diffkit"]``: the process's repr and fingerprint
        (:func:`process_fingerprint`), the data shape, reference examples, node counts, and
        ``rng = {"seed", "train_steps"}``, the position of the training stream."""
        checkpoint["diffkit"] = {
            "process": repr(self.process),
            "process_fingerprint": process_fingerprint(self.process),
            "data_shape": self.data_shape,
            "reference": self.reference,
            "size_counts": self.size_counts,
            "rng": {"seed": self._rng_seed, "train_steps": self._stream.draws},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Check the checkpoint's process against this model's (repr, then fingerprint) and
        restore what :meth:`on_save_checkpoint` stored.

        Raises:
            ValueError: the checkpoint was trained with a different process (the message names
                what differs). A checkpoint without a fingerprint (older diffkit) loads with a
                warning after the repr check alone.
        """
        info = checkpoint.get("diffkit")
        if info is None:
            return
        mismatch = (
            "checkpoint: it was trained with a different process.\n"
            f"  checkpoint: {info['process']}\n  this model: {repr(self.process)}\n"
        )
        if info["process"] != repr(self.process):
            raise ValueError(mismatch + "Build the model from the run's saved config.yaml, or start a new run")
        saved = info.get("process_fingerprint")
        if saved is None:
            warnings.warn(
                "checkpoint: has no process fingerprint (written by an older diffkit); only repr(process) was compared, "
                "so a different schedule or transition matrix would go unnoticed",
                stacklevel=2,
            )
        else:
            diffs = _fingerprint_differences(saved, process_fingerprint(self.process))
            if diffs:
                raise ValueError(
                    mismatch + "".join(f"  differs: process.{d}\n" for d in diffs)
                    + "Build the model from the run's saved config.yaml (same schedule and transition), or start a new run"
                )
        self.data_shape = info.get("data_shape")
        self.reference = info.get("reference")
        self.size_counts = info.get("size_counts")
        rng = info.get("rng")
        if rng is not None and rng.get("seed") is not None:
            self._rng_seed = int(rng["seed"])
            self._stream.draws = int(rng["train_steps"])

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        eta: float | None = None,
        mask: Tensor | None = None,
        shape_like: Any = None,
        progress: bool = False,
    ) -> Any:
        """Draw samples with the derived reverse chain (strided when num_steps < T).

        Args:
            num_samples: B.
            num_steps: reverse steps (None: all T).
            generator: a torch.Generator on this module's device, for reproducibility.
            eta: DDIM's eta for Gaussian fields (None: ancestral).
            mask: (B, N) bool node mask for padded data (graphs); default: sizes drawn from
                the node counts of the training data (see :meth:`sample_mask`).
            shape_like: an example batch whose per-example shapes to use (default: the shapes
                recorded from the training data, saved in checkpoints).
            progress: show a progress bar.

        Returns:
            Tensor (B, ...) or dict of Tensors.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
        self._check_stride(num_steps)
        shape = self._sample_shape(num_samples, shape_like)
        if mask is None and self.size_counts is not None:
            mask = self.sample_mask(num_samples, generator)
        training = self.denoiser.training
        self.denoiser.eval()
        try:
            return run_sampler(
                self.process, self.denoiser, shape, self.param,
                num_steps=num_steps, generator=generator, eta=eta, mask=mask, device=self.device, progress=progress,
            )
        finally:
            self.denoiser.train(training)

    def sample_mask(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, N) bool node masks whose sizes follow the training data's node counts."""
        if self.size_counts is None:
            raise ValueError("sample_mask: no node counts recorded; train on masked (graph) data first or pass mask=")
        probs = self.size_counts.double() / self.size_counts.sum()
        sizes = torch.multinomial(probs.to(self.device), num_samples, replacement=True, generator=generator)
        return torch.arange(probs.numel() - 1, device=self.device) < sizes.unsqueeze(1)

    def _sample_shape(self, num_samples: int, shape_like: Any) -> Any:
        if shape_like is not None:
            per = {k: tuple(v.shape[1:]) for k, v in shape_like.items()} if isinstance(shape_like, Mapping) else tuple(shape_like.shape[1:])
        elif self.data_shape is not None:
            per = self.data_shape
        else:
            raise ValueError("sample: the data shape is unknown; train first, load a checkpoint, or pass shape_like=example_batch")
        if isinstance(per, Mapping):
            mask_key = getattr(self.process, "mask_key", None)
            return {k: (num_samples, *v) for k, v in per.items() if k != mask_key}
        return (num_samples, *per)
