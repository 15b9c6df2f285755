from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rnnguard.cli import main
from rnnguard.diagnose.history import read_history, summarize_history
from rnnguard.errors import ConfigError, DataError
from rnnguard.tasks.registry import create_task
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import get_recipe
from rnnguard.train.trainer import fit


def test_summary_counts_flags_and_events() -> None:
    records = [
        {"kind": "train", "step": 3, "grad_norm": 2.0, "clipped": True, "exploded": True},
        {"kind": "train", "step": 1, "grad_norm": 1.0},
        {"kind": "train", "step": 2, "grad_norm": float("nan"), "skipped": True, "exploded": True},
        {"kind": "eval", "step": 3, "loss": 0.5},
        {"kind": "event", "step": 3, "event": "rollback"},
        {"kind": "train", "step": 4, "grad_norm": 4.0},
    ]
    h = summarize_history(records)
    assert list(h.steps) == [1, 2, 3, 4]  # sorted by step
    assert h.exploded_steps == [2, 3] and h.skipped_steps == [2]
    assert h.explosion_rate == pytest.approx(2 / 4) and h.rollbacks == 1 and not h.diverged
    assert h.clipped_fraction == pytest.approx(0.25)
    q = h.norm_quantiles()
    assert q["median"] == 2.0 and q["max"] == 4.0  # the NaN norm is left out
    assert np.isnan(h.grad_norm[1])
    with pytest.raises(ConfigError, match="mappings"):
        summarize_history([1, 2])  # type: ignore[list-item]


def test_reads_a_real_training_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(
        steps=8, batch_size=4, eval_every=0, progress=False, stop_when_solved=False,
        out=str(tmp_path / "run"), checkpoint_every=0, tensorboard=False, log_every=2,
    )  # fmt: skip
    fit(get_recipe("vanilla").replace(hidden_size=4), create_task("adding", length=10), config)
    h = read_history(tmp_path / "run")
    assert h.total_steps == 8 and len(h.steps) >= 4
    assert np.all(np.isfinite(h.grad_norm)) and np.all(h.grad_norm > 0)
    # the doctor takes the log into account and records it
    rc = main(
        ["doctor", "--recipe", "vanilla", "--length", "10", "--hidden-size", "4", "--batch-size", "2",
         "--log", str(tmp_path / "run"), "--out", str(tmp_path / "doc")]
    )  # fmt: skip
    capsys.readouterr()
    assert rc == 0
    data = json.loads((tmp_path / "doc" / "diagnosis.json").read_text())
    assert data["history"]["total_steps"] == 8
    assert (tmp_path / "doc" / "plots" / "history.png").exists()


def test_missing_or_empty_logs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="training log not found"):
        read_history(tmp_path / "nothing")
    (tmp_path / "metrics.jsonl").write_text('{"kind": "eval", "step": 1}\n')
    with pytest.raises(DataError, match="no training records"):
        read_history(tmp_path)
