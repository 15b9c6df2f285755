"""CLI: ``rnnguard bench``, ``rnnguard report`` and ``rnnguard download``."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from rnnguard.cli.args import add_command, add_progress_arg, add_ray_args, whole


def _names(text: str) -> list[str]:
    return [n for part in text.split(",") for n in [part.strip()] if n]


def register(subparsers: Any) -> None:
    """Add the benchmark's sub-commands to the ``rnnguard`` parser."""
    p = add_command(subparsers, "bench")
    p.add_argument(
        "--preset", default="quick", help="quick | standard | reproduce | paper (default: quick)"
    )
    p.add_argument("--recipes", nargs="+", type=_names, help="recipes to run (default: all)")
    p.add_argument(
        "--tasks",
        nargs="+",
        type=_names,
        help="subset of: adding copy ptb-char text (default: all)",
    )
    p.add_argument("--workers", type=whole, help="parallel processes (default: one per core)")
    p.add_argument("--out", help="output folder (default: runs/<preset>)")
    p.add_argument("--data-dir", help="folder with ptb-char/ (default: $RNNGUARD_DATA)")
    p.add_argument("--text", help="run the language model on this text file instead of PTB-char")
    p.add_argument("--device", help="cpu | cuda | auto (default: the preset's)")
    add_ray_args(p, "benchmark's runs")
    add_progress_arg(p)
    p.set_defaults(func=_bench)

    r = add_command(subparsers, "report")
    r.add_argument("dir", help="folder written by `rnnguard bench`")
    r.set_defaults(func=_report)

    d = add_command(subparsers, "download")
    d.add_argument("dataset", help="ptb-char | mnist")
    d.add_argument("--data-dir", required=True, help="folder to put the data set in")
    d.set_defaults(func=_download)


def _flatten(values: list[list[str]] | None) -> list[str] | None:
    return [n for group in values for n in group] if values else None


def _bench(args: argparse.Namespace) -> int:
    from rnnguard.bench.benchmark import run_benchmark
    from rnnguard.bench.report import table_text

    summary = run_benchmark(
        args.preset,
        progress=args.progress,
        out=args.out,
        recipes=_flatten(args.recipes),
        tasks=_flatten(args.tasks),
        workers=args.workers,
        data_dir=args.data_dir,
        text=args.text,
        device=args.device,
        log=lambda msg: print(msg, flush=True),
        command="rnnguard " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        ray=args.ray,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
    )
    counts, out = summary["counts"], summary["out"]
    print(table_text(summary))
    print(
        f"rnnguard bench: {counts['trained']} runs trained, {counts['cached']} reused, "
        f"{counts['errors']} failed in {summary['wall_time']:.1f} s; report: {out}/report.md, "
        f"{out}/report.html"
    )
    return 1 if counts["errors"] else 0


def _report(args: argparse.Namespace) -> int:
    from rnnguard.bench.report import render_report, table_text

    summary = render_report(args.dir)
    for path, why in summary.get("unreadable", {}).items():
        print(f"rnnguard report: unreadable run file {path} ({why}) left out; rerun `rnnguard "
              "bench` on the folder to train it again", file=sys.stderr)  # fmt: skip
    print(table_text(summary))
    print(f"rnnguard report: wrote {args.dir}/report.md and {args.dir}/report.html")
    return 0


def _download(args: argparse.Namespace) -> int:
    from rnnguard.tasks.download import download

    folder = download(args.dataset, args.data_dir)
    print(f"rnnguard download: {args.dataset} verified in {folder}")
    return 0
