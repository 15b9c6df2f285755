"""Resuming a run: which checkpoint to continue from and putting its state back in place."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.train import distributed
from rnnguard.train.checkpoint import (
    checkpoint_folder,
    checkpoint_paths,
    latest_checkpoint,
    set_rng_state,
)
from rnnguard.train.config import TrainConfig
from rnnguard.train.device import to_device
from rnnguard.train.guard import GradientGuard
from rnnguard.train.recipes import Recipe
from rnnguard.train.run_config import read_run_file, run_differences
from rnnguard.train.state import Progress

__all__ = ["Restored", "find_checkpoint", "restore"]

logger = logging.getLogger(__name__)

_SCHEDULE_SETTINGS = ("kind", "warmup_steps", "min_lr_ratio", "warmup_start_ratio")


def find_checkpoint(
    config: TrainConfig, out: Path | None, run: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The checkpoint a run continues from (None for a fresh start).

    ``run`` describes what is about to be trained (:func:`~rnnguard.train.run_config.describe_run`).
    A resume that would train something else than the run file or the checkpoint says is refused;
    checkpoints of another model, task or format are skipped for the newest one that fits. A
    fresh start into a folder holding another run's checkpoints is refused: it would mix two
    runs' files.
    """
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out must be a folder, got file {str(out)!r}")
    checkpoint_folder(out)
    if config.resume:
        saved = read_run_file(out)
        if saved is not None and run is not None:
            _refuse_changes(run_differences(saved, run), out)
        accept = (lambda ckpt: _checkpoint_mismatch(ckpt, run)) if run is not None else None
        return latest_checkpoint(out, accept)
    if checkpoint_paths(out):
        raise ConfigError(
            f"out must not hold another run's checkpoints unless resuming, got {str(out)!r}; "
            "pass resume=True (--resume) or choose a new folder"
        )
    return None


def _refuse_changes(diffs: list[str], out: Path) -> None:
    if diffs:
        raise ConfigError(
            f"resume must train the run saved in {str(out)!r}, got changes: {'; '.join(diffs)} "
            "(start a new run in another folder to change them)"
        )


def _checkpoint_mismatch(ckpt: dict[str, Any], run: dict[str, Any]) -> str | None:
    """Why ``ckpt`` cannot continue ``run`` (None if it can)."""
    saved = {
        "recipe": ckpt["recipe"],
        "task": ckpt["task"] if isinstance(ckpt["task"], dict) else {},
        "config": ckpt["config"] if isinstance(ckpt["config"], dict) else {},
        "parameters": {k: list(v.shape) for k, v in ckpt["model"].items() if hasattr(v, "shape")},
    }
    diffs = run_differences(saved, run)
    return f"it belongs to another run ({'; '.join(diffs[:3])})" if diffs else None


@dataclass
class Restored:
    """What a checkpoint gives back besides the objects it loads into."""

    step: int
    history: list[dict[str, Any]]
    progress: Progress
    carry: Any = None
    """The recurrent state carried across batches (stateful tasks)."""


def restore(
    ckpt: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    guard: GradientGuard,
    recipe: Recipe,
    config: TrainConfig,
    train_gen: torch.Generator,
    task: Any,
    device: torch.device,
    dist_info: distributed.DistInfo,
    out: Path | None,
) -> Restored:
    """Load ``ckpt`` into the run's objects and return its position and progress."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise ConfigError(
            f"checkpoint in {str(out)!r} does not match this model: {str(exc).splitlines()[0]}"
        ) from exc
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    fresh_schedule = {k: getattr(scheduler, k) for k in _SCHEDULE_SETTINGS}
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    apply_recipe_changes(
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
    saved = ckpt["trainer"]
    restored = Restored(
        step=int(saved["step"]),
        history=list(saved["history"]),
        progress=Progress.from_checkpoint(saved),
    )
    rngs = ckpt["rng"]
    if len(rngs) == dist_info.world_size:  # same layout: continue every stream exactly
        mine = rngs[dist_info.rank]
        train_gen.set_state(mine["train_gen"])
        set_rng_state(mine["global"], device)
        restored.carry = to_device(mine["carry"], device)
        if mine.get("task") is not None and hasattr(task, "load_state_dict"):
            task.load_state_dict(mine["task"])  # e.g. a text stream's position
    return restored


def apply_recipe_changes(
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
