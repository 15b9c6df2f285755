"""The run file: what a run trains, written before its first step so a resume cannot change it.

``run.json`` in the output folder holds the recipe, the training configuration, the task and the
model's parameter shapes. A resume rebuilds the run from it (the CLI does) and is refused when
what would be trained differs: the model (recipe layer fields, parameter shapes), the task or the
seed. Budget, optimiser, schedule, guard and logging settings may change on resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import Recipe
from rnnguard.utils.io import atomic_write_json

__all__ = [
    "RUN_FILE",
    "describe_run",
    "read_run_file",
    "run_differences",
    "shape_differences",
    "write_run_file",
]

RUN_FILE = "run.json"
RUN_FORMAT = "rnnguard-run"
RUN_VERSION = 1
# The recipe fields that decide which model is built; the rest say how it is trained.
MODEL_FIELDS = (
    "layer",
    "hidden_size",
    "num_layers",
    "embedding_dim",
    "layer_kwargs",
    "init",
    "init_kwargs",
)


def parameter_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Name -> shape of every entry of the model's state dict."""
    return {k: list(v.shape) for k, v in model.state_dict().items() if hasattr(v, "shape")}


def task_identity(task: Any) -> dict[str, Any]:
    """The task's name and sequence length, as recorded with a run."""
    return {
        "name": str(getattr(task, "name", type(task).__name__)),
        "length": getattr(task, "length", None),
    }


def describe_run(
    recipe: Recipe, config: TrainConfig, task: Any, model: nn.Module
) -> dict[str, Any]:
    """The content of a run file for this run."""
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "recipe": recipe.to_dict(),
        "config": {**config.to_dict(), "resume": False},
        "task": task_identity(task),
        "parameters": parameter_shapes(model),
    }


def write_run_file(out: Path, run: dict[str, Any]) -> None:
    """Atomically (re)write ``out/run.json``."""
    atomic_write_json(out / RUN_FILE, run)


def read_run_file(out: str | Path) -> dict[str, Any] | None:
    """The run file of ``out`` (None if there is none); a damaged one is a one-line ConfigError."""
    path = Path(out) / RUN_FILE
    if not path.exists():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"run file {str(path)!r} must be readable JSON, got: {exc}") from exc
    missing = [k for k in ("recipe", "config", "task") if not isinstance(run, dict) or k not in run]
    if missing or run.get("format") != RUN_FORMAT:
        raise ConfigError(
            f"run file {str(path)!r} must be an rnnguard run file, got one "
            + (f"missing {missing}" if missing else f"of format {run.get('format')!r}")
        )
    return dict(run)


def _model_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    return {k: recipe.get(k) for k in MODEL_FIELDS}


def shape_differences(saved: dict[str, Any], current: dict[str, list[int]]) -> list[str]:
    """How saved parameter shapes (name -> shape) differ from the current model's."""
    saved = {k: list(v) for k, v in saved.items()}
    diffs = [f"parameter {k} missing" for k in saved if k not in current]
    diffs += [f"unexpected parameter {k}" for k in current if k not in saved]
    diffs += [
        f"{k} has shape {tuple(saved[k])}, the model {tuple(current[k])}"
        for k in saved
        if k in current and saved[k] != current[k]
    ]
    return diffs


def run_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What would be trained differently: model, task or seed (empty when it is the same run)."""
    current = json.loads(json.dumps(current, default=str))  # compare as it would be saved
    diffs: list[str] = []
    old_model, new_model = _model_fields(saved.get("recipe", {})), _model_fields(current["recipe"])
    for key in MODEL_FIELDS:
        if old_model[key] != new_model[key]:
            diffs.append(f"recipe {key} {old_model[key]!r} -> {new_model[key]!r}")
    for key in ("name", "length"):
        old, new = saved.get("task", {}).get(key), current["task"][key]
        if old != new:
            diffs.append(f"task {key} {old!r} -> {new!r}")
    old_cfg, new_cfg = saved.get("config", {}), current["config"]
    if old_cfg.get("seed") != new_cfg.get("seed"):
        diffs.append(f"seed {old_cfg.get('seed')!r} -> {new_cfg.get('seed')!r}")
    old_args = old_cfg.get("extra", {}).get("task_args")
    new_args = new_cfg.get("extra", {}).get("task_args")
    if old_args is not None and new_args is not None and old_args != new_args:
        diffs.append(f"task arguments {old_args!r} -> {new_args!r}")
    if not diffs and "parameters" in saved:
        diffs = shape_differences(saved["parameters"], current["parameters"])[:3]
    return diffs
