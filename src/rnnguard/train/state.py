"""What a run is and where it stands: the result of ``fit``, the callback context, the progress."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnguard.train import distributed
from rnnguard.train.config import TrainConfig
from rnnguard.train.guard import GradientGuard
from rnnguard.train.recipes import Recipe

__all__ = ["FitResult", "Progress", "TrainContext"]


@dataclass
class FitResult:
    """The outcome of :func:`~rnnguard.train.trainer.fit`."""

    steps: int
    """Training steps done (including steps the guard skipped)."""
    solved: bool
    """Whether a held-out evaluation passed the task's threshold."""
    solved_step: int | None
    """Step of the first evaluation that passed (None if never)."""
    metrics: dict[str, float]
    """Final held-out metrics (``loss``, the task's metric, extras)."""
    history: list[dict[str, Any]]
    """Logged records (kind ``train`` / ``eval`` / ``event``) for curves."""
    guard_stats: dict[str, Any]
    """:class:`~rnnguard.train.guard.GuardStats` as a dict, reduced over ranks."""
    diverged: bool
    """Whether training stopped after exhausting its rollbacks."""
    wall_time: float
    """Seconds spent training (summed over resumed segments)."""
    metric_name: str = "loss"
    """Name of the task's main metric in ``metrics``."""
    rollbacks: int = 0
    """Divergence rollbacks performed."""
    blowups: int = 0
    """Steps whose loss or recurrent state blew up (counted apart from gradient explosions)."""
    num_params: int = 0
    """Trainable parameters of the model."""
    recipe: dict[str, Any] | None = None
    """The recipe trained, as a dict."""
    out: str | None = None
    """Output folder, if any."""

    @property
    def metric(self) -> float:
        """The final value of the task's main metric (NaN if never evaluated)."""
        return float(self.metrics.get(self.metric_name, float("nan")))

    @property
    def explosions_per_epoch(self) -> list[int]:
        return list(self.guard_stats.get("explosions_per_epoch", []))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainContext:
    """What callbacks see: the live objects of a run and its position."""

    model: nn.Module
    """The model being trained (unwrapped, not the DDP wrapper)."""
    task: Any
    config: TrainConfig
    recipe: Recipe
    optimizer: torch.optim.Optimizer
    scheduler: Any
    guard: GradientGuard
    scaler: Any
    device: torch.device
    dist: distributed.DistInfo
    out: Path | None
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    should_stop: bool = False
    """Set to True in a callback to stop after the current step."""
    last_eval_record: dict[str, Any] = field(default_factory=dict)
    extra_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """Epoch of the step just done: steps 1..N are epoch 0 (as the guard counts them)."""
        return max(0, self.step - 1) // self.config.steps_per_epoch

    @property
    def metric_name(self) -> str:
        return str(getattr(self.task, "metric_name", "loss"))

    @property
    def task_name(self) -> str:
        return str(getattr(self.task, "name", type(self.task).__name__))

    def log(self, record: dict[str, Any]) -> None:
        """Add a custom record (e.g. a diagnostic) to the history and the metric files."""
        rec = {"kind": "custom", "step": self.step, "epoch": self.epoch, **record}
        self.history.append(rec)
        self.extra_records.append(rec)


@dataclass
class Progress:
    """Where a run stands beyond its live objects; saved in every checkpoint, restored on resume."""

    lr_scale: float = 1.0
    """Product of the rollback back-offs applied to the learning rate."""
    rollbacks: int = 0
    """Divergence rollbacks performed (the give-up is not one)."""
    stalled_rollbacks: int = 0
    """Rollbacks since the held-out metric last improved."""
    best_metric: float | None = None
    """Best healthy held-out value of the task's metric so far."""
    blowups: int = 0
    """Steps judged a loss or state blow-up."""
    monitor: dict[str, Any] = field(default_factory=dict)
    """:class:`~rnnguard.train.divergence.DivergenceMonitor` state (its recent losses)."""
    solved_step: int | None = None
    wall_before: float = 0.0
    """Seconds spent in earlier segments of a resumed run."""
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_eval_step: int = -1
    bad_streak: int = 0
    """Consecutive steps that count towards a divergence."""
    diverged: bool = False
    good: dict[str, Any] | None = None
    """The rollback target: ``{"step", "model", "optimizer"}`` in host memory."""

    @property
    def solved(self) -> bool:
        return self.solved_step is not None

    def to_checkpoint(
        self, step: int, history: list[dict[str, Any]], wall: float
    ) -> dict[str, Any]:
        """The ``trainer`` entry of a checkpoint written at ``step``."""
        good = self.good
        return {
            "step": step,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "stalled_rollbacks": self.stalled_rollbacks,
            "best_metric": self.best_metric,
            "blowups": self.blowups,
            "monitor": self.monitor,
            "solved_step": self.solved_step,
            "wall_time": wall,
            "history": history,
            "last_metrics": self.last_metrics,
            "last_eval_step": self.last_eval_step,
            "bad_streak": self.bad_streak,
            "diverged": self.diverged,
            # The rollback target, unless it is this very state (the usual case when checkpoints
            # follow evaluations): a resumed run rolls back to the same place.
            "good": None if good is None or good["step"] == step else good,
        }

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> Progress:
        """Read back the ``trainer`` entry of a checkpoint."""
        last_metrics = dict(saved["last_metrics"])
        step = int(saved["step"])
        return cls(
            lr_scale=float(saved["lr_scale"]),
            rollbacks=int(saved["rollbacks"]),
            stalled_rollbacks=int(saved.get("stalled_rollbacks", saved["rollbacks"])),
            best_metric=saved.get("best_metric"),
            blowups=int(saved.get("blowups", 0)),
            monitor=dict(saved.get("monitor", {})),
            solved_step=saved["solved_step"],
            wall_before=float(saved["wall_time"]),
            last_metrics=last_metrics,
            last_eval_step=int(saved.get("last_eval_step", step if last_metrics else -1)),
            bad_streak=int(saved.get("bad_streak", 0)),
            diverged=bool(saved.get("diverged", False)),
            good=saved.get("good"),
        )
