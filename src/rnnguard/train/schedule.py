"""Learning-rate schedules: linear warmup then cosine decay, as a pure function and a scheduler.

The scheduler's position is its own counter of *applied* optimiser steps (GradientGuard does not
advance it on a skipped step) and it is saved in checkpoints, so a resumed run continues on the
same curve.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from rnnguard.errors import ConfigError
from rnnguard.utils.checks import in_range, positive_int

SCHEDULES = ("constant", "warmup-cosine", "cosine")


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    warmup_start_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate for the update with index ``step`` (0-based).

    Warmup rises linearly from ``warmup_start_ratio`` to 1, evaluated at ``step + 1`` so the first
    update never has a zero learning rate; then a half cosine falls from 1 to ``min_lr_ratio`` at
    ``total_steps``; after that the multiplier stays at ``min_lr_ratio``.
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step < 0:
        raise ConfigError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return warmup_start_ratio + (1.0 - warmup_start_ratio) * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LRScheduler):
    """``torch.optim`` scheduler following :func:`warmup_cosine`.

    ``kind="constant"`` keeps the peak rate (after the optional warmup); ``"cosine"`` decays with no
    warmup. :meth:`scale_base_lr` lowers the whole curve (used after a divergence rollback).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        warmup_start_ratio: float = 0.0,
        kind: str = "warmup-cosine",
        last_epoch: int = -1,
    ) -> None:
        if kind not in SCHEDULES:
            raise ConfigError(f"schedule kind must be one of {SCHEDULES}, got {kind!r}")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"total_steps must be a positive int, got {total_steps!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        in_range("min_lr_ratio", min_lr_ratio, 0, 1)
        in_range("warmup_start_ratio", warmup_start_ratio, 0, 1)
        self.total_steps = total_steps
        self.warmup_steps = 0 if kind == "cosine" else warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.warmup_start_ratio = warmup_start_ratio
        self.kind = kind
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at update index ``step``."""
        if self.kind == "constant":  # optional linear warmup, then flat
            if step < self.warmup_steps:
                start = self.warmup_start_ratio
                return start + (1.0 - start) * (step + 1) / self.warmup_steps
            return 1.0
        return warmup_cosine(
            step, self.total_steps, self.warmup_steps, self.min_lr_ratio, self.warmup_start_ratio
        )

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = self.factor(max(0, self.last_epoch))
        return [float(base) * f for base in self.base_lrs]

    def scale_base_lr(self, factor: float) -> None:
        """Multiply the peak learning rates by ``factor`` and apply the change now."""
        self.base_lrs = [float(b) * factor for b in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = group["initial_lr"] * factor
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def set_total_steps(self, total_steps: int) -> None:
        """Stretch (or shrink) the decay to end at ``total_steps`` from the current position.

        Used when a run is resumed with a different budget: the warmup already planned is kept
        and the cosine reaches ``min_lr_ratio`` at the new end instead of the old one.
        """
        self.total_steps = positive_int("total_steps", total_steps)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    kind: str = "warmup-cosine",
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float = 0.0,
    warmup_start_ratio: float = 0.0,
) -> WarmupCosineLR:
    """Scheduler for ``total_steps`` updates; ``warmup_steps`` wins over ``warmup_fraction``."""
    in_range("warmup_fraction", warmup_fraction, 0, 1)
    if warmup_steps is None:
        warmup_steps = round(warmup_fraction * total_steps)
    return WarmupCosineLR(
        optimizer,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        min_lr_ratio=min_lr_ratio,
        warmup_start_ratio=warmup_start_ratio,
        kind=kind,
    )
