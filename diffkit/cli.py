"""The ``diffkit`` console script: Lightning's CLI (fit / validate / test) plus ``sample`` and
``evaluate-graphs``.

    diffkit fit --config examples/configs/swiss_roll.yaml
    diffkit fit --config examples/configs/swiss_roll.yaml --print_config
    diffkit sample --ckpt_path runs/swiss_roll/checkpoints/last.ckpt --num_samples 2000 --num_steps 100 --output out.pt
    diffkit sample --ckpt_path runs/eight_gaussians_cond/checkpoints/last.ckpt --cond 3 --guidance_scale 2.0
    # infilling (docs/conditioning.md):
    diffkit sample --ckpt_path runs/markov_infill/checkpoints/last.ckpt --known prefix.pt
    diffkit sample --ckpt_path runs/swiss_roll/checkpoints/last.ckpt --sampler dpmpp_2m --num_steps 20 --output out.pt
    diffkit evaluate-graphs --ckpt_path runs/graphs_planar_cpu/checkpoints/last.ckpt   (diffkit.graph_eval)
    diffkit config [NAME]    list the shipped configs / print one; ``--config NAME`` takes a name too (diffkit.configs)

Configs are YAML with ``class_path`` / ``init_args`` (omegaconf interpolation within a file), so
any process, denoiser or data module importable from the current directory, an installed
package, or a ``diffkit.plugins`` entry point plugs in by import path or short name.

Lightning's ``predict`` is not offered: sampling is ``diffkit sample`` (a checkpoint alone, no
data module). ``diffkit --help`` lists every subcommand: Lightning's, then ``COMMANDS`` (run
before Lightning is built, each with its own ``--help``).

This module defines no class that configs name (LightningCLI requires that of its own module).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

PLUGIN_GROUP = "diffkit.plugins"

__all__ = ["main", "load_plugins", "sample_from_checkpoint", "PLUGIN_GROUP"]


def load_plugins() -> dict[str, Any]:
    """Import every object registered under the ``diffkit.plugins`` entry-point group.

    Importing a plug-in's class before parsing lets configs name it by its short class name.

    Returns:
        entry-point name -> loaded object.
    """
    loaded = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        loaded[ep.name] = ep.load()
    return loaded


def _not_an_advert(record: logging.LogRecord) -> bool:
    """Logging filter: False for Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines."""
    return not str(record.msg).startswith("💡 Tip")


#: Loggers whose records Lightning's rank_zero_info (which prints the adverts) goes through.
_ADVERT_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _default_threads() -> None:
    """One torch intra-op thread unless ``OMP_NUM_THREADS`` says otherwise.

    The shipped models are small: on the shared 2-core machine we measured, one thread trained
    the shipped configs 11-17x faster than torch's default of one thread per core under load,
    and 0.73-3.0x as fast when the machine was nearly idle (docs/guide.md, "CPU threads"). Set
    ``OMP_NUM_THREADS=N`` to choose N yourself.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def _prepare() -> None:
    _default_threads()
    # Lightning 2.6 calls jsonargparse APIs deprecated in 4.49; the warnings are not the user's to fix.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    for name in _ADVERT_LOGGERS:
        logging.getLogger(name).addFilter(_not_an_advert)  # added once: the same function is not re-added
    # A console script does not put the working directory on sys.path; users' own modules
    # next to their configs must import by dotted path.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    import diffkit.data  # noqa: F401  (short names for the built-in classes)
    import diffkit.models  # noqa: F401
    import diffkit.processes  # noqa: F401

    load_plugins()


def _resumed_config_name(log_dir: str, filename: str, exists: Any) -> str:
    """``config-resumed-<n>.yaml`` (from ``config.yaml``): the first n >= 1 with no such file."""
    stem, dot, suffix = filename.rpartition(".")
    stem, suffix = (stem, f".{suffix}") if dot else (filename, "")
    n = 1
    while exists(os.path.join(log_dir, f"{stem}-resumed-{n}{suffix}")):
        n += 1
    return f"{stem}-resumed-{n}{suffix}"


