"""Factorization suite (no training): what a per-token reverse kernel costs on correlated tokens.

Data: L = 3 tokens over K = 4 classes with a random, strongly correlated joint q0 over the K^L = 64
sequences (Dirichlet(0.1) weights; a new joint per seed). The forward process noises each token
independently (uniform or absorbing noise, cosine schedule).

Oracle denoiser: the exact per-token posterior q(x0_i | x_t) for the *whole* noisy sequence x_t,
by enumeration over the 64 clean sequences,

    q(x0 | x_t) ∝ q0(x0) prod_i q(x_t,i | x0_i)        (process.marginal per token)
    q(x0_i = k | x_t) = sum_{x0: x0_i = k} q(x0 | x_t),

which is the minimiser of the x0 cross-entropy loss: the best any x0-network can do.

The derived reverse step is the *product* of per-token kernels (docs/design.md (1) applied per token):

    p(x_s | x_t) = prod_i sum_k q(x_s,i | x_t,i, x0_i = k) q(x0_i = k | x_t)   (process.posterior)

Each factor is the exact conditional q(x_s,i | x_t), but the product drops the correlation between
tokens *within* one jump. The chain is run exactly: the joint distribution over all S^L states of
x_t (S = K, or K + 1 with the absorbing mask) starts at the prior and is multiplied by the
S^L x S^L reverse matrix at each step; no sampling noise. Reported: total variation between the
final joint and q0, and the largest per-token marginal TV, as a function of T (all steps) and of the
number of strided steps at fixed T.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import LOG2, Report, Settings, Table, aggregate, fmt, new_figure, save_figure, write_csv
from diffkit import CategoricalProcess, sampling_timesteps

NOISES = ("uniform", "absorbing")


@dataclass(frozen=True)
class Config:
    num_classes: int  # K
    seq_len: int  # L
    concentration: float  # Dirichlet concentration of the joint over K^L sequences
    num_steps_list: tuple[int, ...]  # T values, all steps
    stride_T: int  # fixed T for the stride study
    stride_steps: tuple[int, ...]  # number of sampling steps at stride_T
    control_max_T: int  # the exact-joint-kernel control runs for T <= this


QUICK = Config(4, 3, 0.1, (1, 2, 5, 10, 20, 50, 100), 100, (1, 2, 5, 10, 20, 50, 100), control_max_T=10)
FULL = Config(
    4,
    3,
    0.1,
    (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    1000,
    (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    control_max_T=100,
)


def enumerate_sequences(num_states: int, length: int) -> Tensor:
    """All num_states^length sequences in lexicographic order: (S^L, L) int64."""
    return torch.tensor(list(itertools.product(range(num_states), repeat=length)), dtype=torch.long)


def random_joint(num_sequences: int, concentration: float, seed: int) -> Tensor:
    """A Dirichlet(concentration) probability vector over the sequences: (N,) float64."""
    gen = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((num_sequences,), concentration, dtype=torch.float64), generator=gen)
    return gamma / gamma.sum()


def token_marginals(q: Tensor, sequences: Tensor, num_classes: int) -> Tensor:
    """Per-token marginals of a joint over sequences: (N,), (N, L) -> (L, K)."""
    return torch.einsum("n,nlk->lk", q, F.one_hot(sequences, num_classes).to(q.dtype))


def oracle_x0_probs(process: CategoricalProcess, q0: Tensor, x0_seqs: Tensor, xt_seqs: Tensor, t: int) -> Tensor:
    """Exact q(x0_i = k | x_t) for every noisy sequence x_t: (Z, L, K) float64 (module docstring)."""
    onehot = F.one_hot(x0_seqs, process.num_classes).to(torch.float64)  # (N, L, K)
    marg = process.marginal(onehot, t)  # (N, L, S): q(x_t,i | x0_i)
    post = q0[:, None] * _sequence_likelihood(marg, xt_seqs)  # (N, Z), unnormalized q(x0 | x_t)
    mass = post.sum(0, keepdim=True)  # (1, Z): q(x_t)
    post = torch.where(mass > 0, post / mass.clamp_min(1e-300), torch.full_like(post, 1.0 / post.shape[0]))
    return torch.einsum("nz,nlk->zlk", post, onehot)  # (Z, L, K)


def reverse_matrix(process: CategoricalProcess, x0_probs: Tensor, xt_seqs: Tensor, t: int, s: int) -> Tensor:
    """The factorized reverse kernel over joint states, R[z, z'] = prod_i p(x_s,i = z'_i | x_t = z): (Z, Z)."""
    per_token = process.posterior(xt_seqs, x0_probs, t, s)  # (Z, L, S)
    R = torch.ones(xt_seqs.shape[0], xt_seqs.shape[0], dtype=torch.float64)
    for i in range(xt_seqs.shape[1]):
        R = R * per_token[:, i, :][:, xt_seqs[:, i]]  # (Z, Z)
    return R


def exact_reverse_matrix(
    process: CategoricalProcess, q0: Tensor, x0_seqs: Tensor, xt_seqs: Tensor, t: int, s: int
) -> Tensor:
    """The control: the exact joint kernel q(x_s | x_t) = sum_x0 q(x0 | x_t) prod_i q(x_s,i | x_t,i, x0_i): (Z, Z).

    Same oracle and the same process.posterior, but the mixture over x0 is taken over whole
    sequences instead of per token, so nothing is factorized.
    """
    N, Z, L = x0_seqs.shape[0], xt_seqs.shape[0], x0_seqs.shape[1]
    onehot = F.one_hot(x0_seqs, process.num_classes).to(torch.float64)  # (N, L, K)
    marg = process.marginal(onehot, t)  # (N, L, S)
    post = q0[:, None] * _sequence_likelihood(marg, xt_seqs)  # (N, Z)
    post = post / post.sum(0, keepdim=True).clamp_min(1e-300)
    per_token = process.posterior(xt_seqs.repeat(N, 1), onehot.repeat_interleave(Z, 0), t, s).reshape(
        N, Z, L, -1
    )  # (N, Z, L, S)
    R = torch.ones(N, Z, Z, dtype=torch.float64)
    for i in range(L):
        R = R * per_token[:, :, i, :][:, :, xt_seqs[:, i]]  # (N, Z, Z)
    return torch.einsum("nz,nzw->zw", post, R)  # (Z, Z)


def _sequence_likelihood(marg: Tensor, xt_seqs: Tensor) -> Tensor:
    """prod_i q(x_t,i = z_i | x0_i) for every clean sequence n and noisy sequence z: (N, L, S) -> (N, Z)."""
    lik = torch.ones(marg.shape[0], xt_seqs.shape[0], dtype=torch.float64)
    for i in range(xt_seqs.shape[1]):
        lik = lik * marg[:, i, :][:, xt_seqs[:, i]]  # (N, Z)
    return lik


def run_chain(
    process: CategoricalProcess, q0: Tensor, x0_seqs: Tensor, timesteps: list[int], factorized: bool = True
) -> Tensor:
    """Propagate the prior's joint through the derived reverse chain; returns p(x0) over the K^L sequences.

    ``factorized=False`` uses the exact joint kernel instead (the control).
    """
    L = x0_seqs.shape[1]
    xt_seqs = enumerate_sequences(process.num_states, L)  # (Z, L)
    prior = process.prior_probs.to(torch.float64)  # (S,)
    p = prior[xt_seqs].prod(-1)  # (Z,): independent prior per token
    for t, s in zip(timesteps[:-1], timesteps[1:], strict=True):
        if factorized:
            R = reverse_matrix(process, oracle_x0_probs(process, q0, x0_seqs, xt_seqs, t), xt_seqs, t, s)
        else:
            R = exact_reverse_matrix(process, q0, x0_seqs, xt_seqs, t, s)
        p = p @ R
    clean = (xt_seqs < process.num_classes).all(-1)  # lexicographic order matches x0_seqs
    return p[clean]


def distances(p: Tensor, q0: Tensor, x0_seqs: Tensor, num_classes: int) -> dict[str, float]:
    """Joint TV (mass left on mask states counts), and the largest per-token marginal TV."""
    leftover = 1.0 - float(p.sum())
    joint = 0.5 * float((p - q0).abs().sum()) + 0.5 * abs(leftover)
    p_marg = token_marginals(p / p.sum(), x0_seqs, num_classes)
    q_marg = token_marginals(q0, x0_seqs, num_classes)
    return {
        "joint_tv": joint,
        "marginal_tv": float(0.5 * (p_marg - q_marg).abs().sum(-1).max()),
        "leftover_mass": leftover,
    }


def _entropy_bits(p: Tensor) -> float:
    return float(-torch.special.xlogy(p, p).sum()) / LOG2


def describe_joint(q0: Tensor, x0_seqs: Tensor, num_classes: int) -> dict[str, float]:
    """Total correlation sum_i H(x_i) - H(x) in bits, and TV(q0, product of its marginals)."""
    marg = token_marginals(q0, x0_seqs, num_classes)  # (L, K)
    product = marg[torch.arange(x0_seqs.shape[1]), x0_seqs].prod(-1)  # (N,)
    tc = sum(_entropy_bits(m) for m in marg) - _entropy_bits(q0)
    return {"total_correlation_bits": tc, "tv_to_independent": 0.5 * float((q0 - product).abs().sum())}


def run(settings: Settings) -> Report:
    cfg = QUICK if settings.quick else FULL
    x0_seqs = enumerate_sequences(cfg.num_classes, cfg.seq_len)
    rows, joints = [], []
    for seed in range(settings.seeds):
        q0 = random_joint(x0_seqs.shape[0], cfg.concentration, seed)
        joints.append({"seed": seed, **describe_joint(q0, x0_seqs, cfg.num_classes)})
        for noise in NOISES:
            for T in cfg.num_steps_list:
                process = CategoricalProcess(cfg.num_classes, T, transition=noise, schedule="cosine")
                p = run_chain(process, q0, x0_seqs, sampling_timesteps(T))
                row = {
                    "study": "all steps",
                    "noise": noise,
                    "T": T,
                    "sample_steps": T,
                    "seed": seed,
                    **distances(p, q0, x0_seqs, cfg.num_classes),
                }
                if T <= cfg.control_max_T:
                    exact = run_chain(process, q0, x0_seqs, sampling_timesteps(T), factorized=False)
                    row["control_joint_tv"] = distances(exact, q0, x0_seqs, cfg.num_classes)["joint_tv"]
                rows.append(row)
            process = CategoricalProcess(cfg.num_classes, cfg.stride_T, transition=noise, schedule="cosine")
            for steps in cfg.stride_steps:
                p = run_chain(process, q0, x0_seqs, sampling_timesteps(cfg.stride_T, steps))
                rows.append(
                    {
                        "study": "strided",
                        "noise": noise,
                        "T": cfg.stride_T,
                        "sample_steps": steps,
                        "seed": seed,
                        **distances(p, q0, x0_seqs, cfg.num_classes),
                    }
                )
    return _report(settings, cfg, rows, joints)


# ------------------------------------------------------------------ output
def _report(settings: Settings, cfg: Config, rows: list[dict], joints: list[dict]) -> Report:
    write_csv(settings.out / "results_raw.csv", rows)
    write_csv(settings.out / "joints_raw.csv", joints)
    rows = [{"control_joint_tv": float("nan"), **r} for r in rows]
    agg = aggregate(
        rows, ["study", "noise", "T", "sample_steps"], ["joint_tv", "marginal_tv", "leftover_mass", "control_joint_tv"]
    )
    ref = aggregate([dict(j, kind="q0") for j in joints], ["kind"], ["total_correlation_bits", "tv_to_independent"])[0]
    write_csv(settings.out / "results.csv", agg)
    tables = [_table(agg, ref, cfg, study) for study in ("all steps", "strided")]
    plots = [_plot(settings, agg, ref, cfg)]
    findings = []
    for noise in NOISES:
        sel = [r for r in agg if r["study"] == "all steps" and r["noise"] == noise]
        first, last = sel[0], sel[-1]
        findings.append(
            f"{noise}: joint TV {first['joint_tv_mean']:.4f} at T = {first['T']} -> {last['joint_tv_mean']:.2e} at T "
            f"= {last['T']}; "
            f"largest per-token marginal TV over all T {max(r['marginal_tv_mean'] for r in sel):.2e}."
        )
    findings.append(
        f"Data: total correlation {ref['total_correlation_bits_mean']:.3f} ± {ref['total_correlation_bits_std']:.3f} "
        "bits; "
        f"TV(q0, product of its marginals) {ref['tv_to_independent_mean']:.3f} ± {ref['tv_to_independent_std']:.3f}."
    )
    return Report(tables, plots, findings, asdict(cfg))


def _sci(mean: float, std: float) -> str:
    if mean != mean:  # NaN: not run
        return "—"
    return f"{mean:.2e}" + (f" ± {std:.0e}" if std else "")


def _table(agg: list[dict], ref: dict, cfg: Config, study: str) -> Table:
    values = sorted({r["sample_steps"] for r in agg if r["study"] == study})
    rows = []
    for noise in NOISES:
        by_steps = {r["sample_steps"]: r for r in agg if r["study"] == study and r["noise"] == noise}
        for metric, label in (
            ("joint_tv", "joint TV"),
            ("marginal_tv", "max per-token marginal TV"),
            ("control_joint_tv", "control: joint TV, exact joint kernel"),
        ):
            if metric != "control_joint_tv" or study == "all steps":
                rows.append(
                    [noise, label, *[_sci(by_steps[v][f"{metric}_mean"], by_steps[v][f"{metric}_std"]) for v in values]]
                )
    if study == "all steps":
        title, header = "Factorization: exact reverse chain, all T steps", [f"T = {v}" for v in values]
    else:
        title, header = (
            f"Factorization: strided sampling at T = {cfg.stride_T}",
            [f"{v} step{'s' * (v > 1)}" for v in values],
        )
    notes = [
        f"L = {cfg.seq_len} tokens, K = {cfg.num_classes}; q0 ~ Dirichlet({cfg.concentration}) over the "
        f"{cfg.num_classes**cfg.seq_len} sequences, "
        "a new q0 per seed: total correlation "
        f"{fmt(ref['total_correlation_bits_mean'], ref['total_correlation_bits_std'])} bits, "
        f"TV(q0, product of its marginals) = {fmt(ref['tv_to_independent_mean'], ref['tv_to_independent_std'])} "
        "(what one factorized jump from pure noise gives).",
        "Oracle x0-denoiser (exact q(x0_i | x_t) by enumeration) and the exact joint propagation of the "
        "product-of-per-token "
        "reverse kernels (process.posterior): no training and no sampling noise; the only error is the factorization "
        "of each jump.",
    ]
    if study == "all steps":
        notes += [
            f"Control (T <= {cfg.control_max_T}): the same oracle and process.posterior, but the mixture over x0 "
            "taken over whole "
            "sequences (the exact joint kernel q(x_s | x_t)); it returns q0 up to the prior mismatch q(x_T) != "
            "p(x_T), so the "
            "machinery is exact and the factorized rows' error is the factorization alone.",
            "Marginal TV: exact (prior mismatch only) for one jump from x_T; with several jumps the joint error of "
            "earlier jumps "
            "feeds into later per-token kernels, so marginals drift too, always far less than the joint, and shrink "
            "with the step size.",
        ]
    else:
        notes.append(
            f"k strided jumps at T = {cfg.stride_T} give the all-steps numbers of T = k to the digits shown: the "
            "cosine "
            "schedule is a function of t / T, so the jumps meet (almost) the same alpha_bar values."
        )
    return Table(title, ["noise", "metric", *header], rows, notes)


def _plot(settings: Settings, agg: list[dict], ref: dict, cfg: Config) -> tuple[str, str]:
    fig, axes = new_figure(ncols=2, width=4.4, height=3.5)
    for ax, study, xlabel in (
        (axes[0, 0], "all steps", "T (all steps)"),
        (axes[0, 1], "strided", f"sampling steps at T = {cfg.stride_T}"),
    ):
        for noise, color in zip(NOISES, ("C0", "C1"), strict=True):
            sel = sorted(
                (r for r in agg if r["study"] == study and r["noise"] == noise), key=lambda r: r["sample_steps"]
            )
            xs = [r["sample_steps"] for r in sel]
            ax.plot(xs, [r["joint_tv_mean"] for r in sel], "-o", color=color, ms=3, label=f"{noise}: joint TV")
            ax.plot(
                xs,
                [max(r["marginal_tv_mean"], 1e-17) for r in sel],
                "--s",
                color=color,
                ms=3,
                label=f"{noise}: max marginal TV",
            )
            control = [
                (r["sample_steps"], r["control_joint_tv_mean"])
                for r in sel
                if r["control_joint_tv_mean"] == r["control_joint_tv_mean"]
            ]
            if control:
                ax.plot(
                    *zip(*control, strict=True), "x:", color=color, ms=4, label=f"{noise}: control, exact joint kernel"
                )
        ax.axhline(ref["tv_to_independent_mean"], color="k", lw=0.8, ls=":", label="TV(q0, product of marginals)")
        xs = sorted({r["sample_steps"] for r in agg if r["study"] == study and r["sample_steps"] >= 10})
        ax.plot(xs, [0.5 / x for x in xs], color="0.5", lw=0.8, label="0.5 / steps")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="total variation", title=study)
    axes[0, 0].legend(fontsize=6)
    save_figure(fig, settings.out / "bench_factorization.png")
    return (
        "bench_factorization.png",
        "Exact factorized reverse chain with an oracle x0-denoiser: joint TV to the data falls with the step size; "
        "per-token marginals stay near exact (log-log, mean over seeds).",
    )
