"""Continuous-time suite: masked (MDLM) and uniform (UDLM) noise on t in [0, 1] against discrete-time absorbing noise.

Data: ``MarkovTokensDataModule`` with the shipped configs' chain (K = 8, L = 32, seed 0), whose
entropy per token H(x_1..x_L) / L is exact. Rows, all with the same TokenTransformer body, the
same optimizer steps, batch size, learning-rate schedule and gradient clipping (the shipped
configs' budget):

- discrete absorbing T = 100 and T = 1000 (``CategoricalProcess``, cosine schedule, x0, the shipped
  hybrid loss with weight 0.01, time-conditioned network);
- continuous masked (``MaskedProcess``, cosine schedule, the continuous ELBO as the ``kl`` loss with
  stratified t, network not time-conditioned as in MDLM; the cosine schedule is the same bound as
  MDLM's loglinear for such a network, with a finite-variance estimate: docs/theory.md, section 10);
- continuous uniform (``UniformProcess``, loglinear, the shipped hybrid loss: cross-entropy + 0.01 x
  the continuous ELBO, time-conditioned network).

Reported: the NLL bound in bits per token (``diffkit.nll_bound``: all T terms for discrete rows,
the stratified estimate with N points for continuous rows) against the exact entropy, and samples
at 8, 32, 128 and 1024 steps (discrete rows: the step counts <= T) scored by bigram TV against
held-out sequences next to its floor (two true samples), with the network evaluations each sample
cost (``SamplingStats``; the masked rows use the caching sampler).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

import diffkit
from benchmarks.common import (
    LOG2,
    Report,
    Settings,
    Table,
    aggregate,
    fmt,
    generator,
    new_figure,
    save_figure,
    seeded_init,
    write_csv,
)
from benchmarks.training import STREAM_INIT, STREAM_NLL, STREAM_SAMPLE, Budget, train
from diffkit import CategoricalProcess
from diffkit.data import MarkovTokensDataModule
from diffkit.metrics.functional import bigram_histogram, total_variation
from diffkit.models import TokenTransformer
from diffkit.processes import MaskedProcess, UniformProcess
from diffkit.sampling_cache import SamplingStats

CONTINUOUS_ROWS = ("masked (continuous)", "uniform (continuous)")
LOSS_WORDS = {
    "kl": "the continuous ELBO ('kl')",
    "hybrid": "the hybrid loss (cross-entropy + 0.01 x the continuous ELBO)",
    "simple": "the cross-entropy ('simple')",
}
STEPS = (8, 32, 128, 1024)


@dataclass(frozen=True)
class Config:
    num_classes: int
    seq_len: int
    d_model: int
    depth: int
    heads: int
    train: Budget
    num_train: int
    num_eval: int  # samples, and held-out sequences they are compared with
    num_nll: int  # held-out sequences of the NLL bound
    num_points: int  # N of the continuous-time bound
    steps: tuple[int, ...]  # sampling steps
    discrete_T: tuple[int, ...]  # T of the discrete absorbing rows
    masked_schedule: str = "loglinear"  # alpha(t) of the continuous masked row
    masked_loss: str = "kl"  # its loss kind ("hybrid": cross-entropy + 0.01 x the continuous ELBO)
    masked_weight: str = "schedule"  # its ELBO weight ("count": (n + 1) / k, loglinear only)

    @property
    def rows(self) -> tuple[str, ...]:
        return (*[f"absorbing T={T}" for T in self.discrete_T], *CONTINUOUS_ROWS)


QUICK = Config(
    num_classes=4,
    seq_len=6,
    d_model=16,
    depth=1,
    heads=2,
    train=Budget(steps=20, batch_size=32, lr=1e-3),
    num_train=500,
    num_eval=64,
    num_nll=32,
    num_points=8,
    steps=(4, 16),
    discrete_T=(10, 20),
)
# The shipped configs' model and budget (examples/configs/markov_masked.yaml): 4000 AdamW steps of 128 sequences
# at lr 2e-3, gradients clipped at norm 1 (measured with seed 0 before this suite: continuous masked, lr 1e-3: gap
# 0.094 bits/token at 1500 steps, 0.075 at 4000; lr 2e-3 at 4000 steps: 0.029). The masked row's cosine schedule and
# the clipping: four seeds each, the masked and T = 1000 rows eight (benchmarks/ctime_clip.py; docs/benchmarks.md,
# ctime).
FULL = Config(
    num_classes=8,
    seq_len=32,
    d_model=64,
    depth=2,
    heads=4,
    train=Budget(steps=4000, batch_size=128, lr=2e-3, grad_clip=1.0),
    num_train=10000,
    num_eval=300,
    num_nll=300,
    num_points=128,
    steps=STEPS,
    discrete_T=(100, 1000),
    masked_schedule="cosine",
)


def _model(row: str, cfg: Config, seed: int) -> tuple[diffkit.ForwardProcess, TokenTransformer, str, float]:
    """(process, denoiser, loss kind, hybrid weight) of a row."""
    K, L = cfg.num_classes, cfg.seq_len
    body = dict(seq_len=L, d_model=cfg.d_model, depth=cfg.depth, heads=cfg.heads)
    with seeded_init(seed, STREAM_INIT):
        if row.startswith("absorbing"):
            T = int(row.split("=")[1])
            return (
                CategoricalProcess(K, T, "absorbing", "cosine"),
                TokenTransformer(K + 1, K, num_steps=T, **body),
                "hybrid",
                0.01,
            )
        if row.startswith("masked"):
            return (
                MaskedProcess(K, cfg.masked_schedule, cfg.masked_weight),  # type: ignore[arg-type]  # checked names
                TokenTransformer(K + 1, K, num_steps=None, time_conditioning=False, **body),
                cfg.masked_loss,
                0.01,
            )
        # the shipped markov_uniform_ct.yaml's loss: cross-entropy + 0.01 x the continuous ELBO
        return UniformProcess(K, "loglinear"), TokenTransformer(K, K, num_steps=None, **body), "hybrid", 0.01


def _nll_bits(process, net, x0: torch.Tensor, cfg: Config, seed: int) -> float:
    gen = generator(seed, STREAM_NLL)
    kw = {"num_points": cfg.num_points} if process.is_continuous_time else {}
    total, count = 0.0, 0
    for part in x0.split(250):
        bound = diffkit.nll_bound(process, net, part, "x0", generator=gen, **kw)
        total += float(bound.total.sum())
        count += int(bound.num_elements.sum())
    return total / count / LOG2


def _bigram_tv(x: torch.Tensor, y: torch.Tensor, num_states: int) -> float:
    return float(total_variation(bigram_histogram(x, num_states).flatten(), bigram_histogram(y, num_states).flatten()))


def _run_one(row: str, dm, seed: int, cfg: Config, entropy_bits: float) -> list[dict]:
    process, net, kind, weight = _model(row, cfg, seed)
    result = train(process, net, dm.split("train"), "x0", cfg.train, seed, loss=kind, hybrid_weight=weight)
    start = time.perf_counter()
    nll = _nll_bits(process, net, dm.split("test")[: cfg.num_nll], cfg, seed)
    nll_seconds = time.perf_counter() - start
    base = dict(
        row=row,
        seed=seed,
        train_seconds=result.seconds,
        nll_seconds=nll_seconds,
        nll_bits_per_token=nll,
        entropy_bits_per_token=entropy_bits,
        nll_gap_bits=nll - entropy_bits,
    )
    reference = dm.split("val")[: cfg.num_eval]
    rows = []
    for steps in cfg.steps:
        if not process.is_continuous_time and steps > process.num_steps:
            continue
        stats = SamplingStats()
        start = time.perf_counter()
        x = diffkit.sample(
            process,
            net,
            (cfg.num_eval, cfg.seq_len),
            "x0",
            num_steps=steps,
            generator=generator(seed, STREAM_SAMPLE),
            stats=stats,
        )
        rows.append(
            {
                **base,
                "sample_steps": steps,
                "bigram_tv": _bigram_tv(x, reference, process.num_states),
                "evaluations_per_sample": stats.evaluations_per_sample,
                "network_calls": stats.network_calls,
                "sample_seconds": time.perf_counter() - start,
            }
        )
    return rows


def markov_data(cfg: Config) -> tuple[MarkovTokensDataModule, float]:
    """The suite's data module (set up) and its exact entropy in bits per token."""
    dm = MarkovTokensDataModule(
        cfg.num_classes, cfg.seq_len, num_train=cfg.num_train, num_val=max(cfg.num_eval, cfg.num_nll), seed=0
    )
    dm.setup()
    return dm, dm.true_entropy_nats_per_token() / LOG2


