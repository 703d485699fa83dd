"""Write ``docs/benchmarks.md`` from the suites' ``summary.json`` files under an output directory.

Plots are copied to ``docs/img/`` (their names already start with ``bench_``). Suites missing from
the output directory are listed with the command that produces them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks import SUITES
from benchmarks.common import markdown_table

__all__ = ["write_docs"]

INTRO = {
    "gaussian": (
        "Continuous data: eight Gaussians, swiss roll and a 4-component Gaussian mixture with known density. The "
        "eps, x0, v "
        "and previous-step parametrizations get the same MLPDenoiser, the same data, the same optimizer steps and "
        "the same "
        "AdamW schedule; each trained model is sampled with all T steps and strided to T/4, T/20 and T/100 "
        "(ancestral and "
        "DDIM with eta = 0). Reported: the NLL bound and its gap to the data's true entropy, MMD² and sliced "
        "Wasserstein-2 "
        "against their data-vs-data floor, and training wall time."
    ),
    "categorical": (
        "Token sequences from a random Markov chain with an exact entropy rate. x0 vs previous-step under uniform, "
        "absorbing "
        "and marginal noise, with the same TokenTransformer body and the same budget; NLL bound in bits per token "
        "against "
        "the exact entropy per token, and unigram / bigram TV of samples against the floor of two true samples."
    ),
    "factorization": (
        "No training: the key property of per-token (factorized) reverse steps. An oracle x0-denoiser returns the "
        "exact "
        "q(x0_i | x_t) for a strongly correlated 3-token distribution, and the derived reverse chain is propagated "
        "exactly over "
        "all joint states. The joint error is the factorization of each jump; it shrinks as the steps shrink, while "
        "each "
        "token's marginal stays close to exact."
    ),
    "speed": (
        "Library overhead measured side by side in one process against the bare denoiser: training step (timestep "
        "and noise "
        "draws, loss) and sampling step (the derived reverse step), for the 2-D MLP and the token transformer, plus "
        "the memory "
        "of the categorical posterior. With diffusers installed (the optional 'bench' extra), its DDPMScheduler / "
        "DDIMScheduler sampling steps and an add_noise training step drive the same MLP on the same jumps, and their "
        "ratios "
        "sit beside diffkit's in the 'diffkit vs diffusers' table; without it that table says it was skipped."
    ),
    "graphs": (
        "DiGress-style graphs (x0, symmetric masked edges, GraphTransformer): the data-marginal edge transition "
        "against the "
        "uniform one on community-small with the same network, steps, batches and seeds, scored by MMD ratios to the "
        "test "
        "set and the NLL bound; and the cost of diffkit's graph training and sampling step against the bare network "
        "for 20- and 64-node graphs. The trained-model graph benchmarks (planar, SBM, trees) are on the Graph "
        "benchmarks page."
    ),
    "guidance": (
        "Classifier-free guidance: one conditional model per noise kind (eight Gaussians conditioned on the mode, "
        "Gaussian "
        "noise; Markov-chain tokens conditioned on the chain, absorbing noise), trained with the condition dropped "
        "at random "
        "and sampled at w = 0, 0.5, 1, 2, 4. Conditional accuracy (nearest mode; exact likelihood classifier over "
        "the chains) "
        "against the spread of each mode (1 = the true conditional) and the exact NLL gap of the tokens (0 = exact). "
        "docs/conditioning.md explains the two combinations."
    ),
    "sharpness": (
        "Is the README's quickstart picture as sharp as the data? The shipped examples/configs/swiss_roll.yaml is "
        "trained "
        "exactly as `diffkit fit` runs it, then sampled with the ancestral chain, DDIM (eta = 0) and "
        "DPM-Solver++(2M) at "
        "10, 20, 50 and 200 network calls. Scored by the mean distance of samples to the generating spiral over that "
        "of "
        "real data (1 = as sharp as the data; an RBF MMD with a median bandwidth cannot see this blur) and k-NN "
        "precision / "
        "recall (k = 5) next to the data floor."
    ),
    "ctime": (
        "Continuous time (t in [0, 1]) against discrete time on the Markov tokens of the shipped configs (K = 8, L = "
        "32): "
        "discrete absorbing noise with T = 100 and T = 1000, continuous masked noise (MDLM: the weighted "
        "cross-entropy ELBO, "
        "stratified t, a network without time input, the caching sampler) and continuous uniform noise (UDLM), with "
        "the same "
        "network body and training budget. NLL bound against the exact entropy, and bigram TV of samples at 8 to "
        "1024 steps "
        "with the network evaluations each sample cost."
    ),
}


def _load(out: Path) -> dict[str, dict]:
    found = {}
    for suite in SUITES:
        path = out / suite / "summary.json"
        if path.exists():
            found[suite] = json.loads(path.read_text())
    return found


def _machine_section(summaries: dict[str, dict]) -> str:
    first = next(iter(summaries.values()))["machine"]
    rows = [
        ["CPU", first["cpu"]],
        ["logical cores", first["cores"]],
        ["torch", first["torch"]],
        ["torch threads", first["torch_threads"]],
        ["Python", first["python"]],
        ["OS", first["os"]],
    ]
    loads = ", ".join(
        f"{name} {s['machine'].get('load_average_1min_at_start', 'n/a')}" for name, s in summaries.items()
    )
    commits = ", ".join(f"{name} {s['machine'].get('diffkit_commit', 'n/a')}" for name, s in summaries.items())
    return (
        "## Machine\n\n"
        + markdown_table(["", ""], rows)
        + f"\n1-minute load average when each suite started: {loads}. "
        "The machine is shared, so absolute times vary between runs; ratios in the speed suite are measured side by "
        "side "
        f"to cancel that.\n\nCode version (git commit) of each run: {commits}.\n"
    )


def _runs_section(summaries: dict[str, dict]) -> str:
    rows = [
        [
            name,
            f"`{s['command']}`",
            f"{s['wall_seconds']:.0f} s",
            "quick" if s["settings"]["quick"] else "full",
            s["settings"]["seeds"] if name != "speed" else "— (repeats)",
            s["finished"],
        ]
        for name, s in summaries.items()
    ]
    total = sum(s["wall_seconds"] for s in summaries.values())
    return (
        "## Commands and wall times\n\n"
        + markdown_table(["suite", "command", "wall time", "budget", "seeds", "finished"], rows)
        + f"\nTotal: {total / 60:.1f} min. Every suite writes results.csv (mean and std over seeds), results_raw.csv "
        "(one row per seed), table.md, PNG plots and summary.json (budgets, machine) into `<out>/<suite>/`.\n"
    )


def _suite_section(name: str, summary: dict, img_dir: Path, out: Path) -> str:
    quick = " (quick smoke-test budget: not representative)" if summary["settings"]["quick"] else ""
    parts = [
        f"## {name}{quick}\n",
        INTRO[name] + "\n",
        f"Command: `{summary['command']}` ({summary['wall_seconds']:.0f} s).\n",
    ]
    config = ", ".join(f"{k} = {v}" for k, v in summary["config"].items())
    parts.append(f"<details><summary>Budgets</summary>\n\n{config}\n\n</details>\n")
    parts.append(summary["markdown"])
    for file_name, caption in summary["plots"]:
        source = out / name / file_name
        if source.exists():
            shutil.copyfile(source, img_dir / file_name)
            parts.append(f"![{caption}](img/{file_name})\n\n*{caption}*\n")
    return "\n".join(parts)


def write_docs(out: Path, docs_dir: Path) -> Path:
    """Build ``docs_dir/benchmarks.md`` (and ``docs_dir/img/bench_*.png``) from ``out``.

    Raises:
        FileNotFoundError: if no suite has been run into ``out``.
    """
    summaries = _load(out)
    if not summaries:
        raise FileNotFoundError(f"no suite results under {out}; run e.g. `python -m benchmarks all --out {out}` first")
    img_dir = docs_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    text = [
        "# Benchmarks\n",
        "Generated by `python -m benchmarks <suite> --write-docs` (benchmarks/docs.py); edit the suites, not this "
        "page. "
        "Every number below comes from the runs listed under *Commands and wall times*; mean ± std is over seeds "
        "(seeds vary initialization, training batches, noise and sampling; the data sets are fixed).\n",
        "Reproduce everything (about 25 min on 2 CPU cores) with `python -m benchmarks all --write-docs`, or one suite "
        "with `python -m benchmarks <suite> --write-docs`; add `--quick` for a smoke run of a few seconds per suite "
        "(what `tests/test_benchmarks.py` does). `python -m benchmarks docs` rebuilds this page from the last "
        "results.\n",
        _machine_section(summaries),
        _runs_section(summaries),
    ]
    missing = [s for s in SUITES if s not in summaries]
    if missing:
        text.append(
            "Not run into this output directory: "
            + ", ".join(f"{m} (`python -m benchmarks {m}`)" for m in missing)
            + ".\n"
        )
    text += [_suite_section(name, s, img_dir, out) for name, s in summaries.items()]
    path = docs_dir / "benchmarks.md"
    path.write_text("\n".join(text))
    return path
