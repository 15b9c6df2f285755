"""The copy-memory task matches its definition and baseline."""

from __future__ import annotations

import math

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.tasks import CopyTask, create_task


@pytest.mark.parametrize("length", [1, 5, 100])
def test_copy_batch_matches_definition(length: int) -> None:
    task = create_task("copy", length=length)
    x, y = task.batch(16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, length + 20) and x.dtype == torch.long
    assert ((x[:, :10] >= 0) & (x[:, :10] <= 7)).all()
    assert (x[:, 10 : 10 + length - 1] == 8).all()
    assert (x[:, 10 + length - 1] == 9).all()
    assert (x[:, -10:] == 8).all()
    assert (y[:, : length + 10] == 8).all()
    assert torch.equal(y[:, -10:], x[:, :10])


@pytest.mark.parametrize("length,value", [(100, 0.173), (500, 0.040), (1000, 0.0204)])
def test_copy_baseline_values(length: int, value: float) -> None:
    assert CopyTask(length).baseline == pytest.approx(value, abs=5e-4)


def test_memoryless_strategy_scores_the_baseline() -> None:
    task = CopyTask(30)
    _x, y = task.batch(8, torch.Generator().manual_seed(0))
    logits = torch.full((8, 50, 10), -1e4)
    logits[:, :40, 8] = 0.0  # certain blank for T+10 steps
    logits[:, 40:, :8] = 0.0  # uniform over a0..a7 on the last 10
    assert task.metric(logits, y) == pytest.approx(task.baseline, rel=1e-5)
    assert not task.is_solved(task.metric(logits, y))
    perfect = torch.nn.functional.one_hot(y, 10).float() * 50
    assert task.is_solved(task.metric(perfect, y))
    assert task.extra_metrics(perfect, y)["recall_accuracy"] == 1.0
    assert task.solved_threshold == pytest.approx(0.1 * 10 * math.log(8) / 50)


def test_copy_bad_length() -> None:
    with pytest.raises(ConfigError, match="length"):
        CopyTask(0)
