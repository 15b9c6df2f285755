"""``rnnguard speed``: the command line of :mod:`rnnguard.bench.speed`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from rnnguard.bench.speed import format_report, run_speed
from rnnguard.cli.args import add_command, add_progress_arg, check_out_file, whole

__all__ = ["main", "register"]


def register(subparsers: Any) -> None:
    """Add the ``speed`` sub-command to the ``rnnguard`` parser."""
    p = add_command(subparsers, "speed")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats: a smoke test")
    p.add_argument(
        "--sizes", nargs="+", default=None, help="small | large | tiny | gpu (default: small large)"
    )
    p.add_argument("--repeats", type=whole, default=None, help="timed repeats per row (default 5)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument(
        "--threads", type=whole, default=None, help="torch CPU threads (default: torch's)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-scaling", action="store_true", help="skip the T=100/1000 scaling rows")
    p.add_argument("--no-reference", action="store_true", help="skip the slow reference-loop rows")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument(
        "--amp",
        nargs="?",
        const="bf16",
        default=None,
        choices=["bf16", "fp16"],
        help="also run every row under torch.autocast in this dtype (default bf16): against "
        "torch.nn under the same autocast and against the layer's own float32 row",
    )
    p.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave malloc as it is (default: keep freed memory for reuse, so that page "
        "faults, which hit rows unevenly, do not decide the ratios)",
    )
    add_progress_arg(p)
    p.set_defaults(func=_cmd_speed)


def _cmd_speed(args: argparse.Namespace) -> int:
    import sys

    import torch

    from rnnguard.errors import ConfigError

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    sizes = tuple(args.sizes or (("tiny",) if args.quick else ("small", "large")))
    if args.repeats is not None and args.repeats < 1:
        raise ConfigError(f"--repeats must be a positive int, got {args.repeats}")
    check_out_file(args.json, "--json")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    scaling = None if args.no_scaling else ((10, 100) if args.quick else (100, 1000))
    report = run_speed(
        sizes,
        repeats,
        args.device,
        memory=not args.no_memory,
        scaling=scaling,
        reference=not args.no_reference,
        log=lambda s: print(s, file=sys.stderr, flush=True),
        keep_freed_memory=not args.default_allocator,
        amp=args.amp,
        progress=args.progress,
    )
    print(format_report(report))
    if args.json:
        from rnnguard.utils.io import atomic_write_json

        atomic_write_json(args.json, asdict(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``rnnguard speed`` with ``argv`` (for ``benchmarks/speed.py``)."""
    parser = argparse.ArgumentParser(prog="speed")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["speed", *(argv if argv is not None else [])])
    return int(args.func(args))
