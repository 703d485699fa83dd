"""The shipped example configs: list them, read one by name, resolve ``--config NAME``.

The configs live once, in the repository's ``examples/configs/`` (one YAML file per config,
subfolders allowed). A wheel ships that folder as the package data ``diffkit/_configs/``
(pyproject.toml maps the package ``diffkit._configs`` to ``examples/configs``); a clone or an
editable install reads ``examples/configs/`` next to the package. A config's name is its path
relative to that folder, without ``.yaml``: ``swiss_roll``, ``graphs/planar_cpu``.

    diffkit config                        # list the shipped configs
    diffkit config swiss_roll > my.yaml   # print one, to edit
    diffkit fit --config swiss_roll       # train from a shipped config by name (or a path)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

__all__ = ["config_dir", "config_names", "config_path", "read_config", "resolve_config", "resolve_config_args", "main"]

SUFFIX = ".yaml"
#: The long and short spellings of LightningCLI's config-file option.
CONFIG_FLAGS = ("--config", "-c")

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder holding the shipped configs.

    Returns:
        ``diffkit/_configs`` of an installed wheel, else the source tree's ``examples/configs``.

    Raises:
        FileNotFoundError: neither folder exists (a broken install).
    """
    candidates = (_PACKAGE_DIR / "_configs", _PACKAGE_DIR.parent / "examples" / "configs")
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"no shipped configs: looked in {', '.join(str(c) for c in candidates)}")


def config_names() -> list[str]:
    """Every shipped config's name (its path under ``config_dir`` without ``.yaml``), sorted."""
    root = config_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}"))


def _valid_names() -> str:
    return f"shipped configs: {', '.join(config_names())}"


def config_path(name: str) -> Path:
    """The file of the shipped config ``name``.

    Args:
        name: a name from ``config_names``, with or without ``.yaml`` (``graphs/planar_cpu``).

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: no shipped config has that name (the message lists the valid names).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, found {type(name).__name__}")
    stem = name.removesuffix(SUFFIX)
    if stem not in config_names():  # also keeps '..' and absolute paths out of the folder
        raise ValueError(f"name: {name!r} is not a shipped config; {_valid_names()}")
    return config_dir() / f"{stem}{SUFFIX}"


def read_config(name: str) -> str:
    """The YAML text of the shipped config ``name`` (see ``config_path``)."""
    return config_path(name).read_text(encoding="utf-8")


def _is_inline_yaml(value: str) -> bool:
    """LightningCLI's ``--config`` also takes the config itself as a YAML / JSON mapping string."""
    try:
        return isinstance(yaml.safe_load(value), dict)
    except yaml.YAMLError:
        return False


def resolve_config(value: str) -> str:
    """What ``--config value`` should read: an existing file as given, a shipped name as its file.

    Args:
        value: a path to a config file, a shipped config's name, or an inline YAML mapping
            (which LightningCLI parses itself and is returned unchanged).

    Returns:
        ``value`` if it is an existing file or inline YAML, else the shipped config's path.

    Raises:
        ValueError: ``value`` is neither an existing file nor a shipped config (the message says
            both and lists the shipped names).
    """
    if Path(value).is_file() or _is_inline_yaml(value):
        return value
    try:
        return str(config_path(value))
    except ValueError:
        raise ValueError(
            f"--config: {value!r} is neither an existing file nor a shipped config; {_valid_names()}"
        ) from None


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of every ``--config`` / ``-c`` (also ``--config=value``) resolved
    by ``resolve_config``; every other argument unchanged.

    Raises:
        ValueError: a config value is neither an existing file nor a shipped config.
    """
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in CONFIG_FLAGS and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg.removeprefix("--config="))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffkit config",
        description="List the shipped configs, or print one (redirect it into a file to edit it).",
    )
    p.add_argument("name", nargs="?", help="a shipped config's name, e.g. swiss_roll or graphs/planar_cpu")
    return p


def main(args: Sequence[str] | None = None) -> None:
    """``diffkit config``: list the shipped configs; ``diffkit config NAME``: print that config.

    Args:
        args: the arguments after ``config`` (default: ``sys.argv[2:]``).
    """
    parser = _parser()
    ns = parser.parse_args(sys.argv[2:] if args is None else list(args))
    if ns.name is None:
        print("\n".join(config_names()))
        return
    try:
        text = read_config(ns.name)
    except ValueError as err:
        parser.error(str(err))  # exits 2 with the message on stderr
    sys.stdout.write(text)
