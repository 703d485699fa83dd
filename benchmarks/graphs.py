"""Graph suite: DiGress-style edge transitions at equal budgets, and the cost of diffkit's graph step.

Two studies (issue 5):

- **Edge transition** on community-small (``GraphDataModule("community_small")``, 80 train / 20
  test graphs of 12-20 nodes): the x0 parametrization with the data-marginal edge transition
  (DiGress) against the uniform one, each with the same ``GraphTransformer``, the same optimizer
  steps, batches and AdamW schedule (``benchmarks.training``'s warm-up + cosine), the same seeds.
  Each trained model samples as many graphs as the test split (all T steps, node counts drawn
  from the training graphs) and is scored with ``GraphMetrics`` (MMD ratios to train-vs-test,
  uniqueness and novelty; community-small has no validity rule) and the NLL bound on the test
  graphs (all T terms, bits per node and edge variable).
- **Step cost**: one training step (``DiffusionModule``'s step without Lightning's loop: batch
  checks, timestep and noise draws for X and the symmetric E, the masked loss; then backward,
  AdamW) and one sampling step (an iteration of ``diffkit.sample``'s loop: the network, then the
  ProductProcess step) against the bare ``GraphTransformer`` forward
  (+ masked cross-entropy to precomputed targets, backward, AdamW), side by side in one process
  (``benchmarks.timing.interleaved``), for n = 20 and n = 64 nodes.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from benchmarks.common import (
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
from benchmarks.speed import _module_train_fn, _train_fn
from benchmarks.timing import interleaved, ratio
from benchmarks.training import STREAM_INIT, STREAM_NLL, STREAM_SAMPLE, Budget
from benchmarks.training import train as train_model
from diffkit import CategoricalProcess, ProductProcess
from diffkit._checks import trusted_values
from diffkit.data import GraphDataModule
from diffkit.graphs import sample_node_masks, to_networkx
from diffkit.likelihood import nll_bound
from diffkit.metrics.graphs import GraphMetrics
from diffkit.models import GraphTransformer
from diffkit.sampling import denoise_step, sample


@dataclass(frozen=True)
class Config:
    num_steps: int  # T
    hidden: int
    edge_hidden: int
    depth: int
    budget: Budget
    speed_sizes: tuple[tuple[int, int], ...]  # (n nodes, batch)
    speed_rounds: int
    warmup: int


QUICK = Config(10, 16, 8, 1, Budget(steps=3, batch_size=16, lr=1e-3), ((20, 4),), 3, 1)
FULL = Config(100, 32, 16, 2, Budget(steps=600, batch_size=32, lr=1e-3), ((20, 32), (64, 8)), 30, 3)
TRANSITIONS = ("marginal", "uniform")


def _process(T: int, edge_transition: str) -> ProductProcess:
    return ProductProcess(
        {"X": CategoricalProcess(1, T), "E": CategoricalProcess(2, T, edge_transition)},
        weights={"E": 5.0},
        symmetric=["E"],
    )


def _net(cfg: Config, T: int, seed: int) -> GraphTransformer:
    with seeded_init(seed, STREAM_INIT):
        return GraphTransformer(1, 2, 1, 2, T, hidden=cfg.hidden, edge_hidden=cfg.edge_hidden, global_hidden=cfg.hidden,
                                depth=cfg.depth, heads=4, structural_features=True)  # fmt: skip


# ------------------------------------------------------------------ edge-transition study
def transition_rows(cfg: Config, seeds: int) -> list[dict]:
    dm = GraphDataModule("community_small")
    train, test = dm.split("train"), dm.split("test")
    rows = []
    for seed in range(seeds):
        for transition in TRANSITIONS:
            T = cfg.num_steps
            process = _process(T, transition)
            if transition == "marginal":
                process.fields["E"].set_marginals(dm.class_marginals("E"))
            net = _net(cfg, T, seed)
            trained = train_model(process, net, train, "x0", cfg.budget, seed)  # leaves net in eval mode
            seconds, final_loss = trained.seconds, trained.final_loss
            param = process.get_parametrization("x0")
            gen = generator(seed, STREAM_SAMPLE)
            num = test["mask"].shape[0]
            mask = sample_node_masks(dm.node_count_distribution(), num, gen)
            n = mask.shape[1]
            with torch.no_grad():
                graphs = sample(process, net, {"X": (num, n), "E": (num, n, n)}, param, mask=mask, generator=gen)
                bound = nll_bound(process, net, test, param, generator=generator(seed, STREAM_NLL))
            metric = GraphMetrics.from_datamodule(dm, "test")
            metric.update(to_networkx(graphs))
            values = {k: float(v) for k, v in metric.compute().items()}
            rows.append(
                {
                    "transition": transition,
                    "seed": seed,
                    "steps": cfg.budget.steps,
                    "train_seconds": seconds,
                    "final_loss": final_loss,
                    "nll_bits": float(bound.bits_per_element.mean()),
                    **{
                        k.replace("/", "_"): values[k]
                        for k in (
                            "ratio/degree",
                            "ratio/clustering",
                            "ratio/orbit",
                            "ratio/spectre",
                            "ratio/mean",
                            "unique",
                            "novel",
                            "vun",
                        )
                    },
                }
            )
            print(
                f"  graphs: {transition} seed {seed}: ratio/mean {values['ratio/mean']:.2f}, {seconds:.0f} s",
                flush=True,
            )
    return rows


# ------------------------------------------------------------------ step cost
def speed_cases(n: int, batch: int, cfg: Config) -> dict[str, dict]:
    """Training and sampling functions of diffkit and of the bare network on random n-node graphs."""
    T = cfg.num_steps
    gen = torch.Generator().manual_seed(0)
    process = _process(T, "marginal")
    process.fields["E"].set_marginals(torch.tensor([0.8, 0.2], dtype=torch.float64))
    param = process.get_parametrization("x0")
    sizes = torch.randint(n // 2, n + 1, (batch,), generator=gen)
    mask = torch.arange(n) < sizes[:, None]  # (B, n)
    pairs = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    E = torch.triu((torch.rand(batch, n, n, generator=gen) < 0.2).long(), 1)
    E = (E + E.transpose(1, 2)) * pairs
    x0 = {"X": torch.zeros(batch, n, dtype=torch.long), "E": E, "mask": mask}
    t_fixed = process.sample_timesteps(batch, generator=gen)
    x_t_fixed = process.q_sample(x0, t_fixed, generator=gen).x_t
    base = _net(cfg, T, 0)
    nets = [base] + [copy.deepcopy(base) for _ in range(2)]
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in nets]

    def bare_loss(net):
        out = net(x_t_fixed, t_fixed)
        loss_x = F.cross_entropy(out["X"][mask], x0["X"][mask])
        loss_e = F.cross_entropy(out["E"][pairs], x0["E"][pairs])
        return loss_x + 5.0 * loss_e

    t_c = torch.full((batch,), T // 2)

    @torch.no_grad()
    def diffkit_sample():
        with trusted_values():  # as inside diffkit.sample's loop
            return denoise_step(process, nets[0], x_t_fixed, T // 2, T // 2 - 1, batch, param, gen, None)

    train = {"diffkit": _module_train_fn(process, base, "x0", x0)[0], "bare": _train_fn(nets[1], opts[1], bare_loss),
             "bare (again)": _train_fn(nets[2], opts[2], bare_loss)}  # fmt: skip
    sample_fns = {"diffkit": diffkit_sample, "bare": torch.no_grad()(lambda: nets[1](x_t_fixed, t_c)),
                  "bare (again)": torch.no_grad()(lambda: nets[2](x_t_fixed, t_c))}  # fmt: skip
    return {"train": train, "sample": sample_fns}


def speed_rows(cfg: Config) -> list[dict]:
    rows = []
    for n, batch in cfg.speed_sizes:
        cases = speed_cases(n, batch, cfg)
        for kind in ("train", "sample"):
            times = interleaved(cases[kind], cfg.speed_rounds, cfg.warmup)
            for name in ("diffkit", "bare (again)"):
                r = ratio(times[name], times["bare"])
                rows.append(
                    {
                        "nodes": n,
                        "batch": batch,
                        "kind": kind,
                        "candidate": name,
                        "rounds": cfg.speed_rounds,
                        "candidate_ms": 1e3 * r.median_a,
                        "bare_ms": 1e3 * r.median_b,
                        "ratio": r.value,
                        "ci_low": r.low,
                        "ci_high": r.high,
                    }
                )
        print(f"  graphs: step cost n = {n} done", flush=True)
    return rows


# ------------------------------------------------------------------ report
METRICS = [
    "ratio_degree",
    "ratio_clustering",
    "ratio_orbit",
    "ratio_spectre",
    "ratio_mean",
    "unique",
    "novel",
    "vun",
    "nll_bits",
    "final_loss",
    "train_seconds",
]


def run(settings: Settings) -> Report:
    cfg = QUICK if settings.quick else FULL
    raw = transition_rows(cfg, settings.seeds)
    table = aggregate(raw, ["transition"], METRICS)
    speed = speed_rows(cfg)
    write_csv(settings.out / "results_raw.csv", raw)
    write_csv(settings.out / "results.csv", table)
    write_csv(settings.out / "speed.csv", speed)

    def cell(row, key, digits=3):
        return fmt(row[f"{key}_mean"], row[f"{key}_std"], digits)

    t1 = Table(
        "Graphs: marginal vs uniform edge transition on community-small (x0, equal budgets)",
        [
            "edge transition",
            "degree ratio",
            "clustering ratio",
            "orbit ratio",
            "spectre ratio",
            "mean ratio",
            "unique",
            "novel",
            "NLL (bits/var)",
            "final loss",
            "train (s)",
        ],
        [
            [
                r["transition"],
                *(cell(r, k, 2) for k in METRICS[:5]),
                *(cell(r, k, 2) for k in ("unique", "novel")),
                cell(r, "nll_bits"),
                cell(r, "final_loss"),
                cell(r, "train_seconds", 1),
            ]
            for r in table
        ],
        [
            f"T = {cfg.num_steps}, GraphTransformer(hidden {cfg.hidden}, edge {cfg.edge_hidden}, depth {cfg.depth}, "
            "cycle features), "
            f"{cfg.budget.steps} AdamW steps of {cfg.budget.batch_size} graphs, lr {cfg.budget.lr} (warm-up + "
            "cosine), E loss weight 5.",
            "Ratios: MMD² to the 20 test graphs divided by the train-vs-test MMD² (1.0 = as close as the training "
            "graphs); "
            "20 samples per seed, all T steps. Community-small has no validity rule, so V.U.N. = unique and novel.",
            "NLL: the full bound (all T terms) on the test graphs, per node and edge variable (bits).",
        ],
    )
    t2 = Table(
        "Graphs: training and sampling step, diffkit vs the bare GraphTransformer",
        ["nodes", "batch", "step", "candidate", "candidate (ms)", "bare (ms)", "ratio", "95% CI"],
        [
            [
                r["nodes"],
                r["batch"],
                r["kind"],
                r["candidate"],
                f"{r['candidate_ms']:.2f}",
                f"{r['bare_ms']:.2f}",
                f"{r['ratio']:.3f}",
                f"{r['ci_low']:.3f}-{r['ci_high']:.3f}",
            ]
            for r in speed
        ],
        [
            "Same network, medians over interleaved rounds; 'bare (again)' is a second copy of the baseline (the A/A "
            "noise floor).",
            "diffkit's training step is DiffusionModule's (without Lightning's loop and logging): batch checks, the "
            "timestep and noise "
            "draws (X, and E's upper triangle mirrored) and the masked loss; the bare step reuses one precomputed "
            "x_t and takes masked "
            "cross-entropies. Sampling: an iteration of diffkit.sample's loop (network, then the ProductProcess "
            "step) vs the network alone.",
        ],
    )
    fig, axes = new_figure()
    ax = axes[0, 0]
    names = [r["transition"] for r in table]
    ax.bar(
        names,
        [r["ratio_mean_mean"] for r in table],
        yerr=[r["ratio_mean_std"] for r in table],
        color=["#1f77b4", "#ff7f0e"][: len(names)],
    )
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="train vs test")
    ax.set_ylabel("mean MMD ratio (lower is better)")
    ax.set_title("community-small, equal budgets")
    ax.legend()
    save_figure(fig, settings.out / "bench_graphs_transitions.png")
    by = {r["transition"]: r for r in table}
    findings = []
    if set(TRANSITIONS) <= set(by):
        m, u = by["marginal"], by["uniform"]
        findings.append(
            f"community-small, {cfg.budget.steps} steps: mean MMD ratio marginal "
            f"{m['ratio_mean_mean']:.2f} vs uniform {u['ratio_mean_mean']:.2f}; "
            f"NLL bound {m['nll_bits_mean']:.3f} vs {u['nll_bits_mean']:.3f} bits per variable."
        )
    for r in speed:
        if r["candidate"] == "diffkit":
            findings.append(
                f"{r['kind']} step, n = {r['nodes']} (batch {r['batch']}): diffkit / bare = {r['ratio']:.3f} "
                f"({r['ci_low']:.3f}-{r['ci_high']:.3f})."
            )
    return Report(
        tables=[t1, t2],
        plots=[
            (
                "bench_graphs_transitions.png",
                "Mean MMD ratio to the test set (1.0 = train vs test) of the two edge transitions at equal budgets",
            )
        ],
        findings=findings,
        config={
            **{k: v for k, v in asdict(cfg).items() if k != "budget"},
            "train": asdict(cfg.budget),
            "dataset": "community_small",
        },
    )
