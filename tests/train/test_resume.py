"""Resume: the schedule under a changed budget, the divergence streak, the rollback target, the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.tasks import AddingTask
from rnnguard.train.callbacks import Callback
from rnnguard.train.checkpoint import checkpoint_paths, load_checkpoint
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import Recipe, get_recipe
from rnnguard.train.trainer import fit
from rnnguard.utils.io import read_jsonl

from .helpers import Crash, PoisonStream

BASE = TrainConfig(
    batch_size=4,
    eval_every=0,
    eval_batches=1,
    log_every=1,
    progress=False,
    stop_when_solved=False,
)


def _recipe(**schedule: Any) -> Recipe:
    return get_recipe("gru").replace(hidden_size=8, schedule=schedule)


def _lrs(out: Path) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"}


def test_a_longer_budget_on_resume_follows_the_longer_curve(tmp_path: Path) -> None:
    recipe = _recipe(name="warmup-cosine", warmup_fraction=0.0, min_lr_ratio=0.0)
    short, straight = tmp_path / "short", tmp_path / "straight"
    fit(recipe, AddingTask(6), BASE.replace(steps=10, checkpoint_every=5, out=str(short)))
    assert _lrs(short)[10] == pytest.approx(0.0, abs=1e-12)  # the 10-step curve has ended
    before = load_checkpoint(checkpoint_paths(short)[-1])["model"]
    fit(recipe, AddingTask(6), BASE.replace(steps=20, out=str(short), resume=True))
    fit(recipe, AddingTask(6), BASE.replace(steps=20, out=str(straight)))
    resumed, full = _lrs(short), _lrs(straight)
    for step in range(11, 21):  # from the resume on, the 20-step curve, down to 0 at its end
        assert resumed[step] == pytest.approx(full[step], rel=1e-9), step
    assert resumed[15] > 0 and resumed[20] == pytest.approx(0.0, abs=1e-12)
    after = load_checkpoint(checkpoint_paths(short)[-1])["model"]
    assert any(not torch.equal(v, after[k]) for k, v in before.items())  # it did train


def test_resume_keeps_the_divergence_streak_and_rollback_target(tmp_path: Path) -> None:
    # Steps 4 and 5 are non-finite with patience 2: the streak straddles the step-4 checkpoint,
    # and the rollback target is the step-3 evaluation's weights, not the checkpoint's.
    # Draws: steps 1-3, the step-3 evaluation's batch, then step 4 is draw 5 and step 5 draw 6.
    cfg = BASE.replace(
        steps=9, eval_every=3, checkpoint_every=4, divergence_patience=2, steps_per_epoch=4
    )
    recipe = _recipe(name="constant")
    full = fit(recipe, PoisonStream(6, {5, 6}), cfg.replace(out=str(tmp_path / "a")))
    assert [(e["event"], e["step"]) for e in full.history if e["kind"] == "event"] == [
        ("rollback", 5)
    ]
    with pytest.raises(RuntimeError, match="simulated"):
        fit(recipe, PoisonStream(6, {5, 6}), cfg.replace(out=str(tmp_path / "b")), [Crash(5)])
    assert [p.name for p in checkpoint_paths(tmp_path / "b")] == ["ckpt-00000004.pt"]
    resumed = fit(
        recipe, PoisonStream(6, {5, 6}), cfg.replace(out=str(tmp_path / "b"), resume=True)
    )
    assert resumed.rollbacks == 1 and resumed.guard_stats == full.guard_stats
    assert resumed.guard_stats["skipped_per_epoch"] == [1, 1, 0]
    a = load_checkpoint(checkpoint_paths(tmp_path / "a")[-1])["model"]
    b = load_checkpoint(checkpoint_paths(tmp_path / "b")[-1])["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert resumed.metrics == full.metrics


def test_a_diverged_run_stays_diverged_on_resume(tmp_path: Path) -> None:
    cfg = BASE.replace(
        steps=50, divergence_patience=2, max_rollbacks=1, checkpoint_every=0, out=str(tmp_path)
    )
    first = fit(_recipe(name="constant"), PoisonStream(6, set(range(3, 200))), cfg)
    assert first.diverged and first.steps == 6
    again = fit(_recipe(name="constant"), PoisonStream(6, set()), cfg.replace(resume=True))
    assert again.diverged and again.steps == 6 and again.rollbacks == first.rollbacks
    train_steps = [
        r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"
    ]
    assert max(train_steps) == 6


class _Groups(Callback):
    def on_train_start(self, ctx: Any) -> None:
        self.groups = [dict(g, params=None) for g in ctx.optimizer.param_groups]


def test_settings_changed_on_resume_take_effect_at_the_same_position(tmp_path: Path) -> None:
    sched = {"name": "warmup-cosine", "warmup_fraction": 0.2, "min_lr_ratio": 0.1}
    recipe = _recipe(**sched).replace(**{"optimizer.lr": 1e-2, "optimizer.weight_decay": 1e-4})
    cfg = BASE.replace(steps=10, checkpoint_every=5)
    straight, run = tmp_path / "straight", tmp_path / "run"
    fit(recipe, AddingTask(6), cfg.replace(out=str(straight)))
    with pytest.raises(RuntimeError, match="simulated"):
        fit(recipe, AddingTask(6), cfg.replace(out=str(run)), [Crash(6)])
    changed = recipe.replace(**{"optimizer.lr": 2e-2, "optimizer.weight_decay": 0.5})
    changed = changed.replace(**{"schedule.min_lr_ratio": 0.3})
    groups = _Groups()
    fit(changed, AddingTask(6), cfg.replace(out=str(run), resume=True), [groups])
    assert [g["weight_decay"] for g in groups.groups] == [0.5, 0.0]  # biases stay exempt
    full, resumed = _lrs(straight), _lrs(run)
    assert all(resumed[s] == pytest.approx(full[s]) for s in range(1, 6))  # before the resume
    # Same position on the curve, twice the peak, decaying to 0.3 of it instead of 0.1.
    peak = 2e-2
    for s in range(6, 11):
        want = peak * (0.3 + 0.7 * (full[s] / 1e-2 - 0.1) / 0.9)
        assert resumed[s] == pytest.approx(want, rel=1e-6), s
    assert resumed[10] == pytest.approx(0.3 * peak)
    with pytest.raises(ConfigError, match=r"optimizer\.name"):
        fit(
            changed.replace(**{"optimizer.name": "sgd"}),
            AddingTask(6),
            cfg.replace(out=str(run), resume=True, steps=12),
        )


def test_logged_epochs_match_the_guards_per_epoch_counts() -> None:
    # Draw 4 (step 4, the last of epoch 0) and draw 6 (step 6) are non-finite.
    cfg = BASE.replace(steps=8, steps_per_epoch=4, divergence_patience=5)
    result = fit(_recipe(name="constant"), PoisonStream(6, {4, 6}), cfg)
    train = {r["step"]: r for r in result.history if r["kind"] == "train"}
    assert [train[s]["epoch"] for s in (1, 4, 5, 8)] == [0, 0, 1, 1]
    assert result.guard_stats["skipped_per_epoch"] == [1, 1]
    for epoch, count in enumerate(result.guard_stats["skipped_per_epoch"]):
        assert count == sum(1 for r in train.values() if r["skipped"] and r["epoch"] == epoch)
