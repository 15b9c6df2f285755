"""``run_benchmark``: plan a preset, run it resumably into a folder, and render the report."""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rnnguard.bench.grid import Preset, RunSpec, get_preset
from rnnguard.bench.machine import machine_info
from rnnguard.bench.plan import plan_preset
from rnnguard.bench.report import render_report
from rnnguard.bench.runner import TrainFn, default_workers, run_jobs
from rnnguard.bench.store import ResultStore
from rnnguard.bench.training import train_run
from rnnguard.errors import ConfigError
from rnnguard.utils.checks import positive_int
from rnnguard.utils.progress import progress as progress_bar

__all__ = ["run_benchmark"]

DEVICES = ("cpu", "cuda", "auto")


def _line(spec: RunSpec, result: dict[str, Any], cached: bool) -> str:
    if result.get("status") == "error":
        return f"  {spec.label:<40} FAILED: {result.get('error')}"
    tag = "cached" if cached else f"{result.get('wall_time', 0.0):6.1f}s"
    metric = result.get("metric")
    shown = f"{metric:.4f}" if isinstance(metric, float) else str(metric)
    state = "done" if spec.kind == "lm" else ("solved" if result.get("solved") else "unsolved")
    return f"  {spec.label:<40} {state:<8} {result.get('metric_name', 'metric')}={shown:<8} [{tag}]"


def _check_preset(store: ResultStore, preset: str) -> None:
    """A folder holds one preset's benchmark: its report would otherwise mix two of them."""
    bound = store.manifest().get("preset")
    if bound is not None and bound != preset:
        raise ConfigError(
            f"out folder {str(store.root)!r} holds a {bound!r} benchmark; resume it with --preset "
            f"{bound}, or give --out another folder for the {preset!r} one"
        )


def run_benchmark(
    preset: str | Preset = "quick",
    *,
    out: str | os.PathLike[str] | None = None,
    recipes: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    workers: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    text: str | os.PathLike[str] | None = None,
    device: str | None = None,
    train_fn: TrainFn = train_run,
    log: Callable[[str], None] | None = print,
    command: str | None = None,
    ray: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume) a benchmark preset into ``out`` and return the report summary.

    Finished runs already stored in ``out`` are reused; ``report.md``, ``report.html``,
    ``summary.json`` and ``plots/`` are written at the end. The summary's ``counts`` say how many
    runs were trained, reused and failed.

    ``ray``: run on a Ray cluster instead of local processes (``"local"``, ``"auto"`` or an
    address; see :class:`~rnnguard.utils.ray_pool.RayPool`), each run holding ``cpus_per_run``
    CPUs and ``gpus_per_run`` GPUs; ``workers`` then caps the runs in flight (default: as many as
    the cluster holds). ``progress``: a bar over the runs (default: when stderr is a terminal).
    """
    chosen = get_preset(preset) if isinstance(preset, str) else preset
    if not isinstance(chosen, Preset):
        raise TypeError(f"preset must be a preset name or Preset, got {type(preset).__name__}")
    if device is not None:
        if device not in DEVICES and not str(device).startswith("cuda:"):
            raise ConfigError(f"device must be one of {DEVICES} or 'cuda:N', got {device!r}")
        chosen = chosen.with_overrides(device=device)
    plan = plan_preset(chosen, recipes=recipes, tasks=tasks, data_dir=data_dir, text=text)
    pool = None
    if ray is not None:
        from rnnguard.utils.ray_pool import RayPool

        pool = RayPool(ray, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
        capacity = pool.capacity
        n_workers = capacity if workers is None else min(workers, capacity)
    else:
        n_workers = default_workers(chosen.device) if workers is None else workers
    positive_int("workers", n_workers)
    folder = out if out is not None else os.path.join("runs", chosen.name)
    emit = log or (lambda _msg: None)
    store = ResultStore(folder, warn=lambda msg: emit(f"  note: {msg}"))
    _check_preset(store, chosen.name)
    manifest = plan.to_manifest()
    manifest.update(
        command=command or "rnnguard " + " ".join(sys.argv[1:]),
        machine=machine_info(),
        workers=n_workers,
        started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    store.write_manifest(manifest)
    if plan.claim_jobs:
        runs = len({s.key() for job in plan.claim_jobs for s in job.specs})
        contents = f"{len(plan.claim_jobs)} claims ({runs} runs)"
    else:
        lm = f"{len(plan.lm_specs)} {plan.lm_task or 'language-model'} runs"
        contents = (
            f"{len(plan.recipes)} recipes, {len(plan.searches)} effective-length searches, {lm}"
        )
    where = f" on Ray at {ray}" if ray else ""
    emit(
        f"rnnguard bench: preset {chosen.name}, {contents}, {n_workers} worker(s){where}; "
        f"results in {folder}"
    )
    if plan.lm_note:
        emit(f"  note: {plan.lm_note}")
    errors: dict[str, dict[str, Any]] = {}

    # Searches stop early at the first unsolved length: the planned count is an upper bound.
    planned = sum(len(s.lengths) * len(s.seeds) for s in plan.searches)
    planned += len(plan.lm_specs) + len(plan.single_specs)
    t0 = time.time()
    with progress_bar(planned, f"bench {chosen.name}", unit="run", enabled=progress) as bar:

        def on_result(spec: RunSpec, result: dict[str, Any], cached: bool) -> None:
            if result.get("status") == "error":
                errors[spec.key()] = result
            with bar.external():
                emit(_line(spec, result, cached))
            bar.update(1)

        counts = run_jobs(
            plan.jobs, store, train_fn, workers=n_workers, on_result=on_result, pool=pool
        )
    manifest.update(
        wall_time=time.time() - t0,
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        counts=counts,
    )
    store.write_manifest(manifest)
    summary = render_report(folder, extra=errors)
    summary["counts"] = counts
    summary["out"] = str(folder)
    summary["wall_time"] = manifest["wall_time"]
    return summary
