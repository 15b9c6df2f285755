"""Guarded training: GradientGuard, optimisers, schedules, recipes, the trainer and DDP support.

Names are loaded on first use so that ``rnnguard --help`` (which imports the ``commands``
submodule) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GradientGuard": "guard",
    "GuardReport": "guard",
    "GuardStats": "guard",
    "build_optimizer": "optim",
    "param_groups": "optim",
    "WarmupCosineLR": "schedule",
    "build_scheduler": "schedule",
    "warmup_cosine": "schedule",
    "GuardConfig": "config",
    "OptimConfig": "config",
    "ScheduleConfig": "config",
    "TrainConfig": "config",
    "Recipe": "recipes",
    "get_recipe": "recipes",
    "list_recipes": "recipes",
    "register_recipe": "recipes",
    "Callback": "callbacks",
    "FitResult": "state",
    "TrainContext": "state",
    "evaluate": "evaluation",
    "fit": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rnnguard.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rnnguard.train' has no attribute {name!r}")
