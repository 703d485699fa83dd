"""Sharpness suite: is the README's quickstart picture as sharp as the data, for every sampler?

Trains the shipped ``examples/configs/swiss_roll.yaml`` exactly as ``diffkit fit`` does (its own
budget; only the output folder moves), then samples the checkpoint with each sampler
(``ancestral``, ``ddim``, ``dpmpp_2m``) at 10, 20, 50 and 200 network calls (capped at T) and
scores the samples with metrics that see blur (``diffkit.metrics.manifold``):

- the distance ratio: mean distance of samples to the generating spiral / the same for real data
  (1 = as sharp as the data; the RBF MMD cannot see this);
- k-NN precision / recall (k = 5) against held-out real data, with their data-vs-data floor.

The issue's targets are printed as findings: distance ratio <= 1.15 with the default sampler
(ancestral, all T steps), <= 1.3 with 20-step dpmpp_2m and with 50-step DDIM. Wall time of the
fit is recorded with the machine's load average.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from benchmarks.common import Report, Settings, Table, aggregate, new_figure, save_figure, write_csv
from diffkit.data.toy2d import swiss_roll
from diffkit.metrics.manifold import knn_precision, knn_recall, manifold_distance

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "configs" / "swiss_roll.yaml"
SAMPLERS = ("ancestral", "ddim", "dpmpp_2m")
CALLS = (10, 20, 50, 200)
TARGETS = {("ancestral", None): 1.15, ("dpmpp_2m", 20): 1.3, ("ddim", 50): 1.3}


def _fit(out: Path, quick: bool) -> tuple[Path, float, str]:
    """Train the shipped config into ``out``; returns (checkpoint, wall seconds, load average)."""
    from diffkit.cli import main

    cfg = out / "swiss_roll.yaml"
    cfg.write_text(CONFIG.read_text().replace("runs/swiss_roll", str(out / "run")))
    args = ["fit", "--config", str(cfg), "--trainer.enable_progress_bar=false"]
    if quick:
        args += [
            "--trainer.max_steps=20",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            "--model.num_eval_samples=0",
            "--data.init_args.num_train=2048",
            "--data.init_args.num_val=64",
        ]
    start = time.perf_counter()
    main(args)
    wall = time.perf_counter() - start
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return out / "run" / "checkpoints" / "last.ckpt", wall, load


def _score(samples: torch.Tensor, real: torch.Tensor, real_dist: float) -> dict[str, float]:
    return {
        "ratio": float(manifold_distance(samples, "swiss_roll").mean()) / real_dist,
        "precision": float(knn_precision(samples, real)),
        "recall": float(knn_recall(samples, real)),
    }


def _train_mixture(process, net, data: torch.Tensor, kind: str, steps: int, seed: int) -> float:
    """AdamW (lr 2e-3, cosine decay to 0) on ``process.loss(kind)`` with the v target; returns seconds."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    start = time.perf_counter()
    for _ in range(steps):
        x0 = data[torch.randint(0, data.shape[0], (256,), generator=gen)]
        t = process.sample_timesteps(256, generator=gen)
        x_t, noise = process.q_sample(x0, t, generator=gen)
        loss = process.loss(net(x_t, t), x0, x_t, t, noise, "v", kind).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def mixture_nll(quick: bool, seed: int = 0) -> Table:
    """NLL bound (nats/dim) on the 4-component Gaussian mixture against its true entropy, with the
    reverse variance fixed to beta_tilde ("posterior") or beta ("forward"), both from one network
    trained with the simple loss, and learned (hybrid loss, mean detached in the KL)."""
    import diffkit
    from diffkit import GaussianProcess
    from diffkit.data import GaussianMixtureDataModule
    from diffkit.models import MLPDenoiser

    T, steps, n = (20, 30, 64) if quick else (200, 3000, 2000)
    dm = GaussianMixtureDataModule(dim=2, num_train=20000, num_val=n, seed=0)
    dm.setup()
    train, held_out = dm.split("train"), dm.split("val")
    entropy = dm.true_entropy_nats_per_dim()
    rows = []
    for variance, kind in (("posterior", "simple"), ("learned", "hybrid")):
        torch.manual_seed(seed)
        net = MLPDenoiser(2, T, learn_variance=variance == "learned")
        proc = GaussianProcess(T, reverse_variance=variance)
        seconds = _train_mixture(proc, net, train, kind, steps, seed)
        net.eval()
        evals = [variance] if variance == "learned" else ["posterior", "forward"]
        for ev in evals:
            proc_ev = GaussianProcess(T, reverse_variance=ev)
            bound = diffkit.nll_bound(proc_ev, net, held_out, "v", generator=torch.Generator().manual_seed(seed))
            nats = float(bound.total.sum() / bound.num_elements.sum())
            rows.append([ev, kind, f"{nats:.3f}", f"{nats - entropy:+.3f}", f"{seconds:.0f}"])
    return Table(
        "Gaussian mixture: NLL bound (nats/dim) vs true entropy, by reverse variance",
        ["reverse variance", "training loss", "NLL bound", "gap to entropy", "train s"],
        rows,
        notes=[
            f"true entropy {entropy:.3f} nats/dim; T = {T}, {steps} steps of batch 256, v target, MLPDenoiser(2, T) "
            "default width; "
            f"bound on {n} held-out points; posterior and forward share one network (the variance does not enter the "
            "simple loss)"
        ],
    )


