"""``fit``: guarded training with evaluation, atomic checkpoints, exact resume, rollback and DDP."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.train import distributed
from rnnguard.train.callbacks import (
    Callback,
    MetricsWriter,
    ProgressBar,
    TensorBoardWriter,
    tensorboard_available,
)
from rnnguard.train.config import TrainConfig
from rnnguard.train.guard import GradientGuard
from rnnguard.train.optim import build_optimizer
from rnnguard.train.recipes import Recipe, get_recipe
from rnnguard.train.schedule import build_scheduler
from rnnguard.utils.io import atomic_torch_save

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
# Held-out batches come from their own stream so they never overlap the training stream's seeds.
EVAL_SEED_OFFSET = 1_000_003
RANK_SEED_STRIDE = 7919


@dataclass
class FitResult:
    """The outcome of :func:`fit`."""

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


# ---------------------------------------------------------------------- helpers
def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error.

    ``cuda`` means ``cuda:LOCAL_RANK``; under torchrun (``world_size > 1``) a fixed ``cuda:N`` that
    is not this rank's GPU is an error, since every rank would share one GPU (NCCL refuses that).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device must be available, got {name!r} but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank)
        device = torch.device(name)
        if world_size > 1 and device.index is not None and device.index != local_rank:
            raise ConfigError(
                f"device must be 'cuda' or 'auto' under torchrun (rank k uses cuda:LOCAL_RANK), "
                f"got {name!r} on local rank {local_rank}"
            )
        return device
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA (with GradScaler), off elsewhere."""
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        # CPU kernels (e.g. oneDNN's LSTM) do not support fp16 autocast; bf16 is the CPU format.
        raise ConfigError(
            f"amp='fp16' needs a CUDA device, got device {str(device)!r}; use 'bf16' on CPU"
        )
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"amp='bf16' needs a GPU with bfloat16 support, got {str(device)!r} without it; "
            "use 'fp16'"
        )
    return amp


def detach_state(state: Any) -> Any:
    """Detach every tensor in a (nested) recurrent state, keeping its structure."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(detach_state(s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        # Asynchronous only towards the GPU: a non-blocking copy back to the host may still be in
        # flight when the host tensor is read (pickled into a checkpoint, gathered across ranks).
        return obj.to(device, non_blocking=device.type == "cuda")
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(o, device) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def split_output(output: Any, x: torch.Tensor, output_size: int | None = None) -> tuple[Any, Any]:
    """``(predictions, state)`` from what a model returned for input ``x``.

    A model may return its predictions ``(B, T, output_size)`` alone, as a plain PyTorch sequence
    model does, or ``(predictions, state)`` like :class:`~rnnguard.models.SequenceModel` (the state
    is then carried across batches of stateful tasks). Anything else is a TypeError naming what
    the model returned and what was expected.
    """
    expected = "a tensor (batch, time, outputs) or a tuple (outputs, state)"
    if isinstance(output, torch.Tensor):
        pred, state = output, None
    elif isinstance(output, tuple) and not hasattr(output, "_fields") and len(output) == 2:
        pred, state = output
        if not isinstance(pred, torch.Tensor):
            raise TypeError(
                f"model output must be {expected}, got a tuple whose first item is "
                f"{type(pred).__name__}"
            )
    elif isinstance(output, (tuple, list)):
        raise TypeError(
            f"model output must be {expected}, got a {type(output).__name__} of {len(output)} items"
        )
    else:
        raise TypeError(f"model output must be {expected}, got {type(output).__name__}")
    want = (x.shape[0], x.shape[1], output_size if output_size is not None else pred.shape[-1])
    if pred.dim() != 3 or tuple(pred.shape) != want:
        raise TypeError(
            f"model output must have shape (batch, time, outputs) = {want} for an input of shape "
            f"{tuple(x.shape)}, got {tuple(pred.shape)}"
        )
    return pred, state


def accepts_state(model: nn.Module) -> bool:
    """Whether ``model.forward`` can be called as ``forward(x, state)``."""
    try:
        inspect.signature(model.forward).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read: assume it does
        return True
    return True


class SequenceCall(nn.Module):
    """A view of ``model`` with the trainer's calling convention: ``(x, state=None) -> (outputs, state)``.

    The state is passed only when there is one and ``forward`` takes a second argument, so a model
    whose ``forward`` takes ``x`` alone trains unchanged, returning a tensor or ``(outputs, h)``
    (it just has no state to carry). Outputs are checked by :func:`split_output`. ``takes_state``
    overrides the signature test (for a wrapper such as DDP, whose signature says nothing).
    """

    def __init__(
        self, model: nn.Module, output_size: int | None = None, takes_state: bool | None = None
    ) -> None:
        super().__init__()
        self.inner = model
        self.output_size = output_size
        self.takes_state = accepts_state(model) if takes_state is None else takes_state

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
        pass_state = state is not None and self.takes_state
        output = self.inner(x, state) if pass_state else self.inner(x)
        pred, new_state = split_output(output, x, self.output_size)
        return pred, (new_state if self.takes_state else None)


def _task_view(model: nn.Module, task: Any) -> nn.Module:
    """What a task's own ``evaluate`` gets: models following ``(outputs, state)`` as they are."""
    from rnnguard.models import SequenceModel

    if isinstance(model, (SequenceModel, SequenceCall)):
        return model
    return SequenceCall(model, _output_size(task))


