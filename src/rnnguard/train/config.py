"""Configuration dataclasses: optimiser, schedule, guard (parts of a recipe) and the run itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from rnnguard.errors import ConfigError
from rnnguard.train.guard import CLIP_MODES
from rnnguard.train.optim import OPTIMIZERS, build_optimizer
from rnnguard.train.schedule import SCHEDULES, WarmupCosineLR, build_scheduler
from rnnguard.utils.checks import choice, in_range, integer, number
from rnnguard.utils.checks import seed as check_seed

if TYPE_CHECKING:
    import torch
    from torch import nn

C = TypeVar("C")

AMP_MODES = ("auto", "off", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def config_from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with a clear message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where or cls.__name__}; expected some of {sorted(names)}"
        )
    return cls(**data)


@dataclass
class OptimConfig:
    """Optimiser settings (see :func:`rnnguard.train.optim.build_optimizer`)."""

    name: str = "adamw"
    """``adamw``, ``adam`` or ``sgd``."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled (AdamW) or L2 decay on matrices; biases, gains and 1-D vectors are exempt."""
    amsgrad: bool = False
    """Use the AMSGrad variant (Adam/AdamW)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam moment coefficients."""
    momentum: float = 0.9
    """SGD momentum."""

    def __post_init__(self) -> None:
        choice("optimizer.name", self.name, OPTIMIZERS)
        number("optimizer.lr", self.lr, positive=True)
        number("optimizer.weight_decay", self.weight_decay, positive=True, zero_ok=True)
        self.betas = tuple(self.betas)  # type: ignore[assignment]  # YAML gives lists
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optimizer.momentum must be in [0, 1), got {self.momentum}")

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimiser these settings describe, over ``model``'s parameter groups."""
        return build_optimizer(model, **dataclasses.asdict(self))


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (see :func:`rnnguard.train.schedule.warmup_cosine`)."""

    name: str = "warmup-cosine"
    """``constant``, ``cosine`` or ``warmup-cosine``."""
    warmup_fraction: float = 0.0
    """Warmup length as a fraction of the run's steps."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak."""
    warmup_start_ratio: float = 0.0
    """Learning rate at the start of warmup as a fraction of the peak."""

    def __post_init__(self) -> None:
        choice("schedule.name", self.name, SCHEDULES)
        for key in ("warmup_fraction", "min_lr_ratio", "warmup_start_ratio"):
            in_range(f"schedule.{key}", getattr(self, key), 0, 1)

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> WarmupCosineLR:
        """The schedule these settings describe, for a run of ``total_steps`` updates."""
        settings = dataclasses.asdict(self)
        return build_scheduler(optimizer, total_steps, kind=settings.pop("name"), **settings)


@dataclass
class GuardConfig:
    """GradientGuard settings (see :class:`rnnguard.train.guard.GradientGuard`)."""

    mode: str = "norm"
    """``none``, ``norm``, ``value``, ``auto`` (AutoClip) or ``agc``."""
    max_norm: float = 1.0
    """Total-norm threshold for ``mode="norm"``."""
    clip_value: float = 1.0
    """Element threshold for ``mode="value"``."""
    percentile: float = 10.0
    """History percentile for ``mode="auto"``."""
    agc_clip: float = 0.01
    """Unit-wise gradient/weight ratio for ``mode="agc"``."""
    explosion_factor: float = 10.0
    """A pre-clip norm above this many times the running median counts as an explosion."""

    def __post_init__(self) -> None:
        choice("guard.mode", self.mode, CLIP_MODES)
        for key in ("max_norm", "clip_value", "agc_clip", "explosion_factor"):
            number(f"guard.{key}", getattr(self, key), positive=True)
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"guard.percentile must be in (0, 100], got {self.percentile!r}")


@dataclass
class TrainConfig:
    """How to run one training: budget, evaluation, device, checkpoints and logging."""

    steps: int = 1000
    """Training iterations (including any the guard skips)."""
    batch_size: int = 32
    """Sequences per batch (per process under torchrun)."""
    eval_every: int = 100
    """Evaluate on held-out batches every this many steps (and at the end)."""
    eval_batches: int = 4
    """Held-out batches per evaluation (the same batches every time)."""
    eval_batch_size: int | None = None
    """Batch size for evaluation (default: ``batch_size``)."""
    seed: int = 0
    """Seed for the model's initialisation and the batch stream."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda`` / ``cuda:N``."""
    amp: str | None = None
    """``auto`` (fp16 on CUDA, off on CPU), ``off``, ``fp16``, ``bf16``; None: the recipe's."""
    flush_denormals: bool = True
    """CPU: training steps treat denormal floats as zero (:func:`rnnguard.utils.cpu.flush_denormals`);
    vanishing gradients of long sequences otherwise make backward several times slower. Evaluation
    and callbacks always see normal arithmetic."""
    out: str | None = None
    """Output folder for metrics and checkpoints (None: keep everything in memory)."""
    checkpoint_every: int = 100
    """Write a checkpoint every this many steps (0: only at the end); needs ``out``."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    resume: bool = False
    """Continue from the newest checkpoint in ``out`` if there is one."""
    progress: bool | None = None
    """Show a progress bar (None: only when stderr is a terminal)."""
    log_every: int = 10
    """Record a training-metrics line every this many steps."""
    steps_per_epoch: int = 100
    """Steps counted as one epoch for per-epoch statistics on synthetic tasks."""
    stop_when_solved: bool = True
    """Stop at the first evaluation whose metric passes the task's threshold."""
    divergence_patience: int = 5
    """Consecutive non-finite or exploding steps that trigger a rollback."""
    lr_backoff: float = 0.5
    """Learning-rate multiplier applied after each rollback."""
    max_rollbacks: int = 3
    """Rollbacks allowed before the run is declared diverged and stopped."""
    num_threads: int | None = None
    """CPU threads for torch (None: leave torch's setting); 1 is often fastest for small models."""
    tensorboard: bool | None = None
    """Write TensorBoard events to ``out`` (None: when tensorboard is installed)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values recorded with the run (not used by the trainer)."""

    def __post_init__(self) -> None:
        integer("steps", self.steps, minimum=0)
        integer("batch_size", self.batch_size, minimum=1)
        integer("eval_every", self.eval_every, minimum=0)
        integer("eval_batches", self.eval_batches, minimum=1)
        if self.eval_batch_size is not None:
            integer("eval_batch_size", self.eval_batch_size, minimum=1)
        check_seed("seed", self.seed)
        if not isinstance(self.device, str) or not (
            self.device in DEVICES or self.device.startswith("cuda:")
        ):
            raise ConfigError(f"device must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        if self.amp is not None:
            choice("amp", self.amp, AMP_MODES)
        integer("checkpoint_every", self.checkpoint_every, minimum=0)
        integer("keep_last", self.keep_last, minimum=1)
        integer("log_every", self.log_every, minimum=1)
        integer("steps_per_epoch", self.steps_per_epoch, minimum=1)
        integer("divergence_patience", self.divergence_patience, minimum=1)
        integer("max_rollbacks", self.max_rollbacks, minimum=0)
        if not 0 < self.lr_backoff <= 1:
            raise ConfigError(f"lr_backoff must be in (0, 1], got {self.lr_backoff!r}")
        if self.num_threads is not None:
            integer("num_threads", self.num_threads, minimum=1)
        if self.resume and not self.out:
            raise ConfigError("resume=True needs an out folder to resume from, got out=None")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, data, "train config")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