def run(settings: Settings) -> Report:
    from diffkit.cli import load_model

    quick = settings.quick
    n = 200 if quick else 4000
    rows, pictures = [], {}
    fits = []
    for seed in range(settings.seeds):
        out = settings.out / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        ckpt, wall, load = _fit(out, quick)
        fits.append((wall, load))
        model = load_model(ckpt)
        T = model.process.num_steps
        real = swiss_roll(n, torch.Generator().manual_seed(1000 + seed))
        fresh = swiss_roll(n, torch.Generator().manual_seed(2000 + seed))
        real_dist = float(manifold_distance(real, "swiss_roll").mean())
        floor = _score(fresh, real, real_dist)
        rows.append({"seed": seed, "sampler": "data (floor)", "calls": 0, **floor})
        for sampler in SAMPLERS:
            for calls in sorted({min(c, T) for c in CALLS}):
                gen = torch.Generator().manual_seed(seed)
                x = model.sample(n, num_steps=calls, generator=gen, sampler=sampler)
                rows.append({"seed": seed, "sampler": sampler, "calls": calls, **_score(x, real, real_dist)})
                if seed == 0 and (sampler, calls) in {("ancestral", T), ("dpmpp_2m", 20), ("ddim", 50)}:
                    pictures[f"{sampler}, {calls} calls"] = x
        if seed == 0:
            pictures["data"] = fresh
    write_csv(settings.out / "results_raw.csv", rows)
    write_csv(settings.out / "results.csv", aggregate(rows, ["sampler", "calls"], ["ratio", "precision", "recall"]))

    def mean(sampler: str, calls: int, key: str) -> float:
        vals = [r[key] for r in rows if r["sampler"] == sampler and r["calls"] == calls]
        return sum(vals) / len(vals)

    T = max(r["calls"] for r in rows)
    headers = ["sampler", *[f"{c} calls" for c in sorted({r["calls"] for r in rows if r["calls"]})]]
    table_rows = []
    for sampler in SAMPLERS:
        cells = [sampler]
        for c in sorted({r["calls"] for r in rows if r["calls"]}):
            cells.append(
                f"{mean(sampler, c, 'ratio'):.3f} (P {mean(sampler, c, 'precision'):.2f} / R "
                f"{mean(sampler, c, 'recall'):.2f})"
            )
        table_rows.append(cells)
    table_rows.append(
        [
            "data (floor)",
            f"{mean('data (floor)', 0, 'ratio'):.3f} (P {mean('data (floor)', 0, 'precision'):.2f} / R "
            f"{mean('data (floor)', 0, 'recall'):.2f})",
        ]
    )
    walls = ", ".join(f"{w:.0f} s (load {ld})" for w, ld in fits)
    table = Table(
        "Swiss roll quickstart: distance ratio to the spiral (k-NN precision / recall) vs network calls",
        headers,
        table_rows,
        notes=[
            f"shipped config {CONFIG.name}, {settings.seeds} seed(s), {n} samples; fit wall time {walls}",
            "distance ratio = mean distance of samples to the generating spiral / that of real data (1 = as sharp as "
            "the data)",
        ],
    )
    findings = []
    for (sampler, calls), target in TARGETS.items():
        calls = T if calls is None else calls
        value = mean(sampler, calls, "ratio")
        findings.append(
            f"{sampler} {calls} calls: distance ratio {value:.3f} (target <= {target}: "
            f"{'met' if value <= target else 'missed'})"
        )
    fig, axes = new_figure(ncols=len(pictures), width=3.2, height=3.2)
    for ax, (title, x) in zip(axes.flat, sorted(pictures.items(), key=lambda kv: kv[0] != "data"), strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        ax.set_title(title, fontsize=8)
        ax.set_aspect("equal")
        ax.set_xlim(-2.2, 2.2)
        ax.set_ylim(-2.2, 2.2)
    save_figure(fig, settings.out / "bench_sharpness_samples.png")
    nll_table = mixture_nll(quick)
    return Report(
        tables=[table, nll_table],
        plots=[("bench_sharpness_samples.png", "The quickstart's samples with each sampler next to real data")],
        findings=findings,
        config={"config": str(CONFIG.name), "samples": n, "calls": list(CALLS)},
    )