def _output_size(task: Any) -> int | None:
    size = getattr(getattr(task, "spec", None), "output_size", None)
    return size if isinstance(size, int) else None


_SCHEDULE_SETTINGS = ("kind", "warmup_steps", "min_lr_ratio", "warmup_start_ratio")


def _apply_recipe_changes(
    saved: dict[str, Any] | None,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fresh_groups: list[dict[str, Any]],
    fresh_schedule: dict[str, Any],
) -> None:
    """After loading a checkpoint, apply optimiser/schedule settings the recipe now changes.

    Loading restores the saved hyperparameters; a run resumed with, say, ``--set optimizer.lr=``
    means the new value. The peak rate is rescaled (keeping any rollback back-off and the position
    on the curve); the other optimiser and schedule settings are taken from the new recipe.
    """
    if saved is None:
        return
    try:
        old = Recipe.from_dict(saved)
    except ConfigError:
        return  # written by another version: keep what was loaded
    if old.optimizer.name != recipe.optimizer.name:
        raise ConfigError(
            f"optimizer.name must stay {old.optimizer.name!r} to resume this run, "
            f"got {recipe.optimizer.name!r}"
        )
    if old.optimizer != recipe.optimizer:
        for group, fresh in zip(optimizer.param_groups, fresh_groups):
            group.update({k: v for k, v in fresh.items() if k not in ("lr", "initial_lr")})
        if recipe.optimizer.lr != old.optimizer.lr:
            scheduler.scale_base_lr(recipe.optimizer.lr / old.optimizer.lr)
        logger.info("resumed with the recipe's new optimiser settings %s", recipe.optimizer)
    if old.schedule != recipe.schedule:
        for key, value in fresh_schedule.items():
            setattr(scheduler, key, value)
        scheduler.scale_base_lr(1.0)  # re-applies the rate at the current position
        logger.info("resumed with the recipe's new schedule %s", recipe.schedule)


