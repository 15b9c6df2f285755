"""Exactly-N trial accounting: several workers, surplus tickets, stale and killed workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rnnguard.errors import ConfigError
from rnnguard.tune.objective import ToyObjective
from rnnguard.tune.storage import open_storage, parse_storage
from rnnguard.tune.study import (
    FAIL_REASON_ATTR,
    HEARTBEAT_ATTR,
    PRUNED_REASON_ATTR,
    WORKER_ATTR,
    count_trials,
    ensure_study,
    reap_stale,
    run_worker,
)
from rnnguard.tune.workers import WorkerJob, load_study, run_jobs

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _setup(tmp_path: Path, name: str = "s", storage: str | None = None) -> tuple[str, object]:
    spec = parse_storage(storage.format(tmp=tmp_path) if storage else None, tmp_path)
    ensure_study(open_storage(spec), name, "minimize", {"task": "toy"})
    return spec.url, spec


def _study(url: str, name: str = "s"):
    return optuna.load_study(study_name=name, storage=open_storage(parse_storage(url, ".")))


def _assert_exact(study, n: int) -> None:
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # No duplicate: every finished trial is a distinct point, run once.
    points = {(round(t.params["x"], 12), t.params["kind"]) for t in finished}
    assert len(points) == n
    assert len({t.number for t in finished}) == n


@pytest.mark.parametrize(
    ("storage", "n"), [(None, 10), ("{tmp}/study.db", 6)], ids=["journal", "sqlite"]
)
def test_two_worker_processes_finish_exactly_n_trials(
    tmp_path: Path, storage: str | None, n: int
) -> None:
    url, _ = _setup(tmp_path, storage=storage)
    log = tmp_path / "calls.log"
    job = WorkerJob(
        storage=url,
        study_name="s",
        n_trials=n,
        objective=ToyObjective(
            steps=2,
            sleep=0.05,
            diverge_above=3.0,
            log=str(log),
            rendezvous=str(tmp_path / "meet"),
            processes=2,
        ),
        seed=1,
        verbose=False,
    )
    assert run_jobs(job, 2) == [0, 0]
    study = _study(url)
    _assert_exact(study, n)
    pids = {t.system_attrs[WORKER_ATTR]["pid"] for t in study.trials}
    assert len(pids) == 2 and os.getpid() not in pids  # both children took part
    assert count_trials(study).cancelled == 0  # tickets were issued before the workers started
    calls = log.read_text().split()
    assert sorted(calls) == sorted(set(calls)) and len(calls) == n  # no trial ran twice
    # A second run of the same search has nothing left to do.
    run_jobs(job, 2)
    _assert_exact(_study(url), n)
    assert len(_study(url).trials) == n


def test_diverging_toy_trial_is_pruned_and_marked(tmp_path: Path) -> None:
    url, _ = _setup(tmp_path)
    job = WorkerJob(url, "s", 6, ToyObjective(diverge_above=-10.0), seed=0, verbose=False)
    run_jobs(job, 1)
    study = _study(url)
    assert all(t.state == TrialState.PRUNED for t in study.trials)
    assert all(t.user_attrs[PRUNED_REASON_ATTR].startswith("diverged") for t in study.trials)


def test_surplus_tickets_are_cancelled_not_run(tmp_path: Path) -> None:
    url, _ = _setup(tmp_path)
    study = load_study(WorkerJob(url, "s", 4, None, seed=0))
    for _ in range(7):  # as if three racing workers had topped up at once
        study.enqueue_trial({}, skip_if_exists=False)
    run_worker(study, ToyObjective(steps=1), 4)
    counts = count_trials(_study(url))
    assert counts.finished == 4 and counts.cancelled == 3 and counts.failed == 0
    _assert_exact(_study(url), 4)


def test_more_trials_on_resume_extends_the_study(tmp_path: Path) -> None:
    url, _ = _setup(tmp_path)
    run_jobs(WorkerJob(url, "s", 3, ToyObjective(steps=1), seed=0, verbose=False), 1)
    run_jobs(WorkerJob(url, "s", 5, ToyObjective(steps=1), seed=0, verbose=False), 1)
    _assert_exact(_study(url), 5)


def test_silent_remote_trial_is_reaped_but_live_one_is_not(tmp_path: Path) -> None:
    url, _ = _setup(tmp_path)
    study = _study(url)
    storage = study._storage
    silent, live = study.ask(), study.ask()
    for trial, age in ((silent, 600.0), (live, 1.0)):
        storage.set_trial_system_attr(
            trial._trial_id, WORKER_ATTR, {"host": "elsewhere", "boot": "", "pid": 1}
        )
        storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - age)
    assert reap_stale(study, stale_after=120.0) == [silent.number]
    frozen = storage.get_trial(silent._trial_id)
    assert frozen.state == TrialState.FAIL
    assert "no heartbeat" in frozen.system_attrs[FAIL_REASON_ATTR]
    assert storage.get_trial(live._trial_id).state == TrialState.RUNNING


def test_sigkilled_search_resumes_and_completes(tmp_path: Path) -> None:
    url, _ = _setup(tmp_path)
    script = textwrap.dedent(
        f"""
        from rnnguard.tune.objective import ToyObjective
        from rnnguard.tune.workers import WorkerJob, run_jobs
        run_jobs(WorkerJob({url!r}, "s", 6, ToyObjective(steps=4, sleep=0.1), seed=0), 1)
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            c = count_trials(_study(url))
            if c.finished >= 2 and c.running == 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the search never got going")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = count_trials(_study(url))
    assert before.running == 1 and before.finished < 6  # killed mid-trial
    # Resume: the dead worker's trial is detected at once (same machine, process gone).
    run_jobs(WorkerJob(url, "s", 6, ToyObjective(steps=1), seed=0, verbose=False), 1)
    study = _study(url)
    _assert_exact(study, 6)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    assert f"worker process {proc.pid}" in failed[0].system_attrs[FAIL_REASON_ATTR]


def test_bad_arguments(tmp_path: Path) -> None:
    url, spec = _setup(tmp_path)
    with pytest.raises(ConfigError, match="different search: task='toy'"):
        ensure_study(open_storage(spec), "s", "minimize", {"task": "adding"})
    with pytest.raises(ConfigError, match="created to minimize"):
        ensure_study(open_storage(spec), "s", "maximize", {"task": "toy"})
    with pytest.raises(ConfigError, match="direction"):
        ensure_study(open_storage(spec), "t", "up", {})
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match=f"trials must be a positive int, got {bad!r}"):
            run_worker(_study(url), ToyObjective(), bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="workers must be a positive int, got 0"):
        run_jobs(WorkerJob(url, "s", 1, ToyObjective()), 0)
    with pytest.raises(ConfigError, match="trials must be a positive int, got 0"):
        run_jobs(WorkerJob(url, "s", 0, ToyObjective()), 2)


class _Boom:
    def __call__(self, trial):  # type: ignore[no-untyped-def]
        trial.suggest_float("x", 0.0, 1.0)
        raise RuntimeError("boom")


def test_objective_error_fails_the_trial_and_a_rerun_replaces_it(tmp_path: Path) -> None:
    url, _ = _setup(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        run_worker(_study(url), _Boom(), 3)
    failed = [t for t in _study(url).trials if t.state == TrialState.FAIL]
    assert [t.system_attrs[FAIL_REASON_ATTR] for t in failed] == ["error: RuntimeError: boom"]
    run_worker(load_study(WorkerJob(url, "s", 3, None, seed=0)), ToyObjective(steps=1), 3)
    counts = count_trials(_study(url))
    assert (counts.finished, counts.failed, counts.waiting) == (3, 1, 0)
