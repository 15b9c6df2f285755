"""CLI: ``rnnguard bench``, ``rnnguard report`` and ``rnnguard download``."""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
import time
from typing import Any


def _names(text: str) -> list[str]:
    return [n for part in text.split(",") for n in [part.strip()] if n]


def register(subparsers: Any) -> None:
    """Add the benchmark's sub-commands to the ``rnnguard`` parser."""
    p = subparsers.add_parser(
        "bench",
        help="long-range benchmark: effective length, BPC, explosions, horizons, report",
        description=(
            "Run the benchmark grid of a preset, store every run in --out (resumable: rerunning "
            "skips finished runs), print the table and write report.md / report.html."
        ),
    )
    p.add_argument("--preset", default="quick", help="quick | standard | paper (default: quick)")
    p.add_argument("--recipes", nargs="+", type=_names, help="recipes to run (default: all)")
    p.add_argument(
        "--tasks",
        nargs="+",
        type=_names,
        help="subset of: adding copy ptb-char text (default: all)",
    )
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    p.add_argument("--out", help="output folder (default: runs/<preset>)")
    p.add_argument("--data-dir", help="folder with ptb-char/ (default: $RNNGUARD_DATA)")
    p.add_argument("--text", help="run the language model on this text file instead of PTB-char")
    p.add_argument("--device", help="cpu | cuda | auto (default: the preset's)")
    p.set_defaults(func=_bench)

    r = subparsers.add_parser("report", help="re-render a benchmark folder's report")
    r.add_argument("dir", help="folder written by `rnnguard bench`")
    r.set_defaults(func=_report)

    d = subparsers.add_parser("download", help="download a data set (checksums verified)")
    d.add_argument("dataset", help="ptb-char | mnist")
    d.add_argument("--data-dir", required=True, help="folder to put the data set in")
    d.set_defaults(func=_download)


def _flatten(values: list[list[str]] | None) -> list[str] | None:
    return [n for group in values for n in group] if values else None


def _bench(args: argparse.Namespace) -> int:
    from rnnguard.bench.grid import get_preset
    from rnnguard.bench.report import render_report, table_text
    from rnnguard.bench.runner import default_workers, machine_info, plan_preset, run_jobs
    from rnnguard.bench.store import ResultStore
    from rnnguard.errors import ConfigError

    preset = get_preset(args.preset)
    if args.device:
        if args.device not in ("cpu", "cuda", "auto") and not args.device.startswith("cuda:"):
            raise ConfigError(f"--device must be cpu, cuda, cuda:N or auto, got {args.device!r}")
        preset = preset.with_overrides(device=args.device)
    plan = plan_preset(
        preset,
        recipes=_flatten(args.recipes),
        tasks=_flatten(args.tasks),
        data_dir=args.data_dir,
        text=args.text,
    )
    workers = args.workers if args.workers is not None else default_workers(preset.device)
    if workers < 1:
        raise ConfigError(f"--workers must be a positive int, got {workers}")
    out = args.out or f"runs/{preset.name}"
    store = ResultStore(out)
    manifest = plan.to_manifest()
    manifest.update(
        command="rnnguard " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        machine=machine_info(),
        workers=workers,
        started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    store.write_manifest(manifest)
    print(
        f"rnnguard bench: preset {preset.name}, {len(plan.recipes)} recipes, "
        f"{len(plan.searches)} effective-length searches, "
        f"{len(plan.lm_runs.specs) if plan.lm_runs else 0} {plan.lm_task or 'language-model'} runs, "
        f"{workers} worker(s); results in {out}"
    )
    if plan.lm_note:
        print(f"  note: {plan.lm_note}")
    errors: dict[str, dict[str, Any]] = {}
    t0 = time.time()

    def on_result(spec: Any, result: dict[str, Any], cached: bool) -> None:
        if result.get("status") == "error":
            errors[spec.key()] = result
            print(f"  {spec.label:<40} FAILED: {result.get('error')}", flush=True)
            return
        tag = "cached" if cached else f"{result.get('wall_time', 0.0):6.1f}s"
        metric = result.get("metric")
        name = result.get("metric_name", "metric")
        state = "solved" if result.get("solved") else "unsolved"
        if spec.kind == "lm":
            state = "done"
        shown = f"{metric:.4f}" if isinstance(metric, float) else str(metric)
        print(f"  {spec.label:<40} {state:<8} {name}={shown:<8} [{tag}]", flush=True)

    counts = run_jobs(plan.jobs, store, workers=workers, on_result=on_result)
    manifest.update(
        wall_time=time.time() - t0,
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        counts=counts,
    )
    store.write_manifest(manifest)
    summary = render_report(out, extra=errors)
    print(table_text(summary))
    print(
        f"rnnguard bench: {counts['trained']} runs trained, {counts['cached']} reused, "
        f"{counts['errors']} failed in {time.time() - t0:.1f} s; report: {out}/report.md, "
        f"{out}/report.html"
    )
    return 1 if counts["errors"] else 0


def _report(args: argparse.Namespace) -> int:
    from rnnguard.bench.report import render_report, table_text

    summary = render_report(args.dir)
    print(table_text(summary))
    print(f"rnnguard report: wrote {args.dir}/report.md and {args.dir}/report.html")
    return 0


def _download(args: argparse.Namespace) -> int:
    from rnnguard.tasks.download import download

    folder = download(args.dataset, args.data_dir)
    print(f"rnnguard download: {args.dataset} verified in {folder}")
    return 0
