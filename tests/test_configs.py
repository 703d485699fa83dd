"""Shipped configs by name (`diffkit config`, `diffkit fit --config NAME`) and the release files.

The CLI runs in-process (a Lightning import costs ~10 s per process). The wheel itself is built,
installed into a fresh environment and trained from by `.ci/run`, before the tests.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch
import yaml

import diffkit
from diffkit import configs
from diffkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "examples" / "configs"
# Every YAML file under examples/configs, named by its relative path without the suffix.
ON_DISK = sorted(p.relative_to(CONFIG_DIR).as_posix()[: -len(".yaml")] for p in CONFIG_DIR.rglob("*.yaml"))


def run_cli(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """The console script's path: ``sys.argv`` holds the arguments and ``main()`` gets none."""
    monkeypatch.setattr(sys, "argv", ["diffkit", *args])
    main()


def test_names_are_every_yaml_file_of_examples_configs() -> None:
    assert configs.config_dir() == CONFIG_DIR  # a clone reads the one copy in examples/configs
    assert configs.config_names() == ON_DISK
    assert {"swiss_roll", "graphs/planar_cpu"} <= set(ON_DISK)


@pytest.mark.parametrize("name", ["swiss_roll", "graphs/planar_cpu", "table.yaml"])
def test_read_config_is_the_file(name: str) -> None:
    assert configs.read_config(name) == (CONFIG_DIR / name).with_suffix(".yaml").read_text()


def test_diffkit_config_lists_the_names(monkeypatch, capsys) -> None:
    run_cli(monkeypatch, ["config"])
    assert capsys.readouterr().out.splitlines() == ON_DISK


@pytest.mark.parametrize("name", ["swiss_roll", "graphs/planar_cpu"])
def test_diffkit_config_name_prints_the_config(name: str, monkeypatch, capsys) -> None:
    run_cli(monkeypatch, ["config", name])
    out = capsys.readouterr().out
    assert out == (CONFIG_DIR / f"{name}.yaml").read_text()
    assert "class_path" in yaml.safe_load(out)["model"]["process"]


@pytest.mark.parametrize("name", ["no_such_config", "../pyproject", "graphs"])
def test_diffkit_config_unknown_name_lists_the_valid_names(name: str, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(monkeypatch, ["config", name])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{name!r} is not a shipped config" in err
    for valid in ON_DISK:
        assert valid in err


def test_config_path_rejects_a_non_str() -> None:
    with pytest.raises(TypeError, match="name: expected a str, found int"):
        configs.config_path(3)  # type: ignore[arg-type]


def test_resolve_config_args(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "swiss_roll"  # an existing file wins over the shipped name it shadows
    own.write_text("seed_everything: 1\n")
    shipped = str(CONFIG_DIR / "table.yaml")
    inline = "{trainer: {max_steps: 2}}"  # LightningCLI parses an inline mapping itself
    argv = ["fit", "-c", "table", "--config=graphs/sbm_cpu", "--config", "swiss_roll", "--config", inline, "--x=table"]
    assert configs.resolve_config_args(argv) == [
        "fit",
        "-c",
        shipped,
        f"--config={CONFIG_DIR / 'graphs' / 'sbm_cpu.yaml'}",
        "--config",
        "swiss_roll",
        "--config",
        inline,
        "--x=table",
    ]


@pytest.mark.parametrize("form", [["--config", "no_such_config"], ["--config=no_such_config"]])
def test_fit_config_neither_file_nor_name_says_both(form: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(monkeypatch, ["fit", *form])
    message = str(exit_info.value.code)
    assert message == (
        "diffkit: error: --config: 'no_such_config' is neither an existing file nor a shipped config; "
        "shipped configs: " + ", ".join(ON_DISK)
    )


def test_fit_trains_from_a_shipped_config_by_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the config writes to runs/swiss_roll/ under the cwd
    fast = [
        "--trainer.max_steps=3",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--model.num_eval_samples=16",
        "--data.init_args.num_train=96",
        "--data.init_args.num_val=32",
        "--data.init_args.batch_size=32",
    ]
    run_cli(monkeypatch, ["fit", "--config", "swiss_roll", *fast])
    assert sys.argv[2:4] == ["--config", str(CONFIG_DIR / "swiss_roll.yaml")]  # what a DDP re-launch reads
    state = torch.load(tmp_path / "runs/swiss_roll/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    assert "val/loss" in (tmp_path / "runs/swiss_roll/logs/version_0/metrics.csv").read_text()
    saved = yaml.safe_load((tmp_path / "runs/swiss_roll/logs/version_0/config.yaml").read_text())
    shipped = yaml.safe_load((CONFIG_DIR / "swiss_roll.yaml").read_text())["model"]["parametrization"]
    other = yaml.safe_load((CONFIG_DIR / "swiss_roll_x0.yaml").read_text())["model"]["parametrization"]
    assert saved["model"]["parametrization"] == shipped != other  # swiss_roll.yaml's, not another config's


# ------------------------------------------------------------------------------ release files


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_packages_list_every_subpackage_and_config_folder() -> None:
    """pyproject lists packages (the configs package is mapped, so setuptools cannot find it):
    a new subpackage or config folder that is not listed would be missing from the wheel."""
    setuptools = pyproject()["tool"]["setuptools"]
    code = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "diffkit").rglob("__init__.py")}
    data = {"diffkit._configs"} | {
        "diffkit._configs." + ".".join(p.relative_to(CONFIG_DIR).parts) for p in CONFIG_DIR.rglob("*") if p.is_dir()
    }
    assert sorted(setuptools["packages"]) == sorted(code | data)
    assert setuptools["package-dir"] == {"diffkit._configs": "examples/configs"}
    assert setuptools["package-data"]["diffkit"] == ["py.typed"]
    assert (ROOT / "diffkit" / "py.typed").is_file()


def test_version_is_written_once() -> None:
    project = pyproject()["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "diffkit.__version__"}
    assert diffkit.__version__ == importlib.metadata.version("diffkit")
    assert f"## [{diffkit.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_license_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert pyproject()["project"]["license"] == "Apache-2.0"


def test_ci_checks_the_wheel_then_ends_with_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = (
        readme.split("Install the test extra and run the tests", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    )
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == command.strip()
    assert ci.index('"$tmp/venv/bin/diffkit" fit --config swiss_roll') < ci.index(command.strip())
