"""The ``rnnguard`` command line: argument parsing and command functions, thin on top of the library.

All command-line code lives in this package and nothing in the library imports it. Each module
here exposes ``register(subparsers)`` for one area (train, diagnose, bench, tune, speed); every
sub-command sets ``func(args) -> int``. Command modules keep heavy imports inside their handlers
so ``rnnguard --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from rnnguard import __version__
from rnnguard.cli.faults import describe
from rnnguard.errors import RnnguardError
from rnnguard.utils.pool import Terminated, raise_terminated

COMMAND_MODULES = (
    "rnnguard.cli.train",
    "rnnguard.cli.diagnose",
    "rnnguard.cli.bench",
    "rnnguard.cli.tune",
    "rnnguard.cli.speed",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnguard",
        description="Stable recurrent networks: train, diagnose, benchmark and tune.",
    )
    parser.add_argument("--version", action="version", version=f"rnnguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not present in this build
                continue
            raise
        module.register(sub)
    return parser


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM raises Terminated while a command runs, so its clean-up runs (as for Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rnnguard`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _sigterm_stops():
            return int(args.func(args) or 0)
    except Terminated:
        print(f"rnnguard {args.command}: stopped (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"rnnguard {args.command}: interrupted", file=sys.stderr)
        return 130
    except (RnnguardError, ValueError, TypeError) as exc:
        if os.environ.get("RNNGUARD_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"rnnguard {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (OSError, MemoryError, RuntimeError) as exc:
        line = describe(exc)
        if line is None or os.environ.get("RNNGUARD_DEBUG"):
            raise
        print(f"rnnguard {args.command}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