def _host_copy(obj: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_host_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _check_task(task: Any) -> None:
    missing = [a for a in ("spec", "batch", "loss", "metric", "is_solved") if not hasattr(task, a)]
    if missing:
        raise TypeError(
            f"task must follow the Task protocol, got {type(task).__name__} missing {missing}"
        )


def checkpoint_paths(out: str | Path) -> list[Path]:
    """Checkpoints in ``out``, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (it holds RNG states, hence not weights-only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(
            f"checkpoint must be a file written by rnnguard, got unreadable {str(path)!r}: {exc}"
        ) from exc


def latest_checkpoint(out: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint in ``out`` (None if there is none)."""
    for path in reversed(checkpoint_paths(out)):
        try:
            return load_checkpoint(path)
        except ConfigError:
            continue  # fall back to the previous one
    return None


def _rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Global RNG states; on a CUDA ``device`` also that GPU's generator (and no other's:
    reading every GPU's state would open a context on each of them from every rank)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda_state = state.get("cuda")
    if cuda_state is None or device is None or device.type != "cuda":
        return  # e.g. a CUDA run resumed on the CPU: nothing to restore
    if isinstance(cuda_state, (list, tuple)):  # one state per GPU
        index = device.index or 0
        cuda_state = cuda_state[index] if index < len(cuda_state) else None
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
            with _autocast(device, amp):
                return {
                    k: float(v) for k, v in task.evaluate(_task_view(model, task), device).items()
                }
        call = model if isinstance(model, SequenceCall) else SequenceCall(model, _output_size(task))
        gen = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
        totals: dict[str, float] = {}
        state = None
        for _ in range(batches):
            x, y = task.batch(batch_size, gen)
            x, y = _to_device(x, device), _to_device(y, device)
            with _autocast(device, amp):
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


# ---------------------------------------------------------------------- fit
def fit(
    model_or_recipe: nn.Module | Recipe | str,
    task: Any,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    recipe: Recipe | None = None,
) -> FitResult:
    """Train a model (or a recipe's model) on a task under a :class:`TrainConfig`.

    With a ``nn.Module`` the optimiser, schedule and guard settings come from ``recipe`` (default:
    ``Recipe()``: AdamW, warmup+cosine, clip 1). The module maps ``x`` either to its outputs
    ``(B, T, output_size)``, like a plain PyTorch model, or to ``(outputs, state)`` like
    :class:`~rnnguard.models.SequenceModel`; anything else is a TypeError. On a stateful task
    the state is carried across batches when ``forward`` takes it back (``model(x, state)``).
    Under ``torchrun`` the model is wrapped in DistributedDataParallel; rank 0 writes logs and
    checkpoints. The process group stays up for further calls;
    :func:`rnnguard.train.distributed.shutdown` ends it.

    Resuming (``config.resume``) continues exactly; optimiser or schedule settings that the recipe
    changes, and a changed ``steps`` budget, take effect from the resumed position.

    Example:
        >>> from rnnguard.tasks import create_task
        >>> result = fit("lstm", create_task("adding", length=20), TrainConfig(steps=50))  # doctest: +SKIP
        >>> result.metrics["mse"]  # doctest: +SKIP
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_task(task)
    for cb in callbacks:
        if not isinstance(cb, Callback) and not any(
            hasattr(cb, h) for h in ("on_train_start", "on_step_end", "on_eval_end", "on_train_end")
        ):
            raise TypeError(f"callbacks must be Callback objects, got {type(cb).__name__}")
    want_cuda = config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available()
    )
    dist_info = distributed.setup(want_cuda)
    return _fit(model_or_recipe, task, config, list(callbacks), recipe, dist_info)


def _fit(
    model_or_recipe: nn.Module | Recipe | str,
    task: Any,
    config: TrainConfig,
    user_callbacks: list[Callback],
    recipe: Recipe | None,
    dist_info: distributed.DistInfo,
) -> FitResult:
    device = resolve_device(config.device, dist_info.local_rank, dist_info.world_size)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    out = Path(config.out) if config.out else None
    ckpt: dict[str, Any] | None = None
    if config.resume and out is not None:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out must be a folder to resume from, got file {str(out)!r}")
        ckpt = latest_checkpoint(out)
    elif out is not None and checkpoint_paths(out):
        raise ConfigError(
            f"out must not hold another run's checkpoints unless resuming, got {str(out)!r}; "
            "pass resume=True (--resume) or choose a new folder"
        )

    # ---- model and recipe (same seed on every rank: DDP also broadcasts rank 0's weights)
    torch.manual_seed(config.seed)
    if isinstance(model_or_recipe, str):
        model_or_recipe = get_recipe(model_or_recipe)
    if isinstance(model_or_recipe, Recipe):
        recipe = model_or_recipe
        model: nn.Module = recipe.build_model(task.spec, length=getattr(task, "length", None))
    elif isinstance(model_or_recipe, nn.Module):
        model = model_or_recipe
        recipe = recipe if recipe is not None else Recipe(name="custom")
    else:
        raise TypeError(
            f"model_or_recipe must be an nn.Module, a Recipe or a recipe name, got {type(model_or_recipe).__name__}"
        )
    model.to(device)
    amp = resolve_amp(config.amp or recipe.amp, device)
    opt_cfg = recipe.optimizer
    optimizer = build_optimizer(
        model,
        opt_cfg.name,
        opt_cfg.lr,
        opt_cfg.weight_decay,
        amsgrad=opt_cfg.amsgrad,
        betas=opt_cfg.betas,
        momentum=opt_cfg.momentum,
    )
    sch = recipe.schedule
    scheduler = build_scheduler(
        optimizer,
        max(1, config.steps),
        kind=sch.name,
        warmup_fraction=sch.warmup_fraction,
        min_lr_ratio=sch.min_lr_ratio,
        warmup_start_ratio=sch.warmup_start_ratio,
    )
    g = recipe.guard
    guard = GradientGuard(
        mode=g.mode,
        max_norm=g.max_norm,
        clip_value=g.clip_value,
        percentile=g.percentile,
        agc_clip=g.agc_clip,
        explosion_factor=g.explosion_factor,
        steps_per_epoch=config.steps_per_epoch,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
    train_gen = torch.Generator().manual_seed(
        config.seed * 1_000_033 + 1 + dist_info.rank * RANK_SEED_STRIDE
    )

    if dist_info.enabled and callable(getattr(task, "set_shard", None)):
        # Tasks that read a data stream (not a generator) split it so ranks see different data.
        task.set_shard(dist_info.rank, dist_info.world_size)
    step, lr_scale, rollbacks, solved_step, wall_before = 0, 1.0, 0, None, 0.0
    history: list[dict[str, Any]] = []
    carry: Any = None
    last_metrics: dict[str, float] = {}
    saved: dict[str, Any] = {}  # trainer state of the checkpoint resumed from
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, KeyError) as exc:
            raise ConfigError(
                f"checkpoint in {str(out)!r} does not match this model: {str(exc).splitlines()[0]}"
            ) from exc
        fresh_groups = [
            {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
        fresh_schedule = {k: getattr(scheduler, k) for k in _SCHEDULE_SETTINGS}
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _apply_recipe_changes(
            ckpt.get("recipe"), recipe, optimizer, scheduler, fresh_groups, fresh_schedule
        )
        if scheduler.total_steps != max(1, config.steps):
            # Resumed with another budget: the decay ends at the new last step, not the old one
            # (else a longer run would go on at the old final rate, zero for min_lr_ratio=0).
            logger.info(
                "schedule re-planned for %d steps (was %d)", config.steps, scheduler.total_steps
            )
            scheduler.set_total_steps(max(1, config.steps))
        if ckpt["scaler"]:  # empty when saved without fp16 (e.g. a CPU run resumed on CUDA)
            scaler.load_state_dict(ckpt["scaler"])
        guard.load_state_dict(ckpt["guard"])
        tr = saved = ckpt["trainer"]
        step, lr_scale, rollbacks = tr["step"], tr["lr_scale"], tr["rollbacks"]
        solved_step, wall_before = tr["solved_step"], tr["wall_time"]
        history, last_metrics = list(tr["history"]), dict(tr["last_metrics"])
        rngs = ckpt["rng"]
        if len(rngs) == dist_info.world_size:  # same layout: continue every stream exactly
            mine = rngs[dist_info.rank]
            train_gen.set_state(mine["train_gen"])
            _set_rng_state(mine["global"], device)
            carry = _to_device(mine["carry"], device)
            if mine.get("task") is not None and hasattr(task, "load_state_dict"):
                task.load_state_dict(mine["task"])  # e.g. a text stream's position

    ddp_model: nn.Module = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward = SequenceCall(ddp_model, _output_size(task), takes_state=accepts_state(model))

    # ---- callbacks: writers on rank 0 only, user callbacks on every rank
    builtin: list[Callback] = []
    writer: MetricsWriter | None = None
    if dist_info.is_main:
        if out is not None:
            writer = MetricsWriter(out)
            # A fresh start drops lines from an earlier attempt; a resume those after its checkpoint.
            writer.truncate_after(step if ckpt is not None else -1)
            builtin.append(writer)
            use_tb = config.tensorboard
            if use_tb or (use_tb is None and tensorboard_available()):
                builtin.append(TensorBoardWriter(out))
        builtin.append(ProgressBar(config.progress))
    callbacks = builtin + user_callbacks

    ctx = TrainContext(
        model=model,
        task=task,
        config=config,
        recipe=recipe,
        optimizer=optimizer,
        scheduler=scheduler,
        guard=guard,
        scaler=scaler,
        device=device,
        dist=dist_info,
        out=out,
        step=step,
        history=history,
    )
    metric_name = ctx.metric_name
    eval_bs = config.eval_batch_size or config.batch_size
    stateful = bool(getattr(task, "stateful", False))

    def run_eval() -> dict[str, float]:
        return evaluate(
            model,
            task,
            batches=config.eval_batches,
            batch_size=eval_bs,
            seed=config.seed,
            device=device,
            amp=amp,
        )

    def snapshot() -> dict[str, Any]:
        # Kept in host memory: on a GPU a second copy of the weights and the optimiser state
        # would cost as much device memory as the training itself.
        return {
            "step": ctx.step,
            "model": _host_copy(model.state_dict()),
            "optimizer": _host_copy(optimizer.state_dict()),
        }

    def save_checkpoint() -> None:
        mine = {
            "train_gen": train_gen.get_state(),
            "global": _rng_state(device),
            "carry": _to_device(carry, torch.device("cpu")),
            "task": task.state_dict() if callable(getattr(task, "state_dict", None)) else None,
        }
        rngs = distributed.all_gather_object(mine, dist_info)
        if dist_info.is_main and out is not None:
            payload = {
                "version": 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "guard": guard.state_dict(),
                "rng": rngs,
                "trainer": {
                    "step": ctx.step,
                    "lr_scale": lr_scale,
                    "rollbacks": rollbacks,
                    "solved_step": solved_step,
                    "wall_time": wall_before + (time.time() - t0),
                    "history": history,
                    "last_metrics": last_metrics,
                    "last_eval_step": last_eval_step,
                    "bad_streak": bad_streak,
                    "diverged": diverged,
                    # The rollback target, unless it is this very state (the usual case when
                    # checkpoints follow evaluations): a resumed run rolls back to the same place.
                    "good": None if good["step"] == ctx.step else good,
                },
                "recipe": recipe.to_dict(),
                "config": config.to_dict(),
                "task": {"name": ctx.task_name, "length": getattr(task, "length", None)},
            }
            atomic_torch_save(out / CHECKPOINT_DIR / f"ckpt-{ctx.step:08d}.pt", payload)
            for old in checkpoint_paths(out)[: -config.keep_last]:
                old.unlink(missing_ok=True)
        distributed.barrier(dist_info)

    def publish_eval(metrics: dict[str, float], **extra: Any) -> None:
        # Record an evaluation in the history and hand it to the callbacks.
        ctx.last_eval_record = {
            "kind": "eval",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "metric_name": metric_name,
            "solved": solved,
            **extra,
            **metrics,
        }
        history.append(ctx.last_eval_record)
        for cb in callbacks:
            cb.on_eval_end(ctx, metrics)

    def flush_extra() -> None:
        for rec in ctx.extra_records:
            if writer is not None:
                writer.write(rec)
        ctx.extra_records.clear()

    t0 = time.time()
    # A callback may draw a probe batch from the task here (HorizonMonitor does); a task that
    # reads a stream (text) must not notice, or a resumed run would read other windows.
    stream_state = (
        copy.deepcopy(task.state_dict()) if callable(getattr(task, "state_dict", None)) else None
    )
    for cb in callbacks:
        cb.on_train_start(ctx)
    if stream_state is not None and callable(getattr(task, "load_state_dict", None)):
        task.load_state_dict(stream_state)
    good = saved.get("good") or snapshot()
    bad_streak = int(saved.get("bad_streak", 0))
    diverged = bool(saved.get("diverged", False))
    last_eval_step = int(saved.get("last_eval_step", step if last_metrics else -1))
    solved = solved_step is not None
    if (solved and config.stop_when_solved) or diverged:
        ctx.should_stop = True  # a finished run stays finished

    while ctx.step < config.steps and not ctx.should_stop:
        model.train()
        x, y = task.batch(config.batch_size, train_gen)
        x, y = _to_device(x, device), _to_device(y, device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            output, new_state = forward(x, carry)
            loss = task.loss(output, y)
        if stateful:
            carry = detach_state(new_state)  # truncated BPTT: keep the state, cut the graph
        scaler.scale(loss).backward()
        report = guard.step(optimizer, scaler=scaler, scheduler=scheduler)
        ctx.step += 1
        loss_value = float(loss.detach())
        # Decisions use the guard report only: it sees the all-reduced gradients, identical on
        # every rank, so all ranks roll back (or not) together.
        # fp16 loss-scale overflows are the scaler calibrating, not divergence.
        bad = report.exploded or (report.skipped and not report.overflow)
        bad_streak = bad_streak + 1 if bad else 0
        record: dict[str, Any] = {
            "kind": "train",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "loss": loss_value,
            "grad_norm": report.norm_before,
            "grad_norm_clipped": report.norm_after,
            "lr": optimizer.param_groups[0]["lr"],
            "clipped": report.clipped,
            "skipped": report.skipped,
            "overflow": report.overflow,
            "exploded": report.exploded,
            "explosions": guard.stats.exploded,
            "loss_scale": report.loss_scale,
            "time": round(wall_before + time.time() - t0, 3),
        }
        record["logged"] = bad or ctx.step % config.log_every == 0 or ctx.step == config.steps
        if record["logged"]:
            history.append(record)
        for cb in callbacks:
            cb.on_step_end(ctx, record)

        if bad_streak >= config.divergence_patience:
            rollbacks += 1
            bad_streak = 0
            event: dict[str, Any] = {
                "kind": "event",
                "step": ctx.step,
                "epoch": ctx.epoch,
                "event": "rollback",
                "rollbacks": rollbacks,
            }
            if rollbacks > config.max_rollbacks:
                diverged = True
                event["event"] = "diverged"
                ctx.should_stop = True
            else:
                model.load_state_dict(good["model"])
                optimizer.load_state_dict(good["optimizer"])
                lr_scale *= config.lr_backoff
                scheduler.scale_base_lr(config.lr_backoff)
                carry = None
                event["lr_scale"] = lr_scale
            history.append(event)
            ctx.extra_records.append(event)
            logger.warning(
                "step %d: %d consecutive non-finite/exploding steps: %s",
                ctx.step,
                config.divergence_patience,
                "giving up (diverged)"
                if diverged
                else f"rolled back to the last good weights, learning rate x{lr_scale:g}",
            )

        at_end = ctx.step >= config.steps
        if (config.eval_every and ctx.step % config.eval_every == 0) or at_end:
            last_metrics = run_eval()
            last_eval_step = ctx.step
            value = last_metrics.get(metric_name, float("nan"))
            if not solved and task.is_solved(value):
                solved, solved_step = True, ctx.step
            publish_eval(last_metrics, time=round(wall_before + time.time() - t0, 3))
            if bad_streak == 0 and math.isfinite(value):
                good = snapshot()  # the weights just evaluated are a safe place to come back to
            if solved and config.stop_when_solved:
                ctx.should_stop = True
        flush_extra()
        if dist_info.enabled and (at_end or ctx.step % max(1, config.eval_every or 1) == 0):
            ctx.should_stop = bool(distributed.broadcast_object(ctx.should_stop, dist_info))
        stopping = ctx.should_stop or ctx.step >= config.steps
        if out is not None and (
            stopping or (config.checkpoint_every and ctx.step % config.checkpoint_every == 0)
        ):
            save_checkpoint()

    if last_eval_step != ctx.step:  # e.g. steps=0 or stopped by a callback between evaluations
        last_metrics = run_eval()
        publish_eval(last_metrics)
        flush_extra()

    from rnnguard.models import count_parameters

    stats = distributed.reduce_counts(guard.stats.to_dict(), dist_info)
    result = FitResult(
        steps=ctx.step,
        solved=solved,
        solved_step=solved_step,
        metrics=last_metrics,
        history=history,
        guard_stats=stats,
        diverged=diverged,
        wall_time=wall_before + time.time() - t0,
        metric_name=metric_name,
        rollbacks=rollbacks,
        num_params=count_parameters(model),
        recipe=recipe.to_dict(),
        out=str(out) if out else None,
    )
    if dist_info.is_main and out is not None:
        from rnnguard.utils.io import atomic_write_json

        summary = {k: v for k, v in result.to_dict().items() if k != "history"}
        atomic_write_json(out / "result.json", summary)
    for cb in callbacks:
        cb.on_train_end(ctx, result)
    return result
