"""Study bookkeeping that keeps exactly N trials across workers, crashes and restarts.

Optuna's ``optimize(n_trials=...)`` counts per process, so two workers run 2N trials and a killed
worker leaves a trial ``RUNNING`` forever. Here the study itself holds the budget:

* **Tickets.** The study is topped up with ``WAITING`` trials until it holds N trials that are not
  ``FAIL``. A worker runs a trial only by moving a ticket ``WAITING -> RUNNING``, which the storage
  does atomically, so two workers never run the same ticket.
* **Ranks.** Workers that top up at the same moment may add too many tickets. A ticket is valid only
  while fewer than N non-failed trials precede it (by trial number); later ones are cancelled. Ranks
  only go down over time (trials are appended, and only ever move *to* ``FAIL``), so a trial that
  was valid when claimed stays valid, and at most N trials ever finish.
* **Reaping.** Each running trial records its host, process and a heartbeat. A ``RUNNING`` trial
  whose process is gone (same machine) or whose heartbeat is stale (any machine) is marked
  ``FAIL`` and its ticket is issued again, so a search killed with SIGKILL resumes and completes.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from rnnguard.errors import ConfigError
from rnnguard.utils.checks import positive_int

WORKER_ATTR = "rnnguard:worker"
HEARTBEAT_ATTR = "rnnguard:heartbeat"
FAIL_REASON_ATTR = "rnnguard:fail_reason"
META_ATTR = "rnnguard"
PRUNED_REASON_ATTR = "pruned_reason"
"""User attribute saying why a trial was pruned (``"median: ..."`` or ``"diverged: ..."``)."""
DIVERGED_ATTR = "diverged"
"""User attribute: True on trials pruned because training diverged."""

DEFAULT_HEARTBEAT_S = 30.0

Objective = Callable[[Any], float]


def _boot_id() -> str:
    # Distinguishes machines (and reboots) that share a host name; empty where unavailable.
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    # Containers sharing a host (and its host name) have their own pid numbering.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    # Fields of /proc/PID/stat after the command name (which may itself hold spaces and ")"):
    # [0] is the state, [19] the start time. OSError where the process or /proc is missing.
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def _process_start(pid: int) -> str:
    # Start time of a process (Linux), so a recycled pid is not mistaken for the original worker.
    try:
        return _stat_fields(pid)[19]
    except (OSError, IndexError):
        return ""


def worker_identity() -> dict[str, Any]:
    """Who runs a trial: host, boot id, pid namespace, pid and process start time."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pidns": _pid_namespace(),
        "pid": pid,
        "start": _process_start(pid),
    }


def _process_alive(pid: int, start: str) -> bool:
    if sys.platform == "win32":
        return True  # os.kill would terminate the process there; rely on the heartbeat instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    if sys.platform.startswith("linux"):
        try:
            fields = _stat_fields(pid)
        except OSError:
            return False
        if fields and fields[0] in ("Z", "X"):  # killed but not yet waited for
            return False
        if start and len(fields) > 19 and fields[19] != start:
            return False  # the pid now belongs to another process
    return True


@dataclass
class StudyCounts:
    """Trial counts by state (``cancelled`` are surplus tickets, ``failed`` excludes them)."""

    complete: int = 0
    pruned: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        """Trials that count towards the budget: completed or pruned."""
        return self.complete + self.pruned


def count_trials(study: Any) -> StudyCounts:
    """Count the study's trials by state."""
    from optuna.trial import TrialState

    counts = StudyCounts()
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts.complete += 1
        elif t.state == TrialState.PRUNED:
            counts.pruned += 1
        elif t.state == TrialState.RUNNING:
            counts.running += 1
        elif t.state == TrialState.WAITING:
            counts.waiting += 1
        elif t.system_attrs.get(FAIL_REASON_ATTR) == "surplus":
            counts.cancelled += 1
        else:
            counts.failed += 1
    return counts


def ensure_study(storage: Any, study_name: str, direction: str, meta: dict[str, Any]) -> Any:
    """Create or load ``study_name``; refuse one that was created for a different search."""
    import optuna

    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {study_name!r} was created to {study.direction.name.lower()} its objective, "
            f"got direction {direction!r}; use another --study name"
        )
    existing = study.user_attrs.get(META_ATTR)
    if existing is None:
        study.set_user_attr(META_ATTR, meta)
    else:
        diff = {k: (existing.get(k), v) for k, v in meta.items() if existing.get(k) != v}
        if diff:
            said = ", ".join(f"{k}={old!r} (got {new!r})" for k, (old, new) in sorted(diff.items()))
            raise ConfigError(
                f"study {study_name!r} was created for a different search: {said}; "
                "use another --study name or the original settings"
            )
    return study


def _ranked(trials: list[Any]) -> list[tuple[int, Any]]:
    """Trials with rank = 1 + number of non-failed trials before them (by trial number)."""
    from optuna.trial import TrialState

    ranked: list[tuple[int, Any]] = []
    alive = 0
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.FAIL:
            continue
        alive += 1
        ranked.append((alive, t))
    return ranked


def top_up(study: Any, n_trials: int) -> int:
    """Add ``WAITING`` tickets until the study holds ``n_trials`` non-failed trials."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    alive = sum(1 for t in trials if t.state != TrialState.FAIL)
    missing = max(0, n_trials - alive)
    for _ in range(missing):
        study.enqueue_trial({}, skip_if_exists=False)
    return missing


def _claim(storage: Any, trial_id: int) -> bool:
    """Atomically move a ticket ``WAITING -> RUNNING``; False if someone else got it."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.RUNNING))
    except UpdateFinishedTrialError:
        return False


