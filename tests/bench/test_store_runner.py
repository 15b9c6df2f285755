"""Result store and runner: keys, resume without redoing runs, errors, SIGKILL mid-grid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from rnnguard.bench.effective import LengthSearch, SingleRuns
from rnnguard.bench.grid import RunSpec, get_preset
from rnnguard.bench.runner import run_jobs
from rnnguard.bench.store import ResultStore
from rnnguard.errors import ConfigError


def spec(length: int = 10, seed: int = 0, **kw: Any) -> RunSpec:
    return RunSpec("lstm", "adding", length, seed, steps=kw.pop("steps", 100), batch_size=8, **kw)


def test_key_depends_on_recipe_task_length_seed_and_budget() -> None:
    base = spec()
    assert base.key() == spec().key()
    variants = [spec(20), spec(seed=1), spec(steps=101), spec(hidden_size=16),
                RunSpec("gru", "adding", 10, 0, steps=100, batch_size=8)]  # fmt: skip
    keys = {v.key() for v in variants} | {base.key()}
    assert len(keys) == len(variants) + 1
    assert RunSpec.from_dict(base.to_dict()) == base
    here = spec(task_kwargs=(("data_dir", "/a"), ("eval_tokens", 10)))
    there = spec(task_kwargs=(("data_dir", "/b"), ("eval_tokens", 10)))
    assert here.key() == there.key() != spec(task_kwargs=(("eval_tokens", 11),)).key()


def test_bad_specs_and_presets() -> None:
    with pytest.raises(ConfigError, match="length"):
        spec(0)
    with pytest.raises(ConfigError, match="kind"):
        spec(kind="other")
    with pytest.raises(ConfigError, match="preset"):
        get_preset("huge")
    assert {"quick", "standard", "paper"} <= {
        get_preset(n).name for n in ("quick", "standard", "paper")
    }


def fake_trainer(solved_lengths: set[int], calls: list[str]) -> Any:
    def train(s: RunSpec) -> dict[str, Any]:
        calls.append(s.key())
        return {"solved": s.length in solved_lengths, "metric": 0.0, "wall_time": 0.01}

    return train


def make_jobs() -> list[Any]:
    search = LengthSearch("lstm", "adding", (10, 20, 50), lambda n, s: spec(n, s))
    return [search, SingleRuns([spec(7, kind="lm")])]


def test_store_and_resume_skip_finished_runs(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    calls: list[str] = []
    counts = run_jobs(make_jobs(), store, fake_trainer({10, 20}, calls))
    # seed 0: 10, 20, 50 (fails); seed 1 confirms 20; plus the single run.
    assert counts == {"trained": 5, "cached": 0, "errors": 0}
    assert len(list((tmp_path / "runs").glob("*.json"))) == 5
    stored = store.get(spec(20, 1))
    assert stored is not None and stored["solved"] and stored["spec"]["length"] == 20
    again: list[str] = []
    jobs = make_jobs()
    counts = run_jobs(jobs, store, fake_trainer(set(), again))
    assert again == [] and counts["cached"] == 5
    assert jobs[0].summary()["effective_length"] == 20  # from stored results only


def test_failed_runs_are_reported_not_stored(tmp_path: Path) -> None:
    def broken(s: RunSpec) -> dict[str, Any]:
        if s.length == 20:
            raise RuntimeError("boom")
        return {"solved": True}

    store = ResultStore(tmp_path)
    seen: list[tuple[str, Any]] = []
    counts = run_jobs(
        make_jobs(), store, broken, on_result=lambda s, r, c: seen.append((s.label, r))
    )
    assert counts["errors"] == 1
    assert not store.has(spec(20, 0))
    err = next(r for label, r in seen if "T=20/seed=0" in label)
    assert err["status"] == "error" and "boom" in err["error"]
    with pytest.raises(ConfigError, match="workers"):
        run_jobs(make_jobs(), store, broken, workers=0)


SCRIPT = """
import sys, time
from pathlib import Path
from rnnguard.bench.effective import LengthSearch
from rnnguard.bench.grid import RunSpec
from rnnguard.bench.runner import run_jobs
from rnnguard.bench.store import ResultStore

out, log = Path(sys.argv[1]), Path(sys.argv[2])
def make(n, s):
    return RunSpec("lstm", "adding", n, s, steps=5, batch_size=2)
def train(spec):
    with open(log, "a") as fh:
        fh.write(spec.key() + "\\n")
    time.sleep(float(sys.argv[3]))
    return {"solved": True, "metric": 0.0}
run_jobs([LengthSearch("lstm", "adding", tuple(range(2, 14)), make)], ResultStore(out), train)
"""


def test_sigkill_mid_grid_loses_at_most_the_run_in_progress(tmp_path: Path) -> None:
    script = tmp_path / "grid.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out, log = tmp_path / "out", tmp_path / "calls.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(log), "0.4"])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    started = log.read_text().splitlines()
    stored = {p.stem for p in (out / "runs").glob("*.json")}
    for p in (out / "runs").glob("*.json"):
        json.loads(p.read_text())  # every stored file is complete JSON
    assert len(stored) >= len(started) - 1  # only the run in flight may be lost
    assert stored <= set(started)
    # Rerun to completion: finished runs are not redone.
    log.write_text("")
    subprocess.run([sys.executable, str(script), str(out), str(log), "0"], check=True, timeout=60)
    redone = set(log.read_text().splitlines())
    assert not (redone & stored)
    assert len(list((out / "runs").glob("*.json"))) == 13  # 12 lengths + 1 confirmation


def test_trainer_log_lines_name_their_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    def noisy(s: RunSpec) -> dict[str, Any]:
        logging.getLogger("rnnguard.train.trainer").warning("rolled back")
        return {"solved": False}

    with caplog.at_level(logging.WARNING, logger="rnnguard.train.trainer"):
        run_jobs([SingleRuns([spec(7, kind="lm")])], ResultStore(tmp_path), noisy)
    assert "lstm/adding/T=7/seed=0: rolled back" in caplog.text
    assert not logging.getLogger("rnnguard.train.trainer").filters  # removed after the run
