"""Guarded training: GradientGuard, optimisers, schedules, recipes, the trainer and DDP support."""

from rnnguard.train.callbacks import Callback
from rnnguard.train.config import GuardConfig, OptimConfig, ScheduleConfig, TrainConfig
from rnnguard.train.evaluation import evaluate
from rnnguard.train.guard import GradientGuard, GuardReport, GuardStats
from rnnguard.train.optim import build_optimizer, param_groups
from rnnguard.train.recipes import Recipe, get_recipe, list_recipes, register_recipe
from rnnguard.train.schedule import WarmupCosineLR, build_scheduler, warmup_cosine
from rnnguard.train.state import FitResult, TrainContext
from rnnguard.train.trainer import fit

__all__ = [
    "Callback",
    "FitResult",
    "GradientGuard",
    "GuardConfig",
    "GuardReport",
    "GuardStats",
    "OptimConfig",
    "Recipe",
    "ScheduleConfig",
    "TrainConfig",
    "TrainContext",
    "WarmupCosineLR",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "get_recipe",
    "list_recipes",
    "param_groups",
    "register_recipe",
    "warmup_cosine",
]
