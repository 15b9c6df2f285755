"""Run a benchmark's jobs: execute runs (optionally in parallel worker processes), store every
finished run, and skip runs already stored.

The training function is injectable: ``train_fn(spec) -> result dict`` with at least ``solved``
(bool); :func:`rnnguard.bench.training.train_run` is the real one.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from rnnguard.bench.effective import Job
from rnnguard.bench.grid import RunSpec
from rnnguard.bench.store import ResultStore
from rnnguard.bench.training import train_run
from rnnguard.utils.checks import positive_int
from rnnguard.utils.pool import WorkerPool

__all__ = ["TrainFn", "default_workers", "run_jobs"]

TrainFn = Callable[[RunSpec], dict[str, Any]]


def default_workers(device: str = "cpu") -> int:
    """One process per available core on CPU (at most 8); one on a GPU."""
    if device not in ("cpu",):
        try:
            import torch

            if device.startswith("cuda") or torch.cuda.is_available():
                return 1
        except ImportError:  # pragma: no cover
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class _RunLabel(logging.Filter):
    """Prefixes the library's log lines (e.g. the trainer's rollbacks) with the run they come from."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self.label}: {record.msg}"
        return True


def _safe_call(train_fn: TrainFn, spec: RunSpec) -> dict[str, Any]:
    t0 = time.time()
    tag = _RunLabel(spec.label)
    trainer_log = logging.getLogger("rnnguard.train.trainer")
    trainer_log.addFilter(tag)
    try:
        result = dict(train_fn(spec))
    except Exception as exc:  # recorded, shown in the report, never stored (a rerun retries it)
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
            "traceback": traceback.format_exc()[-2000:],
            "solved": False,
            "wall_time": time.time() - t0,
        }
    finally:
        trainer_log.removeFilter(tag)
    result.setdefault("status", "ok")
    result.setdefault("wall_time", time.time() - t0)
    return result


def run_jobs(
    jobs: Sequence[Job],
    store: ResultStore,
    train_fn: TrainFn = train_run,
    *,
    workers: int = 1,
    on_result: Callable[[RunSpec, dict[str, Any], bool], None] | None = None,
    pool: Any = None,
) -> dict[str, int]:
    """Drive ``jobs`` to completion; ``workers > 1`` runs independent runs in parallel processes.

    ``pool``: an unopened pool to run on instead (e.g. a :class:`~rnnguard.utils.ray_pool.RayPool`),
    with ``workers`` runs in flight at most. Stored runs are fed back without training; each
    finished run is stored before the next is scheduled. ``on_result(spec, result, cached)`` is
    called for every run. Returns counts.
    """
    positive_int("workers", workers)
    counts = {"trained": 0, "cached": 0, "errors": 0}
    if pool is None and workers > 1:
        pool = WorkerPool(workers, threads=max(1, default_workers() // workers))
    in_flight: dict[Any, tuple[Job, RunSpec]] = {}
    errored: set[str] = set()

    def finish(job: Job, spec: RunSpec, result: dict[str, Any]) -> None:
        if result.get("status") == "error":
            counts["errors"] += 1
            errored.add(spec.key())
            store.log(
                {
                    "event": "error",
                    "key": spec.key(),
                    "run": spec.label,
                    "error": result.get("error"),
                }
            )
        else:
            counts["trained"] += 1
            store.put(spec, result)
            store.log({"event": "finished", "key": spec.key(), "run": spec.label})
        job.feed(spec, result)
        if on_result:
            on_result(spec, result, False)

    with pool if pool is not None else contextlib.nullcontext():
        while True:
            progressed = True
            while progressed:  # feed cached results until every job waits for real training
                progressed = False
                flying = {s.key() for _, s in in_flight.values()}
                for job in jobs:
                    for spec in job.pending():
                        key = spec.key()
                        if key in flying or key in errored:
                            continue
                        cached = store.get(spec)
                        if cached is not None:
                            job.feed(spec, cached)
                            counts["cached"] += 1
                            if on_result:
                                on_result(spec, cached, True)
                            progressed = True
                            continue
                        if pool is None:
                            finish(job, spec, _safe_call(train_fn, spec))
                            progressed = True
                        elif len(in_flight) < workers:
                            store.log({"event": "started", "key": key, "run": spec.label})
                            in_flight[pool.submit(_safe_call, train_fn, spec)] = (job, spec)
                            flying.add(key)
            if not in_flight:
                break
            done, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                job, spec = in_flight.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # the worker process died
                    result = {"status": "error", "error": f"worker failed: {exc}", "solved": False}
                finish(job, spec, result)
    return counts
