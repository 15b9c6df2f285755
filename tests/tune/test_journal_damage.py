"""A study journal damaged by a kill mid-append resumes; one damaged elsewhere is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnguard.cli import main

pytest.importorskip("optuna")

TUNE = ["tune", "--task", "adding", "--length", "5", "--budget-steps", "3", "--hidden-size", "4",
        "--quiet", "--no-report"]  # fmt: skip


def test_torn_last_line_is_cut_and_the_study_resumes(tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert main([*TUNE, "--trials", "1", "--out", str(out)]) == 0
    journal = out / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(
        whole + whole.splitlines(keepends=True)[-1][:25]
    )  # a writer killed mid-line
    assert main([*TUNE, "--trials", "2", "--out", str(out)]) == 0
    assert journal.read_bytes().startswith(whole)  # everything complete before is kept
    assert (out / "best.yaml").is_file() and (out / "trials.csv").read_text().count("\n") == 3


def test_damaged_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "study.journal"
    journal.write_bytes(b"not json\n")
    assert main([*TUNE, "--trials", "1", "--storage", str(journal), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(journal) in err and "line 1" in err
    assert journal.read_bytes() == b"not json\n"  # left for the user to look at
