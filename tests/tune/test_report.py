"""Reports: ranking, the printed table, and a study where nothing completed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rnnguard.tune.objective import ToyObjective
from rnnguard.tune.report import ranked_trials, top_trials_table, write_report
from rnnguard.tune.study import HEARTBEAT_ATTR, _Heartbeat, run_worker

optuna = pytest.importorskip("optuna")


def _study(direction: str, values: list[float]):  # type: ignore[no-untyped-def]
    study = optuna.create_study(direction=direction)
    for v in values:
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": v / 100, "layer": "gru"},
                distributions={
                    "lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
                    "layer": optuna.distributions.CategoricalDistribution(["gru", "lstm"]),
                },
                value=v,
            )
        )
    return study


@pytest.mark.parametrize(("direction", "order"), [("minimize", [1, 2, 0]), ("maximize", [0, 2, 1])])
def test_ranking_follows_the_direction(direction: str, order: list[int]) -> None:
    study = _study(direction, [3.0, 1.0, 2.0])
    assert [t.number for t in ranked_trials(study)] == order
    table = top_trials_table(study, top=2, metric="acc").splitlines()
    assert table[0].split() == ["rank", "trial", "acc", "layer", "lr", "secs"]
    assert [row.split()[1] for row in table[1:3]] == [str(n) for n in order[:2]]
    assert table[-1] == "3 trials: 3 complete"


def test_report_when_every_trial_was_pruned(tmp_path: Path) -> None:
    study = optuna.create_study()
    run_worker(study, ToyObjective(diverge_above=-10.0), 3)
    rep = write_report(study, tmp_path, plots=True)
    assert rep.best_recipe is None and rep.best_trial is None
    assert not (tmp_path / "best.yaml").exists()
    text = (tmp_path / "report.md").read_text()
    assert "No trial has completed yet." in text and text.count("diverged: non-finite loss") == 3
    assert "3 trials: 3 pruned (3 diverged)" in rep.table
    assert all(t.user_attrs["diverged"] is True for t in study.trials)
    # Plots that need completed trials are skipped with a reason instead of failing the report.
    assert set(rep.plots) | set(rep.skipped_plots) == {
        "optimization_history",
        "param_importances",
        "intermediate_values",
    }


def test_heartbeat_keeps_a_running_trial_fresh() -> None:
    study = optuna.create_study()
    trial = study.ask()
    storage = study._storage
    with _Heartbeat(storage, trial._trial_id, interval=0.05):
        first = storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]
        time.sleep(0.3)
        later = storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]
    assert later > first