def _fail(storage: Any, trial_id: int, reason: str) -> bool:
    """Mark a trial ``FAIL`` with ``reason``; False if it had already finished."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_system_attr(trial_id, FAIL_REASON_ATTR, reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    return True


def claim_ticket(study: Any, n_trials: int) -> Any | None:
    """Take the lowest valid ticket and return it as an ``optuna.Trial``; cancel surplus ones."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage  # Optuna exposes no public handle to it
    if hasattr(study, "_thread_local"):
        # Optuna caches the trial list per trial; the sampler must see other workers' results.
        study._thread_local.cached_all_trials = None
    for rank, t in _ranked(study.get_trials(deepcopy=False)):
        if t.state != TrialState.WAITING:
            continue
        if not _claim(storage, t._trial_id):
            continue
        if rank > n_trials:
            # Claimed first so a ticket another worker is already running is never cancelled.
            _fail(storage, t._trial_id, "surplus")
            continue
        return optuna.Trial(study, t._trial_id)
    return None


def reap_stale(study: Any, stale_after: float) -> list[int]:
    """Fail ``RUNNING`` trials whose worker is dead or silent; return their numbers."""
    from optuna.trial import TrialState

    storage = study._storage
    me = worker_identity()
    now = time.time()
    reaped: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.system_attrs.get(WORKER_ATTR) or {}
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()  # died before its first heartbeat
        reason = None
        same_machine = all(who.get(k, "") == me[k] for k in ("host", "boot", "pidns"))
        if (
            same_machine
            and who.get("pid")
            and not _process_alive(int(who["pid"]), who.get("start", ""))
        ):
            reason = f"worker process {who['pid']} on {who['host']} died"
        elif beat is not None and now - float(beat) > stale_after:
            reason = f"no heartbeat for {now - float(beat):.0f}s"
        if reason and _fail(storage, t._trial_id, f"stale: {reason}"):
            reaped.append(t.number)
    return reaped


class _Heartbeat:
    """Background thread stamping the running trial, so other workers can tell it is alive."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rnnguard-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        self._storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # finished, or a storage hiccup: retry at the next beat
                if self._stop.is_set():
                    return


@dataclass
class WorkerOutcome:
    """What one worker did."""

    ran: list[int] = field(default_factory=list)
    """Numbers of the trials this worker finished (complete or pruned)."""
    reaped: list[int] = field(default_factory=list)
    """Numbers of stale trials this worker marked failed."""


def run_trial(
    study: Any, trial: Any, objective: Objective, heartbeat: float = DEFAULT_HEARTBEAT_S
) -> str:
    """Run ``objective`` on a claimed trial and tell the study; return the final state name."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker_identity())
    try:
        with _Heartbeat(storage, trial._trial_id, heartbeat):
            try:
                value = float(objective(trial))
            except optuna.TrialPruned as exc:
                if PRUNED_REASON_ATTR not in trial.user_attrs:
                    trial.set_user_attr(PRUNED_REASON_ATTR, str(exc) or "median")
                study.tell(trial, state=TrialState.PRUNED)
                return "pruned"
            except KeyboardInterrupt:
                _fail(storage, trial._trial_id, "interrupted")
                raise
            except BaseException as exc:
                _fail(storage, trial._trial_id, f"error: {type(exc).__name__}: {exc}"[:500])
                raise
            if not math.isfinite(value):
                trial.set_user_attr(PRUNED_REASON_ATTR, f"diverged: objective value {value}")
                trial.set_user_attr(DIVERGED_ATTR, True)
                study.tell(trial, state=TrialState.PRUNED)
                return "pruned"
            study.tell(trial, value)
            return "complete"
    except UpdateFinishedTrialError:
        # Another worker judged this trial stale (missed heartbeats) and re-issued its ticket.
        return "reaped"


def run_worker(
    study: Any,
    objective: Objective,
    n_trials: int,
    *,
    heartbeat: float = DEFAULT_HEARTBEAT_S,
    stale_after: float | None = None,
    on_trial_end: Callable[[Any, str], None] | None = None,
    claim_lock: AbstractContextManager[Any] | None = None,
    wait: bool = True,
    poll: float = 1.0,
) -> WorkerOutcome:
    """Run tickets of ``study`` until none is left; several workers may share the study.

    With ``wait`` a worker without a ticket stays while other workers' trials run: if one of them
    dies its trial is re-issued and picked up here, so the search ends complete. ``claim_lock``
    (held while topping up and claiming) is for storages that cannot claim a ticket atomically on
    their own (SQLite).
    """
    positive_int("trials", n_trials)
    from optuna.trial import TrialState

    stale = stale_after if stale_after is not None else 4 * heartbeat
    outcome = WorkerOutcome()
    while True:
        with claim_lock if claim_lock is not None else nullcontext():
            outcome.reaped += reap_stale(study, stale)
            top_up(study, n_trials)
            trial = claim_ticket(study, n_trials)
        if trial is None:
            if not wait or not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return outcome
            time.sleep(poll)
            continue
        state = run_trial(study, trial, objective, heartbeat)
        if state in ("complete", "pruned"):
            outcome.ran.append(trial.number)
        if on_trial_end is not None:
            on_trial_end(study._storage.get_trial(trial._trial_id), state)