def _cli_class():
    from lightning.fabric.utilities.cloud_io import get_filesystem
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    from diffkit.module import DiffusionModule

    class ResumeAwareSaveConfig(SaveConfigCallback):
        """Lightning's SaveConfigCallback (never overwrites), except that a resumed fit
        (``--ckpt_path`` given and found) keeps the run's ``config.yaml`` and saves its own config
        next to it as ``config-resumed-<n>.yaml``. A new run into a directory that already holds a
        ``config.yaml`` is still refused, so a previous run's config and checkpoints are safe."""

        def _resuming(self, trainer: Any) -> bool:
            # trainer.ckpt_path is only set after setup(); the parsed fit config has it already.
            ckpt_path = self.config.get("ckpt_path") if hasattr(self.config, "get") else None
            if ckpt_path is None:
                return False
            if ckpt_path == "last":  # resumes only if a last*.ckpt exists (else Lightning starts anew)
                finders = [getattr(cb, "_find_last_checkpoints", None) for cb in trainer.checkpoint_callbacks]
                return any(find is not None and find(trainer) for find in finders)
            return True

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if not self.already_saved and self.save_to_log_dir and stage == "fit" and self._resuming(trainer):
                log_dir = trainer.log_dir  # broadcasts the directory
                assert log_dir is not None
                name = None
                if trainer.is_global_zero:
                    fs = get_filesystem(log_dir)
                    if fs.isfile(os.path.join(log_dir, self.config_filename)):
                        name = _resumed_config_name(log_dir, self.config_filename, fs.isfile)
                name = trainer.strategy.broadcast(name)
                if name is not None:
                    self.config_filename = name
            super().setup(trainer, pl_module, stage)

    class DiffkitCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            """Lightning's subcommands but ``predict`` (diffkit samples with ``diffkit sample``)."""
            return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

        def _add_subcommands(self, parser: Any, **kwargs: Any) -> None:
            """Lightning's subcommands, then ``COMMANDS`` by name and description, for ``--help``
            (``main`` runs those before this parser is built)."""
            from jsonargparse import ArgumentParser

            super()._add_subcommands(parser, **kwargs)
            for name, (description, _) in COMMANDS.items():
                parser._subcommands_action.add_subcommand(
                    name, ArgumentParser(description=description), help=description
                )

        def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
            super().__init__(
                DiffusionModule,
                LightningDataModule,
                save_config_callback=ResumeAwareSaveConfig,
                subclass_mode_data=True,
                parser_kwargs={"parser_mode": "omegaconf"},
                save_config_kwargs={"overwrite": False},
                args=args,
                run=run,
            )

    return DiffkitCLI


def load_model(ckpt_path: str | Path, device: str = "cpu") -> Any:
    """The DiffusionModule of a checkpoint written by ``diffkit fit`` (its saved hyperparameters
    rebuild process and denoiser), on ``device``, in eval mode.

    Raises:
        FileNotFoundError: no file at ``ckpt_path``.
    """
    from diffkit.module import DiffusionModule

    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path: no checkpoint at {ckpt_path}")
    model = DiffusionModule.load_from_checkpoint(ckpt_path, map_location=device)
    model.eval()
    return model


