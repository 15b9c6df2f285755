"""Worker processes of ``rnnguard bench`` and ``rnnguard tune`` never outlive their parent.

Real commands in real subprocesses: once both workers run, the parent is killed (SIGKILL: no
clean-up at all) or stopped (SIGTERM), and the workers must be gone within a few seconds; a
stopped study keeps no trial marked running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc (Linux)"
)

RNNGUARD = [sys.executable, "-c", "import sys; from rnnguard.cli import main; sys.exit(main())"]
GONE_WITHIN_S = 10.0


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields after "pid (comm)"


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has exited


def _workers_of(parent: int) -> list[int]:
    """Live pool workers started by ``parent`` (spawned interpreters, not the resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or int(fields[1]) != parent or not _alive(int(entry.name)):
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in cmd:
            found.append(int(entry.name))
    return found


def _start(
    args: list[str], tmp_path: Path, busy: Callable[[], bool]
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start ``rnnguard ARGS``; return it and its two workers once ``busy()`` says they work."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RNNGUARD_NO_PROGRESS": "1"}
    log = open(tmp_path / "parent.log", "wb")  # noqa: SIM115 - kept open for the child
    proc = subprocess.Popen(RNNGUARD + args, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = _workers_of(proc.pid)
        # Busy, not merely started: a worker still importing torch exits only once it is done.
        if len(workers) >= 2 and busy():
            return proc, workers
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"the workers never started: {(tmp_path / 'parent.log').read_text()[-2000:]}")


def _assert_gone(workers: list[int]) -> None:
    deadline = time.time() + GONE_WITHIN_S
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent by {GONE_WITHIN_S} s"


def _stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)


BENCH = ["bench", "--preset", "quick", "--recipes", "lstm,gru", "--tasks", "adding",
         "--workers", "2"]  # fmt: skip


def _tune(out: Path) -> list[str]:
    return ["tune", "--task", "adding", "--length", "10", "--trials", "6", "--budget-steps",
            "400", "--hidden-size", "8", "--workers", "2", "--out", str(out), "--no-report",
            "--quiet"]  # fmt: skip


def _bench_busy(tmp_path: Path) -> Callable[[], bool]:
    # A run finished: both workers were handed a run when the pool started.
    return lambda: "s]" in (tmp_path / "parent.log").read_text()


def _tune_busy(out: Path) -> Callable[[], bool]:
    journal = out / "study.journal"
    # Both workers have claimed a trial (each stamps its identity on it).
    return lambda: journal.exists() and journal.read_text().count("rnnguard:worker") >= 2


def _no_trial_left_running(out: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    from rnnguard.tune.storage import open_storage, parse_storage

    storage = open_storage(parse_storage(None, out))
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        assert not running, f"trials {[t.number for t in running]} left marked running"


def test_bench_workers_die_when_the_parent_is_killed(tmp_path: Path) -> None:
    proc, workers = _start([*BENCH, "--out", str(tmp_path / "b")], tmp_path, _bench_busy(tmp_path))
    assert _stop(proc, signal.SIGKILL) == -signal.SIGKILL
    _assert_gone(workers)


def test_tune_workers_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    proc, workers = _start(_tune(tmp_path / "t"), tmp_path, _tune_busy(tmp_path / "t"))
    code = _stop(proc, signal.SIGTERM)
    _assert_gone(workers)
    assert code != 0
    assert "Traceback" not in (tmp_path / "parent.log").read_text()
    _no_trial_left_running(tmp_path / "t")


@pytest.mark.slow
def test_bench_workers_stop_on_sigterm(tmp_path: Path) -> None:
    proc, workers = _start([*BENCH, "--out", str(tmp_path / "b")], tmp_path, _bench_busy(tmp_path))
    assert _stop(proc, signal.SIGTERM) != 0
    _assert_gone(workers)
    for run in (tmp_path / "b" / "runs").glob("*.json"):
        assert run.read_text().strip().endswith("}")  # every stored run is whole


@pytest.mark.slow
def test_tune_workers_die_when_the_parent_is_killed(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    proc, workers = _start(_tune(tmp_path / "t"), tmp_path, _tune_busy(tmp_path / "t"))
    assert _stop(proc, signal.SIGKILL) == -signal.SIGKILL
    _assert_gone(workers)
    _no_trial_left_running(tmp_path / "t")  # the orphaned workers failed their trials on the way


@pytest.mark.slow  # two worker start-ups: torch imports twice
def test_pool_replaces_a_worker_that_died() -> None:
    """A worker killed under it (the kernel's OOM killer, say) fails its own call only."""
    from concurrent.futures.process import BrokenProcessPool

    from rnnguard.utils.pool import WorkerPool

    with WorkerPool(1) as pool:
        dead = pool.submit(os._exit, 3)
        with pytest.raises(BrokenProcessPool):
            dead.result(timeout=120)
        assert pool.submit(pow, 2, 5).result(timeout=120) == 32


@pytest.mark.slow
def test_tune_workers_stop_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    proc, workers = _start(_tune(tmp_path / "t"), tmp_path, _tune_busy(tmp_path / "t"))
    assert _stop(proc, signal.SIGINT) == 130
    _assert_gone(workers)
    assert "interrupted" in (tmp_path / "parent.log").read_text()
    _no_trial_left_running(tmp_path / "t")
