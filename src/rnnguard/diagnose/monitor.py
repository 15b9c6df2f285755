"""A trainer callback that measures the gradient horizon on a fixed batch every N steps."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from rnnguard.diagnose.horizon import Horizon, input_horizon
from rnnguard.train.callbacks import Callback
from rnnguard.utils.checks import fraction, integer

__all__ = ["HorizonMonitor", "horizon_record"]


def horizon_record(hz: Horizon) -> dict[str, Any]:
    """The logged summary of one measurement (non-finite numbers as None)."""
    return {
        "horizon": hz.horizon,
        "max_distance": hz.max_distance,
        "rate_per_step": hz.rate if math.isfinite(hz.rate) else None,
        "far_ratio": hz.far_ratio if math.isfinite(hz.far_ratio) else None,
        "peak_ratio": hz.peak_ratio if math.isfinite(hz.peak_ratio) else None,
        "measured_at": hz.extra.get("measured_at", "input"),
    }


class HorizonMonitor(Callback):
    """Every ``every`` steps, measure the input gradient horizon of the model on one fixed batch.

    Each measurement is logged through ``ctx.log`` (so it lands in the run's history and
    ``metrics.jsonl`` as a ``kind: custom`` record with ``diagnostic: horizon``) and kept in
    ``records``. ``seconds`` accumulates the time spent measuring, for overhead accounting.
    Only the main process measures under torchrun.
    """

    def __init__(
        self, every: int = 100, *, batch_size: int = 8, threshold: float = 1e-3, seed: int = 0
    ) -> None:
        self.every = integer("every", every, minimum=1)
        self.batch_size = integer("batch_size", batch_size, minimum=1)
        self.threshold = fraction("threshold", threshold)
        self.seed = integer("seed", seed)
        self.records: list[dict[str, Any]] = []
        self.seconds = 0.0
        self._x: torch.Tensor | None = None

    def on_train_start(self, ctx: Any) -> None:
        """Draw the fixed probe batch from the task (the same batch all run long)."""
        x, _ = ctx.task.batch(self.batch_size, torch.Generator().manual_seed(self.seed))
        self._x = x.to(ctx.device)

    def measure(self, ctx: Any) -> dict[str, Any]:
        """Measure now and log the record."""
        if self._x is None:
            self.on_train_start(ctx)
        assert self._x is not None
        start = time.perf_counter()
        hz = input_horizon(ctx.model, self._x, threshold=self.threshold)
        self.seconds += time.perf_counter() - start
        rec = {"diagnostic": "horizon", **horizon_record(hz)}
        ctx.log(rec)
        self.records.append({"step": ctx.step, **rec})
        return rec

    def on_step_end(self, ctx: Any, record: dict[str, Any]) -> None:
        """Measure on every ``every``-th step (main process only)."""
        dist = getattr(ctx, "dist", None)
        if ctx.step % self.every == 0 and (dist is None or getattr(dist, "is_main", True)):
            self.measure(ctx)
