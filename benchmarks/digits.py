"""Digits benchmark: sample quality of the two digits configs against held-out real digits (the floor).

    python -m benchmarks.digits --gaussian runs/digits_gaussian/checkpoints/last.ckpt \\
        --categorical runs/digits_categorical/checkpoints/last.ckpt [--num_steps N] [--img docs/img]

A digit classifier (``diffkit.metrics.digits``) is trained on the real training split of
``DigitsDataModule`` (seed 0: 1,258 train / 180 val / 359 test images). Each checkpoint samples as many
digits as the test split holds (FD depends on the count); the floor is the test split itself. Rows:
Frechet distance in the classifier's feature space against the training split (and its ratio to the
floor's), mean predictive entropy, class entropy (ln 10 = 2.303 is perfectly balanced) and class
coverage. Sample grids are written to ``--img`` (digits_real.png, digits_<kind>.png).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from diffkit.cli import load_model
from diffkit.data.digits import DigitsDataModule, DigitsFormat, draw_digit_grid
from diffkit.metrics.digits import digit_quality, train_digit_classifier


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.digits")
    p.add_argument("--gaussian", default=None, help="checkpoint of examples/configs/digits_gaussian.yaml")
    p.add_argument("--categorical", default=None, help="checkpoint of examples/configs/digits_categorical.yaml")
    p.add_argument("--num_steps", type=int, default=None, help="reverse steps (default: all T)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta for the Gaussian model (default: ancestral)")
    p.add_argument(
        "--sampler", default="ancestral", help="Gaussian model: ancestral | ddim | dpmpp_2m (default: ancestral)"
    )
    p.add_argument(
        "--clip_x0",
        type=float,
        default=None,
        help="Gaussian model: clamp x0 estimates to [-c, c] while sampling (default: the checkpoint's clip_x0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--img", default="docs/img")
    ns = p.parse_args(argv)
    dm = DigitsDataModule("categorical")
    train, test = dm.split_levels("train"), dm.split_levels("test")
    start = time.perf_counter()
    clf = train_digit_classifier(train, dm.split_targets("train"), seed=ns.seed)
    accuracy = float((clf(test).argmax(-1).numpy() == dm.split_targets("test")).mean())
    print(f"classifier: test accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s to train)")
    img = Path(ns.img)
    draw_digit_grid(test, img / "digits_real.png", "real digits (test split)")
    floor = digit_quality(clf, test, train)
    rows = [{"set": "real test split (floor)", **floor._asdict(), "fd_ratio": 1.0, "sample_s": 0.0, "step": "-"}]
    for kind, ckpt in (("gaussian", ns.gaussian), ("categorical", ns.categorical)):
        if ckpt is None:
            continue
        model = load_model(ckpt)
        if kind == "gaussian" and ns.clip_x0 is not None:
            model.process.clip_x0 = ns.clip_x0
        step = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["global_step"]
        gen = torch.Generator().manual_seed(ns.seed)
        start = time.perf_counter()
        eta = ns.eta if kind == "gaussian" else None
        sampler = ns.sampler if kind == "gaussian" else "ancestral"
        samples = model.sample(len(test), num_steps=ns.num_steps, generator=gen, eta=eta, sampler=sampler)
        seconds = time.perf_counter() - start
        levels = DigitsFormat(pixel_kind=kind).decode(samples)
        steps = ns.num_steps or model.process.num_steps
        label = f"{steps} steps" + ("" if eta is None else f", DDIM eta {eta:g}")
        label += "" if sampler == "ancestral" else f", {sampler}"
        clip = getattr(model.process, "clip_x0", None)
        label += "" if kind != "gaussian" or clip is None else f", x0 clipped to +-{clip:g}"
        variant = f"_{sampler}" if sampler != "ancestral" else ("" if eta is None else "_ddim")
        draw_digit_grid(levels, img / f"digits_{kind}{variant}.png", f"{kind} pixels: step {step}, {label}")
        scores = digit_quality(clf, levels, train)
        rows.append(
            {
                "set": f"{kind} ({label})",
                **scores._asdict(),
                "fd_ratio": scores.frechet_distance / floor.frechet_distance,
                "sample_s": seconds,
                "step": step,
            }
        )
    print("| set | training steps | FD | FD / floor | predictive entropy | class entropy | coverage | sampling s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['step']} | {r['frechet_distance']:.2f} | {r['fd_ratio']:.2f} | "
            f"{r['predictive_entropy']:.3f} | "
            f"{r['class_entropy']:.3f} | {r['coverage']} | {r['sample_s']:.0f} |"
        )
    return rows


if __name__ == "__main__":  # pragma: no cover
    main()
