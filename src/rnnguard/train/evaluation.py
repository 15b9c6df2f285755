"""Held-out evaluation: the task's own ``evaluate`` or the mean over fixed batches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnguard.train.device import autocast, to_device
from rnnguard.train.model_call import ModelCall

__all__ = ["EVAL_SEED_OFFSET", "evaluate", "output_size", "task_view"]

# Held-out batches come from their own stream so they never overlap the training stream's seeds.
EVAL_SEED_OFFSET = 1_000_003


def output_size(task: Any) -> int | None:
    """The task's number of outputs per step, if its spec says."""
    size = getattr(getattr(task, "spec", None), "output_size", None)
    return size if isinstance(size, int) else None


def task_view(model: nn.Module, task: Any) -> nn.Module:
    """What a task's own ``evaluate`` gets: models following ``(outputs, state)`` as they are."""
    from rnnguard.models import SequenceModel

    if isinstance(model, (SequenceModel, ModelCall)):
        return model
    return ModelCall(model, output_size(task))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Any,
    *,
    batches: int = 4,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    amp: str = "off",
) -> dict[str, float]:
    """Held-out metrics: the task's own ``evaluate`` if it has one, else the mean over fixed batches."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        if callable(getattr(task, "evaluate", None)):
            with autocast(device, amp):
                return {
                    k: float(v) for k, v in task.evaluate(task_view(model, task), device).items()
                }
        call = model if isinstance(model, ModelCall) else ModelCall(model, output_size(task))
        gen = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
        totals: dict[str, float] = {}
        state = None
        for _ in range(batches):
            x, y = task.batch(batch_size, gen)
            x, y = to_device(x, device), to_device(y, device)
            with autocast(device, amp):
                out, new_state = call(x, state)
            if getattr(task, "stateful", False):
                state = new_state
            values = {"loss": float(task.loss(out, y)), task.metric_name: task.metric(out, y)}
            extra = getattr(task, "extra_metrics", None)
            if callable(extra):
                values.update(extra(out, y))
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + float(v) / batches
        return totals
    finally:
        model.train(was_training)
