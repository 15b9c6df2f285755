"""Test doubles shared by the training tests: a crashing callback and a task that turns to NaN."""

from __future__ import annotations

from typing import Any

import torch

from rnnguard.tasks import AddingTask
from rnnguard.train.callbacks import Callback


class Crash(Callback):
    """Raises ``RuntimeError("simulated crash")`` at the end of step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, ctx: Any, record: dict[str, Any]) -> None:
        if ctx.step == self.at:
            raise RuntimeError("simulated crash")


class PoisonTask(AddingTask):
    """Adding batches that turn to NaN for the draws listed in ``bad`` (counted from 1)."""

    def __init__(self, length: int, bad: set[int]) -> None:
        super().__init__(length)
        self.bad, self.calls = bad, 0

    def batch(self, batch_size: int, generator: torch.Generator) -> Any:
        x, y = super().batch(batch_size, generator)
        self.calls += 1
        if self.calls in self.bad:
            x = x * float("nan")
        return x, y


class PoisonStream(PoisonTask):
    """A :class:`PoisonTask` whose draw count is a stream position kept in checkpoints."""

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = state["calls"]
