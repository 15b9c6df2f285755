"""Progress bars on the long steps (bench, tune, doctor, speed): on for a terminal, off when
asked or when stderr is not a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from rnnguard.cli import main
from rnnguard.utils.progress import progress, progress_enabled


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch: pytest.MonkeyPatch) -> FakeTerminal:
    # In the test body: pytest puts its own capture back on sys.stderr between setup and call.
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.delenv("RNNGUARD_PROGRESS", raising=False)
    return term


def test_bars_follow_the_terminal_and_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    _terminal(monkeypatch)
    assert progress_enabled() and not progress_enabled(False)
    monkeypatch.setenv("RNNGUARD_PROGRESS", "0")
    assert not progress_enabled() and progress_enabled(True)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: off
    monkeypatch.delenv("RNNGUARD_PROGRESS")
    assert not progress_enabled()
    with progress(3, "quiet") as bar:
        bar.update(1)
        assert not bar.active


def test_doctor_shows_its_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _terminal(monkeypatch)
    argv = ["doctor", "--recipe", "gru", "--length", "8", "--hidden-size", "4", "--batch-size", "2"]
    assert main(argv) == 0
    assert "doctor: Jacobian spectra" in terminal.getvalue()
    terminal.truncate(0)
    assert main([*argv, "--no-progress"]) == 0
    assert "doctor:" not in terminal.getvalue()


def test_bench_counts_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    terminal = _terminal(monkeypatch)
    from rnnguard.bench.benchmark import run_benchmark

    def fake(spec: Any) -> dict[str, Any]:
        return {"solved": False, "metric": 1.0}

    run_benchmark("quick", out=tmp_path, recipes=["gru"], tasks=["adding"], workers=1,
                  train_fn=fake, log=None)  # fmt: skip
    shown = terminal.getvalue()
    assert "bench quick" in shown and "run" in shown


def test_tune_counts_trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    terminal = _terminal(monkeypatch)
    pytest.importorskip("optuna")
    argv = ["tune", "--task", "adding", "--length", "5", "--trials", "2", "--budget-steps", "3",
            "--hidden-size", "4", "--quiet", "--no-report", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert "tune adding-T5-default" in terminal.getvalue()


def test_speed_counts_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _terminal(monkeypatch)
    from rnnguard.bench.speed import run_speed

    run_speed(("tiny",), 1, "cpu", memory=False, scaling=None, reference=False,
              keep_freed_memory=False)  # fmt: skip
    assert "speed tiny" in terminal.getvalue()
