"""Objectives: training a recipe under a step budget, and a cheap toy for checking a setup."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnguard.train.callbacks import Callback
from rnnguard.train.divergence import CAUSES
from rnnguard.tune.study import DIVERGED_ATTR, PRUNED_REASON_ATTR


def prune(trial: Any, reason: str) -> None:
    """Record ``reason`` on ``trial`` and raise ``optuna.TrialPruned``."""
    import optuna

    trial.set_user_attr(PRUNED_REASON_ATTR, reason)
    # A flag as well as the text, so diverged trials can be filtered without parsing reasons.
    trial.set_user_attr(DIVERGED_ATTR, reason.startswith("diverged"))
    raise optuna.TrialPruned(reason)


@dataclass(frozen=True)
class ToyObjective:
    """A quadratic with intermediate reports: exercises storage, workers and pruning in seconds.

    ``rnnguard tune`` never uses it; it exists to test a storage or worker setup without training.
    """

    steps: int = 3
    sleep: float = 0.0
    """Seconds slept per step (to make a trial last long enough to kill it)."""
    diverge_above: float | None = None
    """Trials with ``x`` above this report a NaN loss and are pruned as diverged."""
    log: str | None = None
    """File to which every call appends its trial number (to check nothing runs twice)."""
    rendezvous: str | None = None
    """Folder where each process signs in; trials wait until ``processes`` have signed in."""
    processes: int = 1

    def __call__(self, trial: Any) -> float:
        if self.rendezvous is not None:
            self._meet(Path(self.rendezvous))
        if self.log is not None:
            with open(self.log, "a", encoding="ascii") as fh:  # one small O_APPEND write
                fh.write(f"{trial.number}\n")
        x = trial.suggest_float("x", -4.0, 4.0)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        value = (x - 1.0) ** 2 + (0.5 if kind == "b" else 0.0)
        for step in range(1, self.steps + 1):
            if self.sleep:
                time.sleep(self.sleep)
            if self.diverge_above is not None and x > self.diverge_above:
                prune(trial, f"diverged: non-finite loss {math.nan} at step {step}")
            trial.report(value + 1.0 / step, step)
            if trial.should_prune():
                prune(trial, f"median: below the median of earlier trials at step {step}")
        return value

    def _meet(self, folder: Path) -> None:
        # Lets a test be sure every worker process takes part, however slowly each one starts.
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 60.0
        while len(list(folder.iterdir())) < self.processes and time.monotonic() < deadline:
            time.sleep(0.02)


class _PruningCallback(Callback):
    """Trainer callback: report evaluations to Optuna, prune on the median rule or divergence."""

    def __init__(self, trial: Any, explosion_patience: int) -> None:
        self.trial = trial
        self.patience = explosion_patience
        self.streak = 0

    def on_step_end(self, ctx: Any, record: dict[str, Any]) -> None:
        loss = record.get("loss")
        if loss is not None and not math.isfinite(loss):
            prune(self.trial, f"diverged: non-finite loss ({loss}) at step {record['step']}")
        # Prune before the trainer's own rollback (same patience and the same evidence: a loss or
        # state blow-up, not a clipped gradient spike): a rollback would only spend the trial's
        # budget on a recipe that has already shown it is unstable.
        self.streak = self.streak + 1 if record.get("blowup") else 0
        if self.streak >= self.patience:
            prune(
                self.trial,
                f"diverged: {self.streak} consecutive steps with "
                f"{CAUSES.get(record['blowup'], record['blowup'])} at step {record['step']}",
            )

    def on_eval_end(self, ctx: Any, metrics: dict[str, float]) -> None:
        value = float(metrics.get(ctx.metric_name, math.nan))
        if not math.isfinite(value):
            prune(self.trial, f"diverged: non-finite {ctx.metric_name} at step {ctx.step}")
        self.trial.report(value, ctx.step)
        if self.trial.should_prune():
            prune(self.trial, f"median: worse than the median of earlier trials at step {ctx.step}")


@dataclass(frozen=True)
class TrainObjective:
    """Train the recipe a trial suggests for ``budget_steps`` and return the task's metric."""

    task: str
    length: int
    budget_steps: int
    task_kwargs: dict[str, Any] | None = None
    """Extra task arguments (e.g. a data folder)."""
    space: str = "default"
    base_recipe: dict[str, Any] | None = None
    """Starting recipe as a dict (``None``: ``Recipe()`` with ``hidden_size``)."""
    hidden_size: int = 64
    batch_size: int = 32
    eval_every: int = 50
    eval_batches: int = 4
    seed: int = 0
    device: str = "cpu"
    explosion_patience: int = 5

    def base(self) -> Any:
        """The base recipe the space starts from."""
        from rnnguard.train.recipes import Recipe

        if self.base_recipe is not None:
            return Recipe.from_dict(self.base_recipe)
        return Recipe(hidden_size=self.hidden_size)

    def recipe(self, trial: Any) -> Any:
        """The recipe ``trial`` describes (suggesting its parameters)."""
        from rnnguard.tune.space import get_space

        return get_space(self.space).suggest(trial, self.base())

    def __call__(self, trial: Any) -> float:
        from rnnguard.tasks import create_task
        from rnnguard.train.config import TrainConfig
        from rnnguard.train.trainer import fit

        recipe = self.recipe(trial)
        trial.set_user_attr("recipe", recipe.to_dict())
        task = create_task(self.task, length=self.length, **(self.task_kwargs or {}))
        config = TrainConfig(
            steps=self.budget_steps,
            batch_size=self.batch_size,
            eval_every=self.eval_every,
            eval_batches=self.eval_batches,
            seed=self.seed,
            device=self.device,
            progress=False,
            # Every trial spends the same budget, so final metrics compare like with like.
            stop_when_solved=False,
            divergence_patience=self.explosion_patience,
            tensorboard=False,
        )
        result = fit(
            recipe, task, config, callbacks=[_PruningCallback(trial, self.explosion_patience)]
        )
        trial.set_user_attr("solved_step", result.solved_step)
        trial.set_user_attr("explosions", int(result.guard_stats.get("exploded", 0)))
        trial.set_user_attr("skipped", int(result.guard_stats.get("skipped", 0)))
        trial.set_user_attr("train_seconds", round(result.wall_time, 2))
        if result.diverged:
            prune(trial, f"diverged: {result.rollbacks} rollbacks did not recover")
        return result.metric
