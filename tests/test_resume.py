"""Resume exactness: N steps in one run == N/2 steps, a checkpoint, and a NEW Trainer resuming
for the other N/2: bit-identical raw weights, EMA (averaged) weights, EMA counter and optimizer
state (``torch.equal``), for a Gaussian model (MLPDenoiser, eps) and a categorical one
(TokenTransformer, absorbing noise, hybrid loss), both with ``ema_decay``.

What it takes, as found here:

* the data order must be a function of (seed, epoch): ``helpers.reliability.EpochSeededSampler``
  here, diffkit's ``EpochShuffleSampler`` in the shipped data modules (Lightning calls
  ``set_epoch``), so a run resumed at epoch k sees epoch k's order, not epoch 0's.
* a mid-epoch resume point needs a resumable loader: Lightning restarts a plain DataLoader at
  the epoch's first batch. diffkit's ``ResumableDataLoader`` (the shipped data modules' train
  loader, also used by ``RowsDataModule``) saves how many batches it yielded and skips them on
  resume.
* t and the noise come from DiffusionModule's own generators, re-seeded per training step from
  (seed, rank, step) and checkpointed as ``checkpoint["diffkit"]["rng"]``; torch's global RNG
  does not matter (``helpers.reliability.RestoreGlobalRNG`` is kept for the first test, and
  ``test_resume_is_bit_exact_without_restoring_the_rng_by_hand`` runs without it).
* validation draws from a separate generator re-seeded at every validation epoch, so the same
  seed trains the same weights with and without validation.

The resumed run re-seeds the global RNG with the run's seed first, as ``seed_everything`` does at
the start of every ``diffkit fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.reliability import RestoreGlobalRNG, RowsDataModule, make_trainer, quiet_lightning

from diffkit import CategoricalProcess, GaussianProcess
from diffkit.data import Toy2DDataModule
from diffkit.models import MLPDenoiser, TokenTransformer
from diffkit.module import DiffusionModule

ROWS, BATCH = 64, 16  # 4 batches per epoch
N = 8  # two epochs; resume after the first
RUN_SEED = 7


@pytest.fixture(autouse=True)
def _deterministic():
    quiet_lightning()
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def gaussian_model() -> DiffusionModule:
    torch.manual_seed(0)
    return DiffusionModule(
        GaussianProcess(30), MLPDenoiser(2, 30, hidden=32, depth=2), "eps", ema_decay=0.9, num_eval_samples=0
    )


def token_model() -> DiffusionModule:
    torch.manual_seed(0)
    proc = CategoricalProcess(5, 30, "absorbing")
    net = TokenTransformer(proc.num_states, 5, seq_len=6, num_steps=30, d_model=16, depth=1, heads=2)
    return DiffusionModule(proc, net, "x0", loss="hybrid", hybrid_weight=0.01, ema_decay=0.9, num_eval_samples=0)


def gaussian_rows() -> RowsDataModule:
    return RowsDataModule(
        torch.randn(ROWS, 2, generator=torch.Generator().manual_seed(1)), batch_size=BATCH, shuffle_seed=3
    )


def token_rows() -> RowsDataModule:
    return RowsDataModule(
        torch.randint(0, 5, (ROWS, 6), generator=torch.Generator().manual_seed(1)), batch_size=BATCH, shuffle_seed=3
    )


MODELS = {"gaussian": (gaussian_model, gaussian_rows), "tokens-absorbing": (token_model, token_rows)}


class RecordBatches(pl.Callback):
    """Keeps (global_step, the batch) of every training step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append((trainer.global_step, batch.clone()))


