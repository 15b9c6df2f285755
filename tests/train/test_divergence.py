"""Divergence on evidence: clipped spikes are counted, not punished; loss and state blow-ups are."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

from rnnguard.tasks import AddingTask
from rnnguard.tasks.text import CharLMTask
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import Recipe, get_recipe
from rnnguard.train.trainer import fit
from rnnguard.utils.io import read_jsonl

from .helpers import PoisonTask

SMALL: dict[str, Any] = dict(progress=False, eval_batches=2, stop_when_solved=False)


class SpikyGradients(nn.Module):
    """A model whose gradients are multiplied by ``factor`` on the training steps in ``spikes``.

    The forward pass (and so the loss) is untouched: what reaches the guard is a finite gradient
    spike of the kind long IndRNN runs produce, which norm clipping turns into an ordinary step.
    """

    def __init__(self, inner: nn.Module, spikes: set[int], factor: float = 1e4) -> None:
        super().__init__()
        self.inner, self.spikes, self.factor, self.calls = inner, spikes, factor, 0

    def forward(self, x: torch.Tensor, state: Any = None) -> Any:
        out, new_state = self.inner(x, state)
        if self.training:
            self.calls += 1
            if self.calls in self.spikes:
                out.register_hook(lambda g: g * self.factor)
        return out, new_state


def _text_task() -> CharLMTask:
    text = "the cat sat on the mat. a dog ran in the fog. " * 40
    return CharLMTask(
        {"train": list(text), "valid": list(text[:400]), "test": list(text[:400])},
        sorted(set(text)),
        length=20,
        eval_streams=4,
    )


def _model(recipe: Recipe, task: Any) -> nn.Module:
    torch.manual_seed(0)
    return recipe.build_model(task.spec, length=task.length)


def test_bursts_of_clipped_finite_spikes_do_not_stop_a_learning_run() -> None:
    """Runs of clipped spikes longer than the patience, as in the T=1000 IndRNN run."""
    task = AddingTask(10)
    recipe = get_recipe("gru").replace(hidden_size=16, **{"optimizer.lr": 1e-2})
    bursts = {start + i for start in (40, 80, 120, 160) for i in range(7)}
    cfg = TrainConfig(steps=200, batch_size=16, eval_every=20, divergence_patience=5, **SMALL)
    result = fit(SpikyGradients(_model(recipe, task), bursts), task, cfg, recipe=recipe)
    assert result.guard_stats["exploded"] >= 20  # counted, as the benchmark reports them
    assert result.guard_stats["clipped"] >= len(bursts)
    assert not result.diverged and result.rollbacks == 0 and result.steps == 200
    assert result.metric < task.baseline  # it kept learning through the spikes


def test_a_loss_blow_up_rolls_back_lowers_the_rate_and_gives_up() -> None:
    """An unscaled residual RNN carrying its state across a text stream blows up in the forward
    pass while its clipped gradients look ordinary."""
    task = _text_task()
    plain = {"nonlinearity": "tanh", "residual": True, "residual_scale": None}  # the plain sum
    recipe = get_recipe("residual-rnn").replace(hidden_size=16, layer_kwargs=plain)
    cfg = TrainConfig(steps=80, batch_size=8, eval_every=20, max_rollbacks=2, **SMALL)
    result = fit(recipe, task, cfg)
    assert result.blowups >= 5
    causes = [r.get("cause") for r in result.history if r["kind"] == "event"]
    assert causes and set(causes) <= {"loss", "state"}
    assert result.rollbacks == 2 and result.diverged


def test_the_residual_rnn_recipe_stays_below_uniform_on_language_modelling() -> None:
    task = _text_task()
    recipe = get_recipe("residual-rnn").replace(hidden_size=16)
    result = fit(recipe, task, TrainConfig(steps=80, batch_size=8, eval_every=40, **SMALL))
    uniform = math.log2(task.spec.output_size)
    assert result.metrics["valid_bpc"] < uniform and result.metrics["test_bpc"] < uniform
    assert result.blowups == 0 and result.rollbacks == 0 and not result.diverged


def test_a_state_blow_up_with_an_ordinary_loss_is_caught() -> None:
    class StateBurst(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor, state: Any = None) -> Any:
            out, new_state = self.inner(x, state)
            if self.training:
                self.calls += 1
                if self.calls > 30:
                    new_state = torch.full((1, x.shape[0], 8), 1e6)
            return out, new_state

    task = AddingTask(6)
    recipe = get_recipe("gru").replace(hidden_size=8)
    cfg = TrainConfig(steps=40, batch_size=4, eval_every=0, divergence_patience=3, **SMALL)
    result = fit(StateBurst(_model(recipe, task)), task, cfg, recipe=recipe)
    events = [r for r in result.history if r["kind"] == "event"]
    assert events and events[0]["cause"] == "state" and events[0]["step"] == 33
    assert result.blowups >= 3


def test_monitor_verdicts() -> None:
    from rnnguard.train.divergence import DivergenceMonitor, state_rms

    mon = DivergenceMonitor(trivial_loss=1.0)
    assert mon.judge(float("nan")) == "nonfinite"
    assert mon.judge(1.0, nonfinite_grad=True) == "nonfinite"
    assert mon.judge(40.0) is None  # an awful start is no blow-up: there is no trend yet
    assert mon.judge(30.0) is None and mon.judge(20.0) is None  # coming down: learning
    assert mon.loss_limit() == 60.0  # twice the median of the healthy losses so far
    assert mon.judge(61.0) == "loss"  # above 5 x trivial and twice the run's level
    assert mon.judge(41.0) is None  # back up, but within the run's own level: noise
    for _ in range(50):
        assert mon.judge(3.0) is None  # the old highs leave the window
    assert mon.loss_limit() == 6.0  # 5 x trivial, 2 x 3.0
    assert mon.judge(5.5) is None and mon.judge(6.5) == "loss"  # a slow climb is caught
    for _ in range(60):
        assert mon.judge(0.05, rms=0.5) is None  # learned
    assert mon.loss_limit() == 1.0  # 10 x 0.05 is below the trivial loss: that is the bar
    assert mon.judge(0.9) is None and mon.judge(1.1) == "loss"  # lost it all at once
    unknown = DivergenceMonitor()
    assert unknown.judge(1e6) is None  # no trivial loss and no history: no reference yet
    for _ in range(5):
        unknown.judge(2.0)
    assert unknown.judge(19.0) is None and unknown.judge(21.0) == "loss"
    again = DivergenceMonitor(trivial_loss=1.0)
    again.load_state_dict(mon.state_dict())
    assert again.loss_limit() == mon.loss_limit()
    assert state_rms((torch.full((2, 3), 2.0), [torch.zeros(2, 3)])) == math.sqrt(2.0)
    assert state_rms(None) is None


#: The first 30 training losses of ``indrnn-relu`` on the adding problem at T=50 (width 128, batch
#: 50, seed 1), rounded: from 290 down to 1.1 in nine steps, back up to 27, then down again; the
#: run went on to solve the task (MSE 0.0076 at step 600) when nothing stopped it.
EARLY_SWING = [
    290.5, 262.9, 246.9, 195.9, 150.8, 94.4, 50.5, 13.2, 1.08, 8.93, 20.2, 27.3, 25.2, 16.3, 3.95,
    1.48, 4.37, 5.7, 3.76, 0.93, 4.36, 7.23, 7.36, 2.45, 0.75, 2.65, 1.56, 0.59, 0.48, 0.55,
]  # fmt: skip


def test_an_early_swing_on_the_way_down_is_not_a_blow_up() -> None:
    from rnnguard.train.divergence import DivergenceMonitor

    mon = DivergenceMonitor(trivial_loss=AddingTask(50).trivial_loss)
    streak = longest = 0
    for loss in EARLY_SWING:
        streak = streak + 1 if mon.judge(loss) else 0
        longest = max(longest, streak)
    assert longest < TrainConfig().divergence_patience  # no rollback
    for loss in EARLY_SWING[:10]:  # the same swing after a real learned level is one
        mon.judge(loss)
    assert mon.judge(EARLY_SWING[11]) == "loss"


class LateBlowUp(nn.Module):
    """Starts far above the trivial loss (a large output offset that training removes), then
    blows up on the training calls in ``burst``."""

    def __init__(self, inner: nn.Module, burst: range) -> None:
        super().__init__()
        self.inner, self.burst, self.calls = inner, burst, 0
        self.offset = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor, state: Any = None) -> Any:
        out, new_state = self.inner(x, state)
        out = out + self.offset
        if self.training:
            self.calls += 1
            if self.calls in self.burst:
                out = out * 1e3
        return out, new_state


def test_after_a_rollback_the_restored_weights_are_judged_by_their_own_losses() -> None:
    """Rolled back to the initial weights, whose losses are far above the abandoned run's: those
    losses are the restored run's start, not a second blow-up."""
    task = AddingTask(6)
    recipe = get_recipe("gru").replace(hidden_size=8, **{"optimizer.lr": 0.3})
    model = LateBlowUp(_model(recipe, task), burst=range(40, 46))
    cfg = TrainConfig(
        steps=80, batch_size=8, eval_every=0, divergence_patience=5, log_every=1, **SMALL
    )
    result = fit(model, task, cfg, recipe=recipe)
    events = [r for r in result.history if r["kind"] == "event"]
    assert [(e["event"], e["cause"]) for e in events] == [("rollback", "loss")]
    losses = [r["loss"] for r in result.history if r["kind"] == "train"]
    assert losses[0] > 20 * task.trivial_loss  # the initial weights' loss, met again after
    assert not result.diverged and result.rollbacks == 1


def test_a_nan_run_writes_strict_json_metrics(tmp_path: Any) -> None:
    cfg = TrainConfig(steps=6, batch_size=4, eval_every=3, log_every=1, out=str(tmp_path), **SMALL)
    fit(get_recipe("gru").replace(hidden_size=4), PoisonTask(5, bad={2, 3}), cfg)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    for line in lines:
        json.loads(line, parse_constant=lambda token: pytest.fail(f"bare {token} in the log"))
    losses = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert math.isnan(losses[1]) and math.isfinite(losses[0])
