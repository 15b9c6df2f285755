from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnguard.diagnose.verify import ArmResult, _statement, verify
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


def _arm(loss: float) -> ArmResult:
    return ArmResult("x", "r", [1], [loss], loss, "mse", loss, False, {}, {}, 0.0)


def test_statement_says_what_happened() -> None:
    assert "prescription did better" in _statement(_arm(1.0), _arm(0.5), 10)
    assert "original did better" in _statement(_arm(0.5), _arm(1.0), 10)
    assert "no clear difference" in _statement(_arm(1.0), _arm(0.98), 10)
    assert "finite" in _statement(_arm(float("nan")), _arm(1.0), 10)


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
