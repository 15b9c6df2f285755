"""The adding problem matches its definition and baseline."""

from __future__ import annotations

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.tasks import AddingTask, create_task


@pytest.mark.parametrize("length", [2, 7, 200])
def test_adding_batch_matches_definition(length: int) -> None:
    task = create_task("adding", length=length)
    x, y = task.batch(64, torch.Generator().manual_seed(3))
    assert x.shape == (64, length, 2) and y.shape == (64,)
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (marks.sum(1) == 2).all() and set(marks.unique().tolist()) <= {0.0, 1.0}
    half = length // 2
    assert (marks[:, :half].sum(1) == 1).all() and (marks[:, half:].sum(1) == 1).all()
    assert torch.allclose((values * marks).sum(1), y)


def test_adding_is_reproducible_from_generator() -> None:
    task = AddingTask(50)
    a = task.batch(8, torch.Generator().manual_seed(1))
    b = task.batch(8, torch.Generator().manual_seed(1))
    c = task.batch(8, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_adding_baseline_predicting_one_is_one_sixth() -> None:
    task = AddingTask(100)
    _x, y = task.batch(20000, torch.Generator().manual_seed(0))
    output = torch.ones(y.shape[0], 100, 1)
    assert task.metric(output, y) == pytest.approx(task.baseline, rel=0.03)
    assert task.baseline == pytest.approx(1 / 6)
    assert task.spec.output_mode == "last" and not task.spec.token_input


def test_adding_solved_and_scoring_uses_last_step() -> None:
    task = AddingTask(10)
    _x, y = task.batch(4, torch.Generator().manual_seed(0))
    out = torch.zeros(4, 10, 1)
    out[:, -1, 0] = y
    assert task.metric(out, y) == 0.0 and task.is_solved(0.0) and task.is_solved(0.01)
    assert not task.is_solved(0.02) and not task.is_solved(float("nan"))


@pytest.mark.parametrize("length", [1, 0, -5, 2.5, "10"])
def test_adding_bad_length(length: object) -> None:
    with pytest.raises(ConfigError, match="length"):
        AddingTask(length)  # type: ignore[arg-type]