def sample_from_checkpoint(
    ckpt_path: str | Path,
    num_samples: int = 1000,
    num_steps: int | None = None,
    eta: float | None = None,
    seed: int = 0,
    output: str | Path = "samples.pt",
    plot: str | Path | None = "",
    device: str = "cpu",
    progress: bool = True,
    image_shape: tuple[int, int, int] | None = None,
    cond: int | str | Path | None = None,
    guidance_scale: float = 0.0,
    known: str | Path | None = None,
    resample_rounds: int = 1,
    sampler: str = "ancestral",
) -> Any:
    """Load a checkpoint alone (its saved hyperparameters rebuild process and denoiser), sample,
    save the samples with ``torch.save`` and draw them next to the stored reference data.

    A run trained from a file data module (``diffkit.data.ArrayDataModule`` and friends, see
    docs/data.md) stored how to decode its samples: they are also written in the data's own format
    and units beside the picture (``output`` with the data's suffix: .npy, .txt, .csv, .g6, ...).

    Args:
        ckpt_path: a checkpoint written by ``diffkit fit``.
        num_samples: how many samples.
        num_steps: reverse steps (None: all T; fewer: strided).
        eta: DDIM's eta for Gaussian fields (None: ancestral).
        seed: seeds the sampler's generator.
        output: where to save ``{"samples": ..., "num_steps": ..., "seed": ...}``.
        plot: PNG path; "" means ``output`` with a .png suffix; None disables the picture.
        device: "cpu", "cuda", ...
        progress: show a progress bar over the steps.
        image_shape: (C, H, W) of flat image samples, drawn as a grid (see ``plot_samples``).
        cond: a class id for every sample, or the path of a ``torch.save``d Tensor (class ids (B,)
            or features (B, C)); None: unconditional.
        guidance_scale: classifier-free guidance w >= 0 (0: the plain conditional model).
        known: infilling: the path of a ``torch.save``d dict ``{"known": x, "known_mask": m}``
            (see :func:`diffkit.sample`); a batch of 1 is repeated ``num_samples`` times.
        resample_rounds: RePaint passes per jump for re-noised fields (1: none).
        sampler: "ancestral" | "ddim" | "dpmpp_2m" (the last two: Gaussian fields only).

    Returns:
        The samples (Tensor or dict of Tensors).
    """
    import torch

    from diffkit.plotting import plot_samples

    ckpt_path = Path(ckpt_path)
    model = load_model(ckpt_path, device)
    gen = torch.Generator(device).manual_seed(seed)
    infill = _load_known(known, num_samples) if known is not None else {}
    samples = model.sample(
        num_samples,
        num_steps=num_steps,
        generator=gen,
        eta=eta,
        progress=progress,
        sampler=sampler,
        cond=_load_cond(cond),
        guidance_scale=guidance_scale,
        resample_rounds=resample_rounds,
        **infill,
    )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "samples": samples,
            "num_steps": num_steps,
            "eta": eta,
            "sampler": sampler,
            "seed": seed,
            "checkpoint": str(ckpt_path),
            "cond": cond if not isinstance(cond, Path) else str(cond),
            "guidance_scale": guidance_scale,
        },
        output,
    )
    print(f"saved {num_samples} samples to {output}")
    fmt = _checkpoint_sample_format(ckpt_path)
    if fmt is not None:  # a file data module stored how to decode: samples in the data's own format too
        written = fmt.write(samples, _decoded_path(output, fmt.suffix))
        print(f"saved {num_samples} decoded samples to {written}")
    if plot is not None:
        png = output.with_suffix(".png") if plot == "" else Path(plot)
        title = f"{ckpt_path.name}: {sampler}, {len(model.process.sampling_grid(num_steps)) - 1} steps"
        if fmt is not None and fmt.draws_samples:
            fmt.plot(samples, png, title=title)
        else:
            plot_samples(
                samples,
                model.reference,
                png,
                title=title,
                image_shape=None if image_shape is None else (image_shape[0], image_shape[1], image_shape[2]),
            )
        print(f"saved picture to {png}")
    return samples


def _checkpoint_sample_format(ckpt_path: Path) -> Any:
    """The :class:`diffkit.formats.SampleFormat` a file data module stored in the checkpoint, or None."""
    import torch

    from diffkit.formats import sample_format_from_checkpoint

    return sample_format_from_checkpoint(torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True))


def _decoded_path(output: Path, suffix: str) -> Path:
    """``output`` with the data's suffix (``<stem>_decoded<suffix>`` if that is ``output`` itself)."""
    path = output.with_suffix(suffix)
    return output.with_name(f"{output.stem}_decoded{suffix}") if path == output else path


