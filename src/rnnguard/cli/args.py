"""Command-line argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
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
