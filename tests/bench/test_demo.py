"""The README's main job, shrunk: ``python3 dev.py demo`` runs ``rnnguard bench --preset quick``.

Here the same command goes through the CLI with the quick preset's grid cut to its first two
lengths per task and a few steps per run, on a machine without PTB-char (as a first-time user
has; the built-in synthlang language stands in): every recipe, the store, the table and the
report files. One worker: starting the process pool costs more than these runs (the pool has its
own test in test_report_cli.py, as does the full-budget run, marked slow).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from rnnguard.bench import grid
from rnnguard.bench.report import COLUMNS
from rnnguard.cli import main
from rnnguard.train.recipes import list_recipes

MEASURED = ("eff_adding", "eff_copy", "steps_to_solve", "bpc_valid", "bpc_test", "explosions",
            "horizon", "params", "wall")  # fmt: skip


@pytest.fixture
def small_quick(monkeypatch: pytest.MonkeyPatch) -> grid.Preset:
    quick = grid.get_preset("quick")
    small = dataclasses.replace(
        quick,
        length_tasks=tuple(
            dataclasses.replace(
                s, lengths=s.lengths[:2], steps=4, batch_size=4, eval_every=2, eval_batches=1
            )
            for s in quick.length_tasks
        ),
        lm=dataclasses.replace(
            quick.lm,
            length=20,
            steps=3,
            batch_size=2,
            train_tokens=2_000,
            eval_tokens=200,
            steps_per_epoch=2,
        ),
        hidden_size=8,
        lm_hidden_size=8,
    )
    monkeypatch.setitem(grid.PRESETS, "quick", small)
    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    return small


def test_demo_command_on_a_small_budget(
    small_quick: grid.Preset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "quick"
    assert main(["bench", "--preset", "quick", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"]
    rows = {r["recipe"]: r for r in summary["rows"]}
    assert set(rows) == set(list_recipes())
    for recipe, row in rows.items():
        for key in MEASURED:
            assert row[key] and not re.search(r"n/a|failed|incomplete|not run", row[key]), (
                recipe, key, row[key],
            )  # fmt: skip
        float(row["bpc_test"])  # the built-in language stands in for a missing PTB-char
        assert f"| {recipe} |" in printed
    assert {key for key, _ in COLUMNS} <= set(next(iter(rows.values())))
    stored = sorted(p.name for p in (out / "runs").glob("*.json"))
    trained = re.search(r"rnnguard bench: (\d+) runs trained, 0 reused, 0 failed", printed)
    assert trained and int(trained.group(1)) == len(stored) >= len(rows) * len(
        small_quick.length_tasks
    )
    assert sorted(r["key"].removeprefix("runs/") for r in summary["run_rows"]) == stored
    assert "synthlang" in (out / "report.md").read_text()
    assert (out / "report.html").stat().st_size > 10_000
