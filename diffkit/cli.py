"""The ``diffkit`` console script: Lightning's CLI (fit / validate / test / predict) plus ``sample``.

    diffkit fit --config examples/configs/swiss_roll.yaml
    diffkit fit --config examples/configs/swiss_roll.yaml --print_config
    diffkit sample --ckpt_path runs/swiss_roll/checkpoints/last.ckpt --num_samples 2000 --num_steps 100 --output out.pt
    diffkit evaluate-graphs --ckpt_path runs/graphs_planar_cpu/checkpoints/last.ckpt   (diffkit.graph_eval)

Configs are YAML with ``class_path`` / ``init_args`` (omegaconf interpolation within a file), so
any process, denoiser or data module importable from the current directory, an installed
package, or a ``diffkit.plugins`` entry point plugs in by import path or short name.

This module defines no class that configs name (LightningCLI requires that of its own module).
"""

from __future__ import annotations

import argparse
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


def _prepare() -> None:
    # Lightning 2.6 calls jsonargparse APIs deprecated in 4.49; the warnings are not the user's to fix.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
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
) -> Any:
    """Load a checkpoint alone (its saved hyperparameters rebuild process and denoiser), sample,
    save the samples with ``torch.save`` and draw them next to the stored reference data.

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

    Returns:
        The samples (Tensor or dict of Tensors).
    """
    import torch

    from diffkit.plotting import plot_samples

    ckpt_path = Path(ckpt_path)
    model = load_model(ckpt_path, device)
    gen = torch.Generator(device).manual_seed(seed)
    samples = model.sample(num_samples, num_steps=num_steps, generator=gen, eta=eta, progress=progress)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"samples": samples, "num_steps": num_steps, "eta": eta, "seed": seed, "checkpoint": str(ckpt_path)}, output)
    print(f"saved {num_samples} samples to {output}")
    if plot is not None:
        png = output.with_suffix(".png") if plot == "" else Path(plot)
        plot_samples(samples, model.reference, png, title=f"{ckpt_path.name}: {len(model.process.sampling_grid(num_steps)) - 1} steps")
        print(f"saved picture to {png}")
    return samples


def _sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffkit sample", description="Sample from a checkpoint written by `diffkit fit`.")
    p.add_argument("--ckpt_path", required=True, help="checkpoint path (its hyperparameters rebuild the model)")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--num_steps", type=int, default=None, help="reverse steps; fewer than T strides (default: all T)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta for Gaussian fields (default: ancestral)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="samples.pt")
    p.add_argument("--plot", default="", help="PNG path (default: OUTPUT with .png)")
    p.add_argument("--no_plot", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``diffkit`` console script.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``); tests pass them in-process.
    """
    argv = sys.argv[1:] if args is None else list(args)
    _prepare()
    if argv and argv[0] == "sample":
        ns = _sample_parser().parse_args(argv[1:])
        sample_from_checkpoint(
            ns.ckpt_path, ns.num_samples, ns.num_steps, ns.eta, ns.seed, ns.output,
            None if ns.no_plot else ns.plot, ns.device, not ns.no_progress,
        )
        return
    if argv and argv[0] == "evaluate-graphs":  # graph runs: sample, score on the test split, draw
        from diffkit.graph_eval import main as evaluate_graphs

        evaluate_graphs(argv[1:])
        return
    _cli_class()(args=args)


if __name__ == "__main__":  # pragma: no cover
    main()