def train(
    root: Path,
    model: pl.LightningModule,
    data: pl.LightningDataModule,
    max_steps: int,
    every: int,
    ckpt_path: Path | None = None,
    rng: bool = True,
    validate: bool = False,
) -> RecordBatches:
    """Fit to ``max_steps`` (from ``ckpt_path`` if given), checkpointing every ``every`` steps to
    ``root/step=<k>.ckpt``; the global RNG starts from RUN_SEED as in every ``diffkit fit``.
    ``validate`` runs validation at every epoch end (off by default: see
    test_validation_does_not_change_the_training_trajectory)."""
    record = RecordBatches()
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1, filename="{step}"),
        record,
    ]
    if rng:
        callbacks.append(RestoreGlobalRNG())
    torch.manual_seed(RUN_SEED)
    trainer = make_trainer(
        root,
        max_steps=max_steps,
        callbacks=callbacks,
        enable_checkpointing=True,
        deterministic=True,
        limit_val_batches=1.0 if validate else 0,
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return record


def run_both_ways(
    tmp_path: Path,
    build_model: Callable,
    build_data: Callable,
    resume_at: int = N // 2,
    rng: bool = True,
    total: int = N,
):
    """(uninterrupted checkpoint, resumed checkpoint, batches of each) at step ``total``."""
    full = train(tmp_path / "full", build_model(), build_data(), total, resume_at, rng=rng)
    train(tmp_path / "half", build_model(), build_data(), resume_at, resume_at, rng=rng)
    half = tmp_path / "half" / f"step={resume_at}.ckpt"
    resumed = train(tmp_path / "resumed", build_model(), build_data(), total, resume_at, ckpt_path=half, rng=rng)
    load = lambda p: torch.load(p / f"step={total}.ckpt", map_location="cpu", weights_only=False)  # noqa: E731
    return load(tmp_path / "full"), load(tmp_path / "resumed"), full.seen, resumed.seen


def assert_identical(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Recursive equality: tensors with torch.equal (atol = 0), everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), (
            f"{where} differs: max |diff| {(a.double() - b.double()).abs().max()}"
        )
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training_state(full: dict, resumed: dict, total: int = N) -> None:
    assert full["global_step"] == resumed["global_step"] == total
    assert full["epoch"] == resumed["epoch"]
    assert_identical(full["current_model_state"], resumed["current_model_state"], "raw weights")
    assert_identical(full["state_dict"], resumed["state_dict"], "EMA weights")
    assert_identical(full["averaging_state"], resumed["averaging_state"], "EMA counter")
    assert_identical(full["optimizer_states"], resumed["optimizer_states"], "optimizer state")
    assert_identical(full["lr_schedulers"], resumed["lr_schedulers"], "lr schedulers")


@pytest.mark.parametrize("name", list(MODELS))
def test_resume_at_an_epoch_end_is_bit_exact(tmp_path, name) -> None:
    full, resumed, seen_full, seen_resumed = run_both_ways(tmp_path, *MODELS[name])
    # The resumed run saw exactly the second half of the uninterrupted run's batches.
    tail = [(s, b) for s, b in seen_full if s >= N // 2]
    assert [s for s, _ in seen_resumed] == [s for s, _ in tail]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(seen_resumed, tail, strict=True))
    assert_same_training_state(full, resumed)
    # The EMA really averaged something (the two weight sets differ).
    assert any(not torch.equal(full["state_dict"][k], full["current_model_state"][k]) for k in full["state_dict"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_long_resume_is_bit_exact(tmp_path, name) -> None:
    """10 epochs, resumed after 5 (40 steps in all)."""
    total = 10 * (ROWS // BATCH)
    full, resumed, _, _ = run_both_ways(tmp_path, *MODELS[name], resume_at=total // 2, total=total)
    assert_same_training_state(full, resumed, total)


def test_resume_is_bit_exact_without_restoring_the_rng_by_hand(tmp_path) -> None:
    full, resumed, _, _ = run_both_ways(tmp_path, gaussian_model, gaussian_rows, rng=False)
    assert_same_training_state(full, resumed)


def test_shipped_data_module_order_survives_resume(tmp_path) -> None:
    def toy() -> Toy2DDataModule:
        return Toy2DDataModule(name="swiss_roll", num_train=ROWS, num_val=16, batch_size=BATCH, seed=0)

    _, _, seen_full, seen_resumed = run_both_ways(tmp_path, gaussian_model, toy)
    tail = [b for s, b in seen_full if s >= N // 2]
    assert len(seen_resumed) == len(tail)
    assert all(torch.equal(a, b) for (_, a), b in zip(seen_resumed, tail, strict=True)), (
        "the resumed run saw other batches"
    )


def shipped_toy() -> Toy2DDataModule:
    return Toy2DDataModule(name="swiss_roll", num_train=ROWS, num_val=16, batch_size=BATCH, seed=0)


@pytest.mark.parametrize("build_data", [gaussian_rows, shipped_toy], ids=["rows", "shipped-toy2d"])
def test_resume_in_the_middle_of_an_epoch_is_bit_exact(tmp_path, build_data) -> None:
    full, resumed, seen_full, seen_resumed = run_both_ways(tmp_path, gaussian_model, build_data, resume_at=2)
    tail = [b for s, b in seen_full if s >= 2]
    assert len(seen_resumed) == len(tail) == N - 2
    assert all(torch.equal(a, b) for (_, a), b in zip(seen_resumed, tail, strict=True)), (
        "the resumed run saw other batches"
    )
    assert_same_training_state(full, resumed)


def test_validation_does_not_change_the_training_trajectory(tmp_path) -> None:
    train(tmp_path / "quiet", gaussian_model(), gaussian_rows(), N, N)
    train(tmp_path / "validated", gaussian_model(), gaussian_rows(), N, N, validate=True)
    quiet = torch.load(tmp_path / "quiet" / f"step={N}.ckpt", weights_only=False)
    validated = torch.load(tmp_path / "validated" / f"step={N}.ckpt", weights_only=False)
    assert_identical(quiet["current_model_state"], validated["current_model_state"], "raw weights")


# ------------------------------------------------------------------------------ the pieces, directly
def test_epoch_shuffle_sampler_is_a_pure_function_of_seed_and_epoch() -> None:
    from torch.utils.data import DataLoader

    from diffkit.data import EpochShuffleSampler
    from diffkit.data._base import seeded_generator, stream_seed

    n, seed = 37, 5
    # The order of pass e of the former DataLoader(shuffle=True, generator=seeded shuffle stream) ...
    old = DataLoader(range(n), batch_size=n, shuffle=True, generator=seeded_generator(stream_seed(seed, "shuffle")))
    passes = [next(iter(old)).tolist() for _ in range(4)]
    # ... is epoch e's order, iterated in sequence or reached directly by set_epoch (a resume).
    sampler = EpochShuffleSampler(n, seed)
    assert [list(sampler) for _ in range(4)] == passes
    for e in (3, 0, 2):
        fresh = EpochShuffleSampler(n, seed)
        fresh.set_epoch(e)
        assert list(fresh) == passes[e]
    assert len(set(map(tuple, passes))) == 4


def test_resumable_loader_skips_the_batches_served_in_the_same_epoch_only() -> None:
    from diffkit.data import EpochShuffleSampler, ResumableDataLoader

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(list(range(20)), batch_size=4, sampler=EpochShuffleSampler(20, 1))

    first = loader()
    first.sampler.set_epoch(2)
    it = iter(first)
    served = [next(it).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    full = loader()
    full.sampler.set_epoch(2)
    whole = [b.tolist() for b in full]
    assert served == whole[:3] and len(full) == 5
    # Resumed in epoch 2: the remaining two batches; len() stays the epoch's (Lightning counts on it).
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    assert len(resumed) == 5
    assert [b.tolist() for b in resumed] == whole[3:]
    assert resumed.state_dict() == {"epoch": 2, "batches": 5}
    # A state from another epoch (or a finished pass) skips nothing.
    other = loader()
    other.load_state_dict(state)
    other.sampler.set_epoch(3)
    assert len(list(other)) == 5
    done = loader()
    done.load_state_dict({"epoch": 2, "batches": 5})
    done.sampler.set_epoch(2)
    assert [b.tolist() for b in done] == whole


def test_checkpoint_holds_the_noise_stream_and_the_process_fingerprint(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # an earlier seed_everything in this process sets it
    train(tmp_path, gaussian_model(), gaussian_rows(), 2, 2, rng=False)
    info = torch.load(tmp_path / "step=2.ckpt", weights_only=True)["diffkit"]
    assert info["rng"] == {"seed": RUN_SEED, "train_steps": 2}  # torch.manual_seed(RUN_SEED), no PL_GLOBAL_SEED
    assert set(info["process_fingerprint"]) == {"alpha_bar"}
    assert info["process_fingerprint"]["alpha_bar"]["shape"] == [31]


def test_noise_seed_fixes_the_stream(tmp_path, monkeypatch) -> None:
    """noise_seed wins over PL_GLOBAL_SEED and torch's global seed; other seeds train differently."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "123")

    def weights(noise_seed, global_seed, root):
        torch.manual_seed(0)
        model = DiffusionModule(
            GaussianProcess(30),
            MLPDenoiser(2, 30, hidden=32, depth=2),
            "eps",
            num_eval_samples=0,
            noise_seed=noise_seed,
        )
        torch.manual_seed(global_seed)
        make_trainer(root, max_steps=N, deterministic=True).fit(model, gaussian_rows())
        return model.denoiser.state_dict()

    a, b, c = weights(11, 1, tmp_path / "a"), weights(11, 2, tmp_path / "b"), weights(12, 1, tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_without_a_fingerprint_loads_with_a_warning(tmp_path) -> None:
    train(tmp_path, gaussian_model(), gaussian_rows(), 2, 2, rng=False)
    ckpt = torch.load(tmp_path / "step=2.ckpt", weights_only=False)
    del ckpt["diffkit"]["process_fingerprint"]  # as written by diffkit before the fingerprint
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.warns(UserWarning, match="checkpoint: has no process fingerprint"):
        train(tmp_path / "resumed", gaussian_model(), gaussian_rows(), 4, 4, ckpt_path=tmp_path / "old.ckpt", rng=False)
