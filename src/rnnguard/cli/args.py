"""Command-line argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rnnguard.errors import ConfigError
from rnnguard.utils.yamlio import parse_number


def whole(text: str) -> int:
    """Argparse type for counts and seeds: ``1000``, ``1_000`` and ``1e3`` are all 1000."""
    try:
        value = parse_number(text)
    except ValueError:
        value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return value


def number(text: str) -> float:
    """argparse type: a finite number written any usual way (``0.5``, ``2``, ``1e-3``)."""
    import math

    try:
        value = parse_number(text)
    except ValueError:
        value = None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return float(value)


def add_ray_args(parser: argparse.ArgumentParser, what: str) -> None:
    """``--ray [ADDRESS]`` with the per-run resources, for commands that can use a Ray cluster."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help=f"run the {what} on a Ray cluster: 'auto' (this machine's cluster, the default "
        "when the flag has no value), 'local' (a private instance here) or HOST:PORT",
    )
    parser.add_argument(
        "--cpus-per-run", type=number, default=1.0, help="CPUs each run holds on Ray (default 1)"
    )
    parser.add_argument(
        "--gpus-per-run", type=number, default=0.0, help="GPUs each run holds on Ray (default 0)"
    )


def check_out_folder(path: str | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that names an existing file."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} must be a folder, got existing file {path!r}")


def check_out_file(path: str | None, flag: str) -> None:
    """Refuse, before any work, an output file that names an existing folder."""
    if path is not None and os.path.isdir(path):
        raise ConfigError(f"{flag} must be a file path, got folder {path!r}")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: a bar when stderr is a terminal)."""
    parser.add_argument(
        "--progress", dest="progress", action="store_true", default=None,
        help="force the progress bar on (default: on when stderr is a terminal)",
    )  # fmt: skip
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )


def parse_pairs(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings given to ``flag`` as a dict; values read as YAML scalars (numbers such as ``3e-3``, booleans)."""
    import yaml

    from rnnguard.utils.yamlio import load_yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = load_yaml(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def add_task_arg(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--task-arg KEY=VALUE`` option (read back with :func:`task_args`)."""
    parser.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra task argument (repeatable), e.g. --task-arg data_dir=DIR",
    )


def task_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--task-arg`` values as task keyword arguments."""
    return parse_pairs(args.task_arg, "--task-arg")
