"""fit() with a user's own module: tensor-only outputs train; unusable outputs are a clear TypeError."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from rnnguard.tasks import AddingTask
from rnnguard.train.config import OptimConfig, TrainConfig
from rnnguard.train.evaluation import evaluate
from rnnguard.train.model_call import split_output
from rnnguard.train.recipes import Recipe
from rnnguard.train.trainer import fit

CFG = TrainConfig(steps=3, batch_size=4, eval_every=0, eval_batches=1, progress=False)


class PlainGRU(nn.Module):
    """What a PyTorch user writes: ``forward(x)`` returns the per-step outputs only."""

    def __init__(self, input_size: int = 2, hidden: int = 8, out: int = 1) -> None:
        super().__init__()
        self.rnn = nn.GRU(input_size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # no state argument at all
        self.calls += 1
        return self.head(self.rnn(x)[0])


def test_tensor_only_model_trains_and_learns() -> None:
    torch.manual_seed(0)
    model = PlainGRU()
    before = [p.detach().clone() for p in model.parameters()]
    task = AddingTask(6)
    cfg = CFG.replace(steps=150, eval_every=150, batch_size=16, stop_when_solved=False)
    result = fit(model, task, cfg, recipe=Recipe(optimizer=OptimConfig(lr=1e-2)))
    assert result.steps == 150 and result.guard_stats["skipped"] == 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # Trained, not merely run: well under the constant-prediction baseline of 1/6.
    assert result.metrics["mse"] < 0.5 * task.baseline
    assert model.calls >= 150


class _Stream(AddingTask):
    stateful = True


def test_tensor_only_model_on_a_stateful_task_gets_no_state() -> None:
    model = PlainGRU()  # forward(x) would raise TypeError if a state were passed
    result = fit(model, _Stream(5), CFG)
    assert result.steps == 3 and math.isfinite(result.metrics["mse"])


class _StreamWithEval(_Stream):
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        x, y = self.batch(3, torch.Generator().manual_seed(0))
        out, state = model(x.to(device))  # a task's evaluate may rely on (outputs, state)
        assert state is None
        return {"mse": self.metric(out, y)}


def test_task_evaluate_sees_outputs_and_state_from_a_plain_model() -> None:
    result = fit(PlainGRU(), _StreamWithEval(5), CFG)
    assert set(result.metrics) == {"mse"} and math.isfinite(result.metrics["mse"])


def test_public_evaluate_accepts_a_plain_model() -> None:
    metrics = evaluate(PlainGRU(), AddingTask(5), batches=2, batch_size=3)
    assert set(metrics) == {"loss", "mse"} and metrics["loss"] == pytest.approx(metrics["mse"])


class _Returns(nn.Module):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.make = make

    def forward(self, x: torch.Tensor) -> Any:
        return self.make(self.lin(x))


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda y: {"logits": y}, ["tensor (batch, time, outputs)", "got dict"]),
        (lambda y: (y, None, None), ["tuple of 3 items"]),
        (lambda y: [y], ["list of 1 items"]),
        (lambda y: ([y], None), ["first item is list"]),
        (lambda y: y[:, -1], ["shape", "(4, 5, 1)", "got (4, 1)"]),
        (lambda y: y.repeat(1, 1, 3), ["(4, 5, 1)", "got (4, 5, 3)"]),
        (lambda y: y[:, :-1], ["got (4, 4, 1)"]),
    ],
)
def test_unusable_model_output_is_a_clear_type_error(make: Any, words: list[str]) -> None:
    with pytest.raises(TypeError, match="model output must") as info:
        fit(_Returns(make), AddingTask(5), CFG)
    for word in words:
        assert word in str(info.value)


def test_split_output_accepts_both_conventions() -> None:
    x = torch.zeros(2, 3, 4)
    y = torch.ones(2, 3, 5)
    pred, state = split_output(y, x, 5)
    assert pred is y and state is None
    h = torch.zeros(1, 2, 7)
    pred, state = split_output((y, h), x, 5)
    assert pred is y and state is h


class _ReturnsHidden(PlainGRU):
    """``forward(x)`` returning ``(outputs, h)``, e.g. for inspection, but taking no state back."""

    def forward(self, x: torch.Tensor) -> Any:  # type: ignore[override]
        self.calls += 1
        out, h = self.rnn(x)
        return self.head(out), h


def test_outputs_and_state_from_a_model_that_takes_no_state() -> None:
    model = _ReturnsHidden()
    result = fit(model, _Stream(5), CFG)
    assert result.steps == 3 and model.calls == 3 + CFG.eval_batches


def test_a_model_that_takes_a_state_gets_it_back() -> None:
    seen: list[Any] = []

    class Carries(PlainGRU):
        def forward(self, x: torch.Tensor, h: Any = None) -> Any:  # type: ignore[override]
            seen.append(h)
            out, h = self.rnn(x, h)
            return self.head(out), h

    fit(Carries(), _Stream(5), CFG)
    assert seen[0] is None and all(isinstance(h, torch.Tensor) for h in seen[1:3])
    assert not any(h.requires_grad for h in seen[1:3])  # detached between batches