def run(settings: Settings) -> Report:
    cfg = QUICK if settings.quick else FULL
    dm, entropy_bits = markov_data(cfg)
    rows, floors = [], []
    for seed in range(settings.seeds):
        fresh = dm.sample_reference(cfg.num_eval, seed=10_000 + seed)
        floors.append({"seed": seed, "bigram_tv": _bigram_tv(fresh, dm.split("val")[: cfg.num_eval], cfg.num_classes)})
        for row in cfg.rows:
            rows += _run_one(row, dm, seed, cfg, entropy_bits)
            write_csv(settings.out / "results_raw.csv", rows)  # so far: a long run can be read while it goes
            print(
                f"  ctime: {row} seed {seed}: {rows[-1]['train_seconds']:.1f}s training, gap "
                f"{rows[-1]['nll_gap_bits']:.4f} bits",
                flush=True,
            )
    return _report(settings, cfg, rows, floors, data_nll_bits(dm, cfg))


# ------------------------------------------------------------------ output
def data_nll_bits(dm: MarkovTokensDataModule, cfg: Config) -> float:
    """The true chain's NLL of the held-out sequences the bound is measured on, bits per token: what
    every row's bound on them is compared with (their mean misses the exact entropy by sampling noise;
    a bound exceeds it by KL + slack >= 0 in expectation over sequences)."""
    return float(-dm.chain.log_prob(dm.split("test")[: cfg.num_nll]).mean()) / cfg.seq_len / LOG2


