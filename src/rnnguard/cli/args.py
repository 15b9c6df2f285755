"""Command-line argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rnnguard.errors import ConfigError
from rnnguard.utils.yamlio import parse_number

#: Every top-level command: its one-line summary (listed by ``rnnguard --help``) and the paragraph
#: its own ``--help`` opens with. One table, so the commands read alike and none goes undescribed.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "train a recipe on a task with guarded steps, checkpoints and resume",
        "Train a recipe on a task. Under torchrun (--nproc_per_node=N) the same command runs "
        "DistributedDataParallel; rank 0 logs and checkpoints.",
    ),
    "list": ("list recipes, tasks, layers and init schemes", ""),
    "doctor": (
        "diagnose vanishing/exploding gradients and prescribe recipes",
        "Measure a model's gradient horizon, Jacobian spectrum, Lyapunov exponents and gate "
        "saturation on a task batch; print the verdict with its evidence and ranked "
        "prescriptions. --verify trains the original and the top prescription for the same "
        "short budget and reports both.",
    ),
    "figure": ("draw reference figures", "Draw reference figures."),
    "bench": (
        "long-range benchmark: effective length, BPC, explosions, horizons, report",
        "Run the benchmark grid of a preset, store every run in --out (resumable: rerunning "
        "skips finished runs), print the table and write report.md / report.html.",
    ),
    "report": ("re-render a benchmark folder's report", ""),
    "download": ("download a data set (checksums verified)", ""),
    "tune": (
        "search cells, init, clipping and optimiser settings for a task (Optuna)",
        "Search recipes for a task with Optuna: exactly --trials trials of --budget-steps steps, "
        "median pruning, diverging trials pruned at once. The study is stored in --storage "
        "(default: OUT/study.journal): run the same command again to resume, or start more "
        "workers on other machines with a shared --storage URL and the same --study. Writes "
        "OUT/best.yaml (run it with `rnnguard train --recipe-file`), trials.csv, plots and "
        "report.md. Needs `pip install 'rnnguard[tune]'`.",
    ),
    "speed": (
        "speed and memory of the rnnguard layers against torch.nn",
        "Time forward and forward+backward of the rnnguard layers (fused fast paths and the "
        "reference loop) against torch.nn.LSTM/GRU in the same run, with GFLOP/s, peak memory "
        "of a training step, T=100/1000 scaling and the speed targets.",
    ),
}


def add_command(subparsers: Any, name: str) -> argparse.ArgumentParser:
    """The parser of command ``name``, with its summary and description from :data:`COMMANDS`."""
    summary, description = COMMANDS[name]
    return subparsers.add_parser(name, help=summary, description=description or None)  # type: ignore[no-any-return]


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
