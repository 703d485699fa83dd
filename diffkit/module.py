"""DiffusionModule: one LightningModule that trains, evaluates and samples every ForwardProcess.

It orchestrates and does no math: times are drawn by the process, noise by ``q_sample``, the
loss and the ELBO terms by the process through the parametrization, sampling by
:func:`diffkit.sampling.sample`. Optimizers, LR schedules, EMA, checkpointing, logging and
multi-device training are Lightning's.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection

from diffkit._checks import trusted_values
from diffkit.ema import EMA
from diffkit.fingerprint import check_same_process, process_fingerprint
from diffkit.guidance import check_cond, drop_cond, split_cond_batch
from diffkit.likelihood import nll_bound
from diffkit.marginals import fill_marginals
from diffkit.parametrizations import Parametrization
from diffkit.processes.base import ForwardProcess, LossKind
from diffkit.processes.product import ProductProcess
from diffkit.random_streams import TRAIN_STREAM, VAL_STREAM, mix_seed, resolve_seed, seeded
from diffkit.resample import LossSecondMomentResampler
from diffkit.sampling import check_can_stride, process_device
from diffkit.sampling import sample as run_sampler
from diffkit.solvers import SamplerName

__all__ = ["DiffusionModule"]

ParametrizationArg = str | Parametrization | dict[str, str | Parametrization]


def _batch_size(x: Any) -> int:
    return next(v for v in x.values() if isinstance(v, Tensor)).shape[0] if isinstance(x, Mapping) else x.shape[0]


def _take(x: Any, n: int) -> Any:
    return {k: v[:n] for k, v in x.items()} if isinstance(x, Mapping) else x[:n]


def _cat(parts: list) -> Any:
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _slice(x: Any, start: int, stop: int) -> Any:
    return {k: v[start:stop] for k, v in x.items()} if isinstance(x, Mapping) else x[start:stop]


def _to(x: Any, device: torch.device | str) -> Any:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, Mapping) else x.to(device)


class DiffusionModule(pl.LightningModule):
    """Train and sample a diffusion model for any ForwardProcess.

    Args:
        process: the forward process (Gaussian, categorical, a ProductProcess, or your own).
        denoiser: ``denoiser(x_t, t)`` returning the parametrization's output; called
            ``denoiser(x_t, t, cond)`` for batches that carry a condition (docs/conditioning.md).
        parametrization: "eps" | "x0" | "v" | "previous-step" (what the process accepts), a
            Parametrization object, or for a ProductProcess a dict field -> one of those.
        loss: "simple" (the parametrization's MSE / cross-entropy), "kl" (the ELBO's per-step
            terms, scaled by T) or "hybrid" (simple + hybrid_weight * kl).
        hybrid_weight: what multiplies the T-scaled ELBO term in "hybrid" (not D3PM's lambda, which
            multiplies the cross-entropy: see ``ForwardProcess.loss``).
        optimizer: optimizer factory over the denoiser's parameters (LightningCLI's
            ``optimizer`` class_path / init_args).
        lr_scheduler: optional LR scheduler factory.
        ema_decay: if set, an EMA of the parameters (:class:`diffkit.ema.EMA`, Lightning's
            EMAWeightAveraging with buffers kept live) is used for validation, checkpoints and sampling.
        sample_steps: reverse steps for validation samples (None: all T).
        sample_eta: DDIM's eta for Gaussian fields in validation samples (None: ancestral).
        num_eval_samples: samples drawn at each validation / test epoch end for the sample metrics
            (0 disables them): the data module's ``sample_metrics()`` (else
            ``diffkit.metrics.quality.default_sample_metrics``), updated with the samples and as
            many held-out examples and logged as ``<stage>/<name>``; the floor, the same metrics
            between two draws of held-out examples, as ``<stage>/<name>_floor``. Metrics keep their
            samples in states pooled across DDP ranks, so every rank logs the all-rank value.
        validate_inputs: check every training batch (type, dtype, shape, class-id range) before using
            it; NaN / inf in Gaussian data, which always makes the loss non-finite, is named by the
            same check run when a loss is non-finite (one host sync per step instead of two).
        cond_drop_prob: probability of replacing an example's ``cond`` by the null condition in a
            training step (classifier-free guidance; docs/conditioning.md), drawn from the module's
            own training stream after t and the noise, so resume stays exact. Batches carry
            ``cond`` as ``(x0, cond)`` or a dict key ``"cond"``; the denoiser then gets
            ``denoiser(x_t, t, cond)``.
        noise_seed: seed of the module's own random streams of t and noise (below); None: the
            seed that ``seed_everything`` set (env ``PL_GLOBAL_SEED``, i.e. ``seed_everything:``
            of a CLI config), else ``torch.initial_seed()``. (Not named ``seed``, which a data
            module's hyperparameters often hold: Lightning refuses to log clashing values.)
        importance_sampling: for ``loss="kl"`` / ``"hybrid"``, draw training t from
            :class:`diffkit.resample.LossSecondMomentResampler` (p(t) ∝ sqrt(E[L_t^2]), Nichol &
            Dhariwal 2021 sec. 3.3) and weight each example by 1 / (T p(t)); uniform t otherwise.
            Its loss history is not checkpointed: a resumed run draws uniform t until it warms up again.

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
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float | None = None,
        sample_steps: int | None = None,
        sample_eta: float | None = None,
        num_eval_samples: int = 1000,
        validate_inputs: bool = True,
        noise_seed: int | None = None,
        cond_drop_prob: float = 0.0,
        importance_sampling: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(process, ForwardProcess):
            raise TypeError(f"process: expected a ForwardProcess, got {type(process).__name__}")
        if not callable(denoiser):
            raise TypeError(
                f"denoiser: expected an nn.Module called as denoiser(x_t, t), got {type(denoiser).__name__}"
            )
        denoiser_steps = getattr(denoiser, "num_steps", None)
        if isinstance(denoiser_steps, int) and denoiser_steps != process.num_steps:
            raise ValueError(
                f"denoiser: num_steps = {denoiser_steps} differs from the process's T = {process.num_steps}; its time "
                "embedding would see times it was not built for (set both from one value)"
            )
        if process.requires_time_agnostic_denoiser and getattr(denoiser, "time_conditioning", False) is True:
            raise ValueError(
                f"denoiser: {type(process).__name__} ({process.extra_repr()}) computes its loss and bound for a "
                "denoiser that does not see t, but this one has time_conditioning=True (set it to False, or use the "
                "schedule's weight)"
            )
        if loss not in ("simple", "kl", "hybrid"):
            raise ValueError(f"loss: unknown kind {loss!r}; expected one of ['hybrid', 'kl', 'simple']")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay: expected a value in (0, 1) or None, got {ema_decay}")
        if num_eval_samples < 0:
            raise ValueError(f"num_eval_samples: expected >= 0, got {num_eval_samples}")
        if noise_seed is not None and (
            isinstance(noise_seed, bool) or not isinstance(noise_seed, int) or noise_seed < 0
        ):
            raise ValueError(f"noise_seed: expected a non-negative int or None, got {noise_seed!r}")
        if (
            isinstance(cond_drop_prob, bool)
            or not isinstance(cond_drop_prob, (int, float))
            or not 0 <= cond_drop_prob < 1
        ):
            raise ValueError(f"cond_drop_prob: expected a probability in [0, 1), got {cond_drop_prob!r}")
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
        self._eval_metrics: dict[str, tuple[MetricCollection, MetricCollection]] = {}  # stage -> (model's, floor's)
        self.noise_seed = noise_seed
        self.cond_drop_prob = float(cond_drop_prob)
        if importance_sampling and loss == "simple":
            raise ValueError(
                "importance_sampling: reweights the ELBO terms of loss='kl' or 'hybrid'; got loss='simple'"
            )
        self.resampler = LossSecondMomentResampler(process.num_steps) if importance_sampling else None
        self._rng_seed: int | None = None  # resolved when fit starts, or restored from a checkpoint
        self._train_steps = 0  # the training stream's position: training steps drawn so far
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
            if key == "_eval_metrics":
                value = {}  # metric states (and a graph metric's train graphs) are not the model's
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

        # Lightning sets _hparams_initial in save_hyperparameters without declaring its type.
        initial = cast(MutableMapping[str, Any], self._hparams_initial)
        for store in (self._hparams, initial):
            for key in [k for k, v in store.items() if not plain(v)]:
                del store[key]

    def _params(self) -> list[Parametrization]:
        return list(self.param.values()) if isinstance(self.param, dict) else [self.param]

    def _check_stride(self, steps: int | None) -> None:
        check_can_stride(self.param, self.process.sampling_grid(steps))

    def _unpack(self, batch: Any) -> Any:
        """x0 from a batch (see :meth:`_unpack_cond`)."""
        return self._unpack_cond(batch)[0]

    def _unpack_cond(self, batch: Any) -> tuple[Any, Tensor | None]:
        """(x0, cond) from a batch: x0, ``(x0,)``, ``(x0, cond)`` or a dict with the key ``"cond"``
        (:func:`diffkit.guidance.split_cond_batch`). x0 is checked by ``process.validate_x0`` when
        ``validate_inputs`` (inside ``trusted_values``, after the first training batch, its value
        checks are skipped); cond against the denoiser's ``cond_spec`` (null markers allowed) until
        the first output has been checked (its class-id range check reads values: a host sync)."""
        batch, cond = split_cond_batch(batch)
        if self.validate_inputs:
            self.process.validate_x0(batch, "batch")
            if cond is not None and not self._output_checked:
                cond = check_cond(self.denoiser, cond, _batch_size(batch), allow_null=True)
        return batch, cond

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
            # Node counts of the first epoch, accumulated where the batch lives (no host sync):
            # sampling draws each sample's size from them.
            mask = x0[mask_key]
            sizes = mask.sum(1)
            if self.size_counts is None or self.size_counts.device != sizes.device:
                base = (
                    self.size_counts.to(sizes.device)
                    if self.size_counts is not None
                    else torch.zeros(mask.shape[1] + 1, dtype=torch.long, device=sizes.device)
                )
                self.size_counts = base
            self.size_counts = self.size_counts.index_add(0, sizes, torch.ones_like(sizes))

    def _check_output(self, output: Any, x_t: Any) -> None:
        """The first denoiser output's type, shape and values (once per module)."""
        if self._output_checked:
            return
        if isinstance(self.process, ProductProcess):
            if not isinstance(output, Mapping):
                raise TypeError(
                    f"denoiser output: a ProductProcess needs a dict of fields {list(self.process.fields)}, got "
                    f"{type(output).__name__}"
                )
            params = cast(dict[str, Parametrization], self.param)  # a ProductProcess resolves one per field
            for f, proc in self.process.field_processes().items():
                if f not in output:
                    raise ValueError(f"denoiser output: missing field {f!r}; expected {list(self.process.fields)}")
                params[f].check_output(proc, output[f], x_t[f])
        else:
            self.param.check_output(self.process, output, x_t)
        self._output_checked = True

    # ------------------------------------------------------------------ random streams
    def _base_seed(self) -> int:
        """The seed of the module's streams (:func:`diffkit.random_streams.resolve_seed`), fixed once resolved."""
        if self._rng_seed is None:
            self._rng_seed = resolve_seed(self.noise_seed)
        return self._rng_seed

    def _seeded(self, attr: str, *key: int) -> torch.Generator:
        """The generator in ``attr``, re-seeded from (seed, global rank, *key)."""
        gen = seeded(getattr(self, attr), self.device, mix_seed(self._base_seed(), self.global_rank, *key))
        setattr(self, attr, gen)
        return gen

    def _next_train_generator(self, device: torch.device | None = None) -> torch.Generator:
        """The training generator, re-seeded for the next training step from (seed, rank, step).

        One generator on ``device`` (default: the module's; a training step passes its batch's),
        created when first needed or when the device changes, re-seeded in place every step."""
        key = mix_seed(self._base_seed(), self.global_rank, TRAIN_STREAM, self._train_steps)
        gen = seeded(self._train_gen, self.device if device is None else device, key)
        if gen is not self._train_gen:  # assign (an nn.Module __setattr__) only when a new one was made
            self._train_gen = gen
        self._train_steps += 1
        return gen

    def _draw_generator(self) -> torch.Generator:
        """Where _forward_loss draws t and noise: the training step's generator, or validation's."""
        if self.training:
            return self._train_gen if self._train_gen is not None else self._next_train_generator()
        return self._val_gen if self._val_gen is not None else self._seeded("_val_gen", VAL_STREAM)

    def _forward_loss(
        self, x0: Any, generator: torch.Generator | None = None, cond: Tensor | None = None, mean: bool = False
    ) -> tuple[Tensor, Tensor, Any, Any]:
        """Draw t and x_t, call the denoiser; returns (per-example loss (B,), t, output, x_t), or
        with ``mean`` (a training step) the batch mean (a scalar) first.

        Calls the process's public hooks ``sample_timesteps``, ``q_sample`` and ``loss`` (``mean_loss``
        with ``mean`` and no importance sampling: the same value, fused where the process and the
        parametrization vouch for it); t and the
        noise come from ``generator`` (default: the module's stream for the current mode, see the
        class docstring), never from torch's global RNG. The first output is checked in full. With
        ``cond``, a training step drops each example's condition with probability
        ``cond_drop_prob`` (from the same generator, after t and the noise) and calls
        ``denoiser(x_t, t, cond)``.
        """
        process = self.process
        gen = self._draw_generator() if generator is None else generator
        if self.resampler is not None and self.training:
            t, weights = self.resampler.sample(_batch_size(x0), generator=gen, device=gen.device)
        else:
            t = process.sample_timesteps(_batch_size(x0), device=gen.device, generator=gen)
        noised = process.q_sample(x0, t, generator=gen)
        if cond is None:
            output = self.denoiser(noised.x_t, t)
        else:
            if self.training and self.cond_drop_prob > 0:
                drop = torch.rand(t.shape, device=gen.device, generator=gen) < self.cond_drop_prob
                cond = drop_cond(cond, drop.to(cond.device))
            output = self.denoiser(noised.x_t, t, cond)
        self._check_output(output, noised.x_t)
        args = (output, x0, noised.x_t, t, noised.noise, self.param, self.loss_kind, self.hybrid_weight)
        if self.resampler is not None and self.training:  # importance-sampled t: unbiased with weights 1 / (T p(t))
            loss = process.loss(*args)
            self.resampler.update(t, loss.detach())
            loss = loss * weights
            return (loss.mean() if mean else loss), t, output, noised
        return (process.mean_loss(*args) if mean else process.loss(*args)), t, output, noised

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self) -> None:
        self._base_seed()  # resolve now (a checkpoint being resumed has already restored its own)
        self._fill_marginals()

    def _fill_marginals(self) -> None:
        """Give "marginal" categorical fields the class frequencies of the training data
        (:func:`diffkit.marginals.fill_marginals`)."""
        loader = self.trainer.fit_loop._data_source.dataloader()
        fill_marginals(self.process, (self._unpack(batch) for batch in loader))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, batch_size = self._training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def _training_loss(self, batch: Any) -> tuple[Tensor, int]:
        """All of :meth:`training_step` but the logging: (scalar loss, batch size).

        The first batch is checked in full (the data's values, the denoiser's first output); later
        steps run inside :func:`~diffkit._checks.trusted_values`, which skips the value checks that
        need a host sync, so a step makes one: the non-finite-loss guard below.
        ``benchmarks/speed.py`` times this against the bare denoiser's step.

        Raises:
            FloatingPointError: a non-finite loss, naming the offending t.
        """
        first = not self._output_checked
        with trusted_values(not first):
            x0, cond = self._unpack_cond(batch)
            self._record_shape(x0)
            gen = self._next_train_generator(process_device(x0))
            loss, t, output, noised = self._forward_loss(x0, gen, cond, mean=True)
        if not math.isfinite(loss.item()):
            if self.validate_inputs:
                self.process.validate_x0(x0, "batch")  # names NaN / inf data (skipped above after the first batch)
            with torch.no_grad():  # the per-example losses, to name the offending t
                per_example = self.process.loss(
                    output, x0, noised.x_t, t, noised.noise, self.param, self.loss_kind, self.hybrid_weight
                )
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
        x0, cond = self._unpack_cond(batch)
        self._record_shape(x0)
        per_example, t, output, noised = self._forward_loss(x0, cond=cond)
        n = t.shape[0]
        self.log(f"{stage}/loss", per_example.mean(), prog_bar=True, batch_size=n, sync_dist=True)
        if self._eval_count < 2 * self.num_eval_samples:
            keep = min(n, 2 * self.num_eval_samples - self._eval_count)
            self._eval_buffer.append(_to(_take(x0, keep), "cpu"))
            self._eval_count += keep

    def _eval_epoch_start(self) -> None:
        self._eval_buffer, self._eval_count = [], 0
        self._seeded("_val_gen", VAL_STREAM)  # the same t and noise at every validation / test

    def _eval_epoch_end(self, stage: str, metrics: bool = True) -> None:
        """The NLL bound and the sample metrics on the examples buffered by :meth:`_eval_step`:
        the first half is the reference, the second half the fresh real draw of the floor."""
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
        data = _to(data, self.device)
        reference, fresh = _take(data, n), _slice(data, n, 2 * n)
        # The full bound L_T + sum_t L_{t-1} (T denoiser calls) on the held-out examples.
        gen = torch.Generator(self.device).manual_seed(mix_seed(self.global_step, self.global_rank))  # ranks draw apart
        bound = nll_bound(self.process, self.denoiser, reference, self.param, generator=gen)
        self.log(f"{stage}/nll_bits_per_element", bound.bits_per_element.mean(), sync_dist=True)
        mask_key = getattr(self.process, "mask_key", None)
        if isinstance(data, Mapping) and mask_key in data and self.size_counts is not None:  # graphs: DiGress's NLL
            from diffkit.graph_nll import graph_nll

            nll = graph_nll(bound.total, reference[mask_key].to(self.device), self.size_counts)  # + -log p(N)
            self.log(f"{stage}/nll_nats_per_graph", nll.float().mean(), sync_dist=True)
        samples = self.sample(n, num_steps=self.sample_steps, eta=self.sample_eta, generator=gen, shape_like=reference)
        model_metrics, floor = self._sample_metrics(stage, reference)
        for collection, drawn, suffix in ((model_metrics, samples, ""), (floor, fresh, "_floor")):
            for name, metric in collection.items(keep_base=True):
                if getattr(metric, "two_sample", True):  # the metric compares two draws
                    metric.update(drawn, reference)
                else:  # the metric holds an exact reference
                    metric.update(drawn)
                self._log_metric(f"{stage}/{name}", metric, suffix)

    def _sample_metrics(self, stage: str, example: Any) -> tuple[MetricCollection, MetricCollection]:
        """(model's, floor's) metrics of ``stage``: two clones of the data module's ``sample_metrics()``
        (else :func:`diffkit.metrics.quality.default_sample_metrics` for ``example``), built once."""
        if stage not in self._eval_metrics:
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            hook = getattr(datamodule, "sample_metrics", None)
            if callable(hook):
                source = hook()
            else:
                from diffkit.metrics.quality import default_sample_metrics

                source = default_sample_metrics(example, self._num_classes())
            self._eval_metrics[stage] = (source.clone(), source.clone())
        return tuple(m.to(self.device) for m in self._eval_metrics[stage])  # type: ignore[return-value]

    def _num_classes(self) -> int | dict[str, int] | None:
        """K of a categorical process, or field -> K of a ProductProcess's categorical fields."""
        if isinstance(self.process, ProductProcess):
            fields = self.process.field_processes().items()
            return {k: n for k, p in fields if isinstance(n := getattr(p, "num_classes", None), int)}
        return getattr(self.process, "num_classes", None)

    def _log_metric(self, name: str, metric: Any, suffix: str) -> None:
        """Log ``metric.compute()`` (pooled over DDP ranks by the metric's sync, so every rank logs
        the same value) as ``name + suffix``, or each entry of a dict result as ``name/key + suffix``;
        then reset the metric."""
        value = metric.compute()
        entries = value.items() if isinstance(value, Mapping) else [("", value)]
        for key, v in entries:
            self.log(
                f"{name}/{key}{suffix}" if key else f"{name}{suffix}",
                torch.as_tensor(v, dtype=torch.float32),
                sync_dist=True,
            )
        metric.reset()

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
            "size_counts": None if self.size_counts is None else self.size_counts.cpu(),
            "rng": {"seed": self._rng_seed, "train_steps": self._train_steps},
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
        check_same_process(info, self.process)
        self.data_shape = info.get("data_shape")
        self.reference = info.get("reference")
        self.size_counts = info.get("size_counts")
        rng = info.get("rng")
        if rng is not None and rng.get("seed") is not None:
            self._rng_seed = int(rng["seed"])
            self._train_steps = int(rng["train_steps"])

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
        cond: Tensor | int | None = None,
        guidance_scale: float = 0.0,
        known: Any = None,
        known_mask: Any = None,
        resample_rounds: int = 1,
        sampler: SamplerName = "ancestral",
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
            cond: class ids (B,) (an int: the same class for all), float features (B, C), or None.
            guidance_scale: classifier-free guidance w >= 0 (0: the plain conditional model).
            known, known_mask: infilling (see :func:`diffkit.sample`).
            resample_rounds: RePaint passes per jump for re-noised fields (1: none).
            sampler: "ancestral", "ddim" or "dpmpp_2m" (Gaussian fields; see :func:`diffkit.sample`).

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
                self.process,
                self.denoiser,
                shape,
                self.param,
                num_steps=num_steps,
                generator=generator,
                eta=eta,
                mask=mask,
                device=self.device,
                progress=progress,
                cond=cond,
                guidance_scale=guidance_scale,
                known=known,
                known_mask=known_mask,
                resample_rounds=resample_rounds,
                sampler=sampler,
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
            per = (
                {k: tuple(v.shape[1:]) for k, v in shape_like.items()}
                if isinstance(shape_like, Mapping)
                else tuple(shape_like.shape[1:])
            )
        elif self.data_shape is not None:
            per = self.data_shape
        else:
            raise ValueError(
                "sample: the data shape is unknown; train first, load a checkpoint, or pass shape_like=example_batch"
            )
        if isinstance(per, Mapping):
            mask_key = getattr(self.process, "mask_key", None)
            return {k: (num_samples, *v) for k, v in per.items() if k != mask_key}
        return (num_samples, *per)
