"""Objectives: training a recipe under a step budget, and a cheap toy for checking a setup."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rnnguard.tune.study import PRUNED_REASON_ATTR


def prune(trial: Any, reason: str) -> None:
    """Record ``reason`` on ``trial`` and raise ``optuna.TrialPruned``."""
    import optuna

    trial.set_user_attr(PRUNED_REASON_ATTR, reason)
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

    def __call__(self, trial: Any) -> float:
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