def _load_cond(cond: int | str | Path | None) -> Any:
    """An int class id as is; a path: the Tensor ``torch.save``d there."""
    if cond is None or isinstance(cond, int):
        return cond
    if isinstance(cond, str) and cond.lstrip("-").isdigit():
        return int(cond)
    import torch

    path = Path(cond)
    if not path.is_file():
        raise FileNotFoundError(f"cond: expected a class id or a .pt file holding a Tensor, found no file at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_known(path: str | Path, num_samples: int) -> dict[str, Any]:
    """``{"known", "known_mask"}`` from a ``torch.save``d dict; a batch of 1 is repeated to ``num_samples``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file does not hold both keys.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"known: no file at {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not {"known", "known_mask"} <= set(data):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"known: expected a file holding a dict with keys 'known' and 'known_mask', found {found} in {path}"
        )

    def repeat(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: repeat(v) for k, v in x.items()}
        return x.expand(num_samples, *x.shape[1:]) if isinstance(x, torch.Tensor) and x.shape[:1] == (1,) else x

    return {"known": repeat(data["known"]), "known_mask": repeat(data["known_mask"])}


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffkit sample", description="Sample from a checkpoint written by `diffkit fit`.")
    p.add_argument("--ckpt_path", required=True, help="checkpoint path (its hyperparameters rebuild the model)")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--num_steps", type=int, default=None, help="reverse steps; fewer than T strides (default: all T)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta for Gaussian fields (default: ancestral)")
    p.add_argument(
        "--sampler",
        default="ancestral",
        choices=["ancestral", "ddim", "dpmpp_2m"],
        help="ancestral (any process), or a deterministic Gaussian solver: ddim (eta = 0), dpmpp_2m (DPM-Solver++(2M))",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="samples.pt")
    p.add_argument("--plot", default="", help="PNG path (default: OUTPUT with .png)")
    p.add_argument("--no_plot", action="store_true")
    p.add_argument(
        "--image_shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("C", "H", "W"),
        help="draw flat (N, C*H*W) samples as a grid of C x H x W images (4-D samples always are)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument(
        "--cond",
        default=None,
        help="class id for every sample, or a .pt file with a Tensor of class ids (B,) or features (B, C)",
    )
    p.add_argument(
        "--guidance_scale",
        type=float,
        default=0.0,
        help="classifier-free guidance w >= 0 (default 0: the plain conditional model)",
    )
    p.add_argument(
        "--known", default=None, help='infilling: a .pt file with {"known": x, "known_mask": m} (docs/conditioning.md)'
    )
    p.add_argument(
        "--resample_rounds", type=int, default=1, help="RePaint passes per jump for re-noised fields (default 1: none)"
    )
    return p


def _sample(argv: list[str]) -> None:
    ns = _sample_parser().parse_args(argv)
    sample_from_checkpoint(
        ns.ckpt_path,
        ns.num_samples,
        ns.num_steps,
        ns.eta,
        ns.seed,
        ns.output,
        None if ns.no_plot else ns.plot,
        ns.device,
        not ns.no_progress,
        image_shape=ns.image_shape,
        cond=ns.cond,
        guidance_scale=ns.guidance_scale,
        known=ns.known,
        resample_rounds=ns.resample_rounds,
        sampler=ns.sampler,
    )


def _evaluate_graphs(argv: list[str]) -> None:
    from diffkit.graph_eval import main as evaluate_graphs

    evaluate_graphs(argv)


def _config(argv: list[str]) -> None:
    from diffkit.configs import main as list_or_print_config

    list_or_print_config(argv)


#: diffkit's own subcommands: name -> (one-line description, runner of the remaining arguments).
COMMANDS: dict[str, tuple[str, Any]] = {
    "sample": ("Sample from a checkpoint written by `diffkit fit` and draw the samples beside the data.", _sample),
    "evaluate-graphs": (
        "Graph runs: sample, score against the test split (MMD ratios, V.U.N.) and draw.",
        _evaluate_graphs,
    ),
    "config": ("List the shipped configs, or print one by name (`diffkit config swiss_roll > my.yaml`).", _config),
}


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``diffkit`` console script.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``); tests pass them in-process.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] == "config":  # list / print the shipped configs: no Lightning import needed
        _config(argv[1:])
        return
    _prepare()
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]][1](argv[1:])
        return
    from diffkit.configs import resolve_config_args

    try:  # --config NAME: a shipped config's file (LightningCLI and DDP's re-launch read sys.argv)
        argv = resolve_config_args(argv)
    except ValueError as err:
        sys.exit(f"diffkit: error: {err}")
    if args is None:
        sys.argv[1:] = argv
    _cli_class()(args=None if args is None else argv)  # None: Lightning reads sys.argv itself


if __name__ == "__main__":  # pragma: no cover
    main()
