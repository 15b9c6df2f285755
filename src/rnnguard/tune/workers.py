"""Run one study with one worker in this process or N local worker processes."""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

from rnnguard.tune.storage import FileLock, StorageSpec, open_storage, parse_storage
from rnnguard.tune.study import DEFAULT_HEARTBEAT_S, WorkerOutcome, run_worker, top_up
from rnnguard.utils.checks import positive_int
from rnnguard.utils.pool import WorkerPool


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker process needs; picklable so it can cross a process boundary."""

    storage: str
    """Storage URL (see :func:`rnnguard.tune.storage.parse_storage`)."""
    study_name: str
    n_trials: int
    objective: Any
    """A picklable callable ``objective(trial) -> float``."""
    seed: int | None = None
    """Sampler seed, mixed with the worker index so workers do not propose the same points."""
    worker_index: int = 0
    heartbeat: float = DEFAULT_HEARTBEAT_S
    stale_after: float | None = None
    pruner_startup_trials: int = 3
    """Trials that finish before the median pruner starts pruning."""
    pruner_warmup_steps: int = 0
    """Training steps of a trial before it may be pruned by the median rule."""
    threads: int | None = None
    """Torch threads per worker (``None``: leave as is)."""
    verbose: bool = True


def make_sampler(seed: int | None, worker_index: int = 0, offset: int = 0) -> Any:
    """TPE with the constant-liar heuristic, so parallel workers spread out.

    The seed is mixed with the worker index and ``offset`` (trials already in the study): a
    resumed search or a second worker with the same ``seed`` must not replay the same points.
    """
    import warnings

    import numpy as np
    import optuna

    mixed = None
    if seed is not None:
        mixed = int(np.random.SeedSequence([seed, worker_index, offset]).generate_state(1)[0])
    with warnings.catch_warnings():
        # ``group`` is marked experimental; it is what makes TPE handle conditional parameters.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=mixed,
            constant_liar=True,
            multivariate=True,
            group=True,
        )


def make_pruner(startup_trials: int = 3, warmup_steps: int = 0) -> Any:
    """Optuna's median pruner on the intermediate evaluations."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)


def load_study(job: WorkerJob, spec: StorageSpec | None = None) -> Any:
    """Open the (already created) study of ``job`` with this worker's sampler and pruner."""
    import optuna

    spec = spec or parse_storage(job.storage, ".")
    study = optuna.load_study(
        study_name=job.study_name,
        storage=open_storage(spec),
        pruner=make_pruner(job.pruner_startup_trials, job.pruner_warmup_steps),
    )
    offset = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(job.seed, job.worker_index, offset)
    return study


def _print_trial(job: WorkerJob) -> Any:
    def show(frozen: Any, state: str) -> None:
        if not job.verbose:
            return
        value = "" if frozen.value is None else f" value={frozen.value:.6g}"
        why = frozen.user_attrs.get("pruned_reason")
        extra = f" ({why})" if state == "pruned" and why else ""
        print(
            f"[worker {job.worker_index}] trial {frozen.number} {state}{value}{extra}",
            flush=True,
        )

    return show


def run_job(job: WorkerJob) -> WorkerOutcome:
    """Run one worker in this process until the study's tickets are used up."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if job.threads is not None:
        # Before torch is imported the variable is enough; importing torch here would cost
        # seconds per worker for objectives that never touch it.
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(job.threads)
    spec = parse_storage(job.storage, ".")
    study = load_study(job, spec)
    lock_path = spec.claim_lock_path
    return run_worker(
        study,
        job.objective,
        job.n_trials,
        heartbeat=job.heartbeat,
        stale_after=job.stale_after,
        on_trial_end=_print_trial(job),
        claim_lock=FileLock(lock_path) if lock_path else None,
    )


def run_jobs(job: WorkerJob, workers: int, pool: Any = None) -> list[int]:
    """Run ``workers`` worker processes on ``job``'s study; return their exit codes (0: fine).

    The processes come from :class:`~rnnguard.utils.pool.WorkerPool`: they die with this process
    and, stopped by Ctrl-C or SIGTERM, mark their running trial failed (resuming re-runs it).
    ``pool``: an unopened pool to run the workers on instead (e.g. a Ray cluster's).
    """
    positive_int("workers", workers)
    positive_int("trials", job.n_trials)
    if workers == 1 and pool is None:
        run_job(job)
        return [0]
    spec = parse_storage(job.storage, ".")
    lock_path = spec.claim_lock_path
    with FileLock(lock_path) if lock_path else nullcontext():
        # Issue the tickets before the workers start, so they do not race to add them (the
        # surplus would be cancelled, but would clutter the study).
        top_up(load_study(job, spec), job.n_trials)
    threads = job.threads or max(1, (os.cpu_count() or 1) // workers)
    codes: list[int] = []
    if pool is None:
        pool = WorkerPool(workers, threads=threads)
    with pool:
        futures = []
        for i in range(workers):
            futures.append(pool.submit(run_job, replace(job, worker_index=i, threads=threads)))
            time.sleep(0.05)  # stagger the first storage writes a little
        for fut in futures:
            try:
                fut.result()
            except Exception as exc:  # one worker's failure is reported, the others go on
                traceback.print_exception(exc)
                codes.append(1)
            else:
                codes.append(0)
    return codes
