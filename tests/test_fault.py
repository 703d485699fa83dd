"""Killed runs lose nothing: a ``diffkit fit`` subprocess is SIGKILLed in the middle of an epoch
once a checkpoint exists, and ``diffkit fit ... --ckpt_path last`` (Lightning's "last": the newest
``last*.ckpt`` in the ModelCheckpoint's dirpath) picks it up and finishes at the same max_steps.

The killed run is a real subprocess (``python -c "from diffkit.cli import main; main([...])"``);
the resume runs in-process (a Lightning import costs ~10 s per process). A
``helpers.reliability.Throttle`` callback slows steps to >= 50 ms so the kill lands mid-run, and
``StepLog`` records the step each run starts from, which proves the second run resumed rather
than started over. The resumed run ends with exactly the weights of an uninterrupted run: the
shipped data modules' train loader resumes mid-epoch (``ResumableDataLoader``) and t / noise
come from DiffusionModule's checkpointed streams.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from diffkit.cli import main

TESTS = Path(__file__).resolve().parent
BATCHES_PER_EPOCH = 64  # num_train 1024 / batch_size 16
MAX_STEPS = 40
EVERY = 4


def config(root: Path, logger: bool = True, max_steps: int = MAX_STEPS) -> Path:
    cfg = {
        "seed_everything": 0,
        "model": {
            "process": {"class_path": "diffkit.processes.GaussianProcess", "init_args": {"num_steps": 20}},
            "denoiser": {
                "class_path": "diffkit.models.MLPDenoiser",
                "init_args": {"dim": 2, "num_steps": 20, "hidden": 32, "depth": 2},
            },
            "parametrization": "eps",
            "ema_decay": 0.9,
            "num_eval_samples": 0,
        },
        "data": {
            "class_path": "diffkit.data.Toy2DDataModule",
            "init_args": {
                "name": "swiss_roll",
                "num_train": 16 * BATCHES_PER_EPOCH,
                "num_val": 32,
                "batch_size": 16,
                "seed": 0,
            },
        },
        "trainer": {
            "max_steps": max_steps,
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(root),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(root / "logs")},
            }
            if logger
            else False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(root / "ckpts"),
                        "every_n_train_steps": EVERY,
                        "save_last": True,
                        "save_top_k": 0,
                    },
                },
                {"class_path": "helpers.reliability.Throttle", "init_args": {"seconds": 0.05}},
                {"class_path": "helpers.reliability.StepLog", "init_args": {"path": str(root / "steps.txt")}},
            ],
        },
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def starts(root: Path) -> list[int]:
    """The global_step at which each run's training started, in order."""
    return [int(line.split()[1]) for line in (root / "steps.txt").read_text().splitlines() if line.startswith("start")]


def fit_in_process(monkeypatch: pytest.MonkeyPatch, cwd: Path, args: list[str]) -> None:
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main(args)


def launch_and_kill(
    root: Path, cfg: Path, extra: tuple[str, ...] = (), min_step: int = 1, timeout: float = 180.0
) -> int:
    """Start ``diffkit fit --config cfg *extra`` in a subprocess, SIGKILL it as soon as last.ckpt
    holds a step >= ``min_step``, and return that checkpoint's global_step."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    code = f"from diffkit.cli import main; main({['fit', '--config', str(cfg), *extra]!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = root / "ckpts" / "last.ckpt"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the run ended (rc {proc.returncode}) before it was killed:\n{proc.stderr.read().decode()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no checkpoint after {timeout} s")
            if last.exists() and global_step(last) >= min_step:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return global_step(last)


def test_sigkill_mid_epoch_then_resume_with_ckpt_path_last(tmp_path, monkeypatch) -> None:
    cfg = config(tmp_path)
    killed_at = launch_and_kill(tmp_path, cfg)
    assert 0 < killed_at < MAX_STEPS and killed_at % BATCHES_PER_EPOCH != 0, "the kill must land mid-epoch"
    # Whatever the killed run did after its last checkpoint is lost; the checkpoint itself is whole.
    fit_in_process(monkeypatch, tmp_path, ["fit", "--config", str(cfg), "--ckpt_path", "last"])
    final = torch.load(tmp_path / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == MAX_STEPS
    assert starts(tmp_path) == [0, killed_at], "the second run must resume from the checkpoint, not start over"
    assert "current_model_state" in final and "averaging_state" in final  # the EMA survived the kill too
    # The train loader is resumable mid-epoch and t / noise come from the module's checkpointed
    # streams, so kill + resume trains exactly what one uninterrupted run trains.
    straight = tmp_path / "straight"
    straight.mkdir()
    fit_in_process(monkeypatch, straight, ["fit", "--config", str(config(straight))])
    ref = torch.load(straight / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ref["global_step"] == MAX_STEPS
    for key in ("current_model_state", "state_dict"):  # raw weights, EMA weights
        for name, value in ref[key].items():
            assert torch.equal(final[key][name], value), (
                f"{key}[{name!r}]: the resumed run differs from an uninterrupted one"
            )


def test_resume_a_run_without_logger_with_ckpt_path_last(tmp_path, monkeypatch) -> None:
    """Without a logger the config is saved in default_root_dir itself: a resume keeps the run's
    config.yaml and writes its own as config-resumed-<n>.yaml; a new run there is still refused."""
    cfg = config(tmp_path, logger=False, max_steps=EVERY)
    fit_in_process(monkeypatch, tmp_path, ["fit", "--config", str(cfg)])
    assert global_step(tmp_path / "ckpts" / "last.ckpt") == EVERY
    original = (tmp_path / "config.yaml").read_text()
    fit_in_process(
        monkeypatch, tmp_path, ["fit", "--config", str(cfg), "--ckpt_path", "last", f"--trainer.max_steps={2 * EVERY}"]
    )
    assert global_step(tmp_path / "ckpts" / "last.ckpt") == 2 * EVERY
    assert (tmp_path / "config.yaml").read_text() == original, "the run's own config.yaml must not change"
    resumed = yaml.safe_load((tmp_path / "config-resumed-1.yaml").read_text())
    assert resumed["ckpt_path"] == "last" and resumed["trainer"]["max_steps"] == 2 * EVERY
    # A new run (no ckpt_path) into the same directory would overwrite the run: refused.
    with pytest.raises(RuntimeError, match="config.yaml to NOT exist"):
        fit_in_process(monkeypatch, tmp_path, ["fit", "--config", str(cfg), f"--trainer.max_steps={3 * EVERY}"])
    assert global_step(tmp_path / "ckpts" / "last.ckpt") == 2 * EVERY


@pytest.mark.slow
def test_three_kills_in_a_row_then_finish(tmp_path, monkeypatch) -> None:
    """Kill, resume and kill again twice (each resume is a new subprocess with --ckpt_path last)."""
    cfg = config(tmp_path, max_steps=3 * MAX_STEPS)
    steps = [launch_and_kill(tmp_path, cfg)]
    for _ in range(2):
        steps.append(launch_and_kill(tmp_path, cfg, ("--ckpt_path", "last"), min_step=steps[-1] + EVERY))
    assert steps == sorted(steps) and len(set(steps)) == 3, steps
    fit_in_process(monkeypatch, tmp_path, ["fit", "--config", str(cfg), "--ckpt_path", "last"])
    assert global_step(tmp_path / "ckpts" / "last.ckpt") == 3 * MAX_STEPS
    assert starts(tmp_path)[1:] == steps