def _report(settings: Settings, cfg: Config, rows: list[dict], floors: list[dict], data_bits: float) -> Report:
    write_csv(settings.out / "results_raw.csv", rows)
    write_csv(settings.out / "floors_raw.csv", floors)
    metrics = [
        "bigram_tv",
        "evaluations_per_sample",
        "nll_bits_per_token",
        "entropy_bits_per_token",
        "nll_gap_bits",
        "train_seconds",
        "nll_seconds",
        "sample_seconds",
    ]
    agg = aggregate(rows, ["row", "sample_steps"], metrics)
    floor = aggregate([dict(f, kind="floor") for f in floors], ["kind"], ["bigram_tv"])[0]
    write_csv(settings.out / "results.csv", agg + [dict(floor, row="floor (data vs data)")])
    first = {r["row"]: r for r in agg}  # one row per model for the NLL table (same value at every step count)
    best_discrete = min((first[r] for r in cfg.rows if r.startswith("absorbing")), key=lambda r: r["nll_gap_bits_mean"])
    masked = first["masked (continuous)"]
    findings = [
        f"Exact entropy {masked['entropy_bits_per_token_mean']:.4f} bits/token. NLL-bound gap: continuous masked "
        f"{masked['nll_gap_bits_mean']:.4f}, best discrete ({best_discrete['row']}) "
        f"{best_discrete['nll_gap_bits_mean']:.4f} bits/token.",
        "Bigram TV floor "
        + f"{floor['bigram_tv_mean']:.4f}; masked (caching sampler) at "
        + ", ".join(
            f"{r['sample_steps']} steps {r['bigram_tv_mean']:.4f} ({r['evaluations_per_sample_mean']:.1f} "
            "evaluations/sample)"
            for r in agg
            if r["row"] == "masked (continuous)"
        )
        + ".",
    ]
    findings.insert(
        1,
        f"The {cfg.num_nll} held-out sequences' own NLL under the true chain is {data_bits:.4f} bits/token "
        f"({data_bits - masked['entropy_bits_per_token_mean']:+.4f} from the exact entropy: sampling noise of the "
        "sequences, shared by every row); above it: continuous masked "
        f"{masked['nll_bits_per_token_mean'] - data_bits:.4f}, {best_discrete['row']} "
        f"{best_discrete['nll_bits_per_token_mean'] - data_bits:.4f} bits/token.",
    )
    tables = [_nll_table(first, cfg, data_bits), _sample_table(agg, floor, cfg)]
    config = {
        "denoiser": f"TokenTransformer(d_model={cfg.d_model}, depth={cfg.depth}, heads={cfg.heads})",
        "chain": "MarkovTokensDataModule(seed=0, concentration=0.5)",
        **asdict(cfg),
    }
    return Report(tables, [_plot(settings, cfg, agg, floor)], findings, config)


