from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnguard.diagnose.verify import VERDICTS, ArmResult, decide, verify, verify_length
from rnnguard.errors import ConfigError
from rnnguard.tasks.registry import create_task
from rnnguard.train.recipes import get_recipe


class TensorOnly(nn.Module):
    """A user model returning only predictions, not (outputs, state)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(2, 4, batch_first=True)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def test_user_model_factory_against_a_recipe() -> None:
    task = create_task("adding", length=8)
    report = verify(
        TensorOnly, get_recipe("gru").replace(hidden_size=4), task, steps=3, batch_size=4
    )
    assert report.original.recipe == "user-model"  # trained plainly: Adam, no clipping
    assert report.prescribed.recipe == "gru"
    assert len(report.original.losses) == 3 and len(report.prescribed.losses) == 3
    assert math.isfinite(report.original.final_loss) and math.isfinite(report.prescribed.final_loss)
    assert report.original.horizon_before["max_distance"] == 7
    d = report.to_dict()
    assert d["steps"] == 3 and d["settings"]["original_recipe"]["guard"]["mode"] == "none"


def _arm(metric: float, solved_step: int | None = None, steps_run: int = 1000) -> ArmResult:
    return ArmResult(
        "x", "r", [1], [metric], metric, "mse", metric, solved_step is not None, {}, {}, 0.0,
        solved_step=solved_step, steps_run=steps_run,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("orig", "pres", "verdict"),
    [
        # the prescription solves, the original ran at least as far and did not: confirmed
        (_arm(0.16, None, 800), _arm(0.009, 800, 800), "cure confirmed"),
        # ... but the original was stopped by the clock before that step: undecided
        (_arm(0.16, None, 500), _arm(0.009, 800, 800), "inconclusive"),
        (_arm(0.009, 300, 300), _arm(0.16, None, 1000), "original better"),
        (_arm(0.009, 900, 900), _arm(0.009, 300, 300), "cure confirmed"),  # 3x sooner
        (_arm(0.009, 400, 400), _arm(0.009, 500, 500), "no difference"),
        (_arm(0.009, 200, 200), _arm(0.009, 500, 500), "original better"),
        (_arm(0.16, None, 1000), _arm(0.05, None, 1000), "inconclusive"),  # neither solved
        (_arm(float("nan")), _arm(float("nan")), "inconclusive"),
    ],
)
def test_decide_on_recorded_outcomes(orig: ArmResult, pres: ArmResult, verdict: str) -> None:
    assert decide(orig, pres, solvable=True)[0] == verdict


def test_decide_without_a_solved_threshold_compares_metrics() -> None:
    assert decide(_arm(2.0), _arm(1.5), solvable=False)[0] == "cure confirmed"
    assert decide(_arm(1.5), _arm(2.0), solvable=False)[0] == "original better"
    assert decide(_arm(2.0), _arm(1.98), solvable=False)[0] == "no difference"
    assert (
        decide(_arm(2.0, steps_run=10), _arm(1.0, steps_run=20), solvable=False)[0]
        == "inconclusive"
    )
    assert (
        decide(_arm(0.5), _arm(0.9), solvable=False, higher_is_better=True)[0] == "cure confirmed"
    )


def test_verify_length_goes_a_few_horizons_out() -> None:
    assert verify_length(8, 500) == 32
    assert verify_length(2, 500) == 20  # at least the minimum
    assert verify_length(300, 500) == 500  # never beyond the task's length
    assert verify_length(None, 500) == 500  # nothing vanishes: the task as asked
    assert verify_length(3, 10) == 10


def test_a_solvable_task_stops_when_solved_and_the_original_gets_as_many_steps() -> None:
    task = create_task("adding", length=5)
    report = verify("vanilla", get_recipe("gru").replace(hidden_size=16), task, steps=400,
                    eval_every=25, batch_size=16, time_budget=None, progress=False)  # fmt: skip
    pres, orig = report.prescribed, report.original
    assert orig.steps_run <= pres.steps_run == report.steps
    if pres.solved:  # it stopped at the evaluation that solved it
        assert pres.steps_run == pres.solved_step and pres.solved_step % 25 == 0
    assert report.verdict in VERDICTS and report.statement.startswith(report.verdict)
    assert pres.eval_curve and all(step % 25 == 0 for step, _ in pres.eval_curve)


def test_the_time_budget_stops_both_arms() -> None:
    task = create_task("adding", length=5)
    report = verify("vanilla", "gru", task, steps=100_000, time_budget=1.0, batch_size=8,
                    progress=False)  # fmt: skip
    assert report.prescribed.stopped_by_time and report.prescribed.steps_run < 100_000
    assert report.original.steps_run <= report.prescribed.steps_run


def test_bad_arguments() -> None:
    task = create_task("adding", length=8)
    with pytest.raises(ConfigError, match="steps"):
        verify("vanilla", "gru", task, steps=0)
    with pytest.raises(TypeError, match="task must be a Task"):
        verify("vanilla", "gru", "adding", steps=1)
    with pytest.raises(ConfigError, match=r"must return a torch\.nn\.Module"):
        verify(lambda: 3, "gru", task, steps=1)
    with pytest.raises(TypeError, match="prescribed must be"):
        verify("vanilla", 3, task, steps=1)