def _nll_table(first: dict, cfg: Config, data_bits: float) -> Table:
    rows = [
        [
            name,
            fmt(r["nll_bits_per_token_mean"], r["nll_bits_per_token_std"], 4),
            fmt(r["entropy_bits_per_token_mean"], None, 4),
            fmt(r["nll_gap_bits_mean"], r["nll_gap_bits_std"], 4),
            fmt(r["nll_bits_per_token_mean"] - data_bits, r["nll_bits_per_token_std"], 4),
            fmt(r["train_seconds_mean"], r["train_seconds_std"], 1),
            fmt(r["nll_seconds_mean"], None, 1),
        ]
        for name, r in first.items()
    ]
    notes = [
        f"NLL bound on {cfg.num_nll} held-out sequences of L = {cfg.seq_len} tokens (K = {cfg.num_classes}), bits "
        "per token: "
        "discrete rows sum all T terms (T denoiser calls); continuous rows integrate the continuous ELBO with the "
        "stratified "
        f"estimate at N = {cfg.num_points} times (N calls; docs/theory.md, 'Continuous time'). The sequences' own "
        "NLL is their mean -log p under the true chain (MarkovChain.log_prob); in expectation a bound exceeds it "
        "by KL(data || model) + slack >= 0.",
        f"Equal budgets: {cfg.train.steps} AdamW steps of {cfg.train.batch_size} sequences, lr {cfg.train.lr} with "
        "5% warm-up and cosine decay"
        + (f", gradients clipped at norm {cfg.train.grad_clip:g}" if cfg.train.grad_clip else "")
        + ", the same TokenTransformer body. Losses: discrete rows the shipped hybrid (cross-entropy + 0.01 x the "
        f"T-scaled ELBO terms), continuous masked ({cfg.masked_schedule} schedule) {LOSS_WORDS[cfg.masked_loss]}, "
        "continuous uniform (loglinear) the shipped hybrid (cross-entropy + 0.01 x the continuous ELBO), both with "
        "stratified t.",
    ]
    headers = [
        "process",
        "NLL bound (bits/token)",
        "exact H / L (bits/token)",
        "gap (bits/token)",
        f"above the sequences' own NLL {data_bits:.4f}",
        "train wall (s)",
        "bound wall (s)",
    ]
    return Table("Continuous time: NLL bound vs exact entropy at equal budgets", headers, rows, notes)


def _sample_table(agg: list[dict], floor: dict, cfg: Config) -> Table:
    cell = lambda r: f"{fmt(r['bigram_tv_mean'], r['bigram_tv_std'], 4)} ({r['evaluations_per_sample_mean']:.1f})"  # noqa: E731
    rows = [["floor: data vs data", *[fmt(floor["bigram_tv_mean"], floor["bigram_tv_std"], 4)] * len(cfg.steps)]]
    for name in cfg.rows:
        cells = {r["sample_steps"]: cell(r) for r in agg if r["row"] == name}
        rows.append([name, *[cells.get(s, "— (steps > T)") for s in cfg.steps]])
    notes = [
        f"Each cell: bigram TV of {cfg.num_eval} samples against {cfg.num_eval} held-out sequences (over all states, "
        "so a mask "
        "left in a sample counts as an error), and in parentheses the network evaluations per sample "
        "(SamplingStats). The "
        "masked row samples with the caching sampler (a sequence is re-evaluated only when one of its tokens "
        "changed), so its "
        f"evaluations per sample stay below L + 1 = {cfg.seq_len + 1} however many steps; every other row costs one "
        "evaluation per step.",
    ]
    return Table(
        "Continuous time: sample quality (bigram TV) and network evaluations per sample",
        ["process", *[f"{s} steps" for s in cfg.steps]],
        rows,
        notes,
    )


def _plot(settings: Settings, cfg: Config, agg: list[dict], floor: dict) -> tuple[str, str]:
    fig, axes = new_figure(ncols=2, width=4.2, height=3.3)
    for i, name in enumerate(cfg.rows):
        color = f"C{i}"  # matplotlib's cycle, one color per row
        pts = sorted(
            (r["sample_steps"], r["bigram_tv_mean"], r["evaluations_per_sample_mean"]) for r in agg if r["row"] == name
        )
        axes[0, 0].plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=color, ms=4, label=name)
        axes[0, 1].plot([p[0] for p in pts], [p[2] for p in pts], "-o", color=color, ms=4, label=name)
    axes[0, 0].axhline(floor["bigram_tv_mean"], color="k", lw=0.8, ls=":", label="floor")
    axes[0, 0].set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="bigram TV", title="sample quality")
    axes[0, 1].set(
        xscale="log", yscale="log", xlabel="sampling steps", ylabel="network evaluations / sample", title="cost"
    )
    axes[0, 0].legend(fontsize=6)
    save_figure(fig, settings.out / "bench_ctime_steps.png")
    return (
        "bench_ctime_steps.png",
        "Bigram TV (left, dotted: floor) and network evaluations per sample (right) against sampling steps.",
    )
