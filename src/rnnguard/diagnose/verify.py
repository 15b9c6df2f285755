"""Verify a prescription: train the original and the prescribed recipe for the same short budget.

Both runs use the same task, seeds, batch size and number of steps. The report holds both loss
curves, both final held-out losses and metrics, and the input gradient horizon of each model before
and after training. Nothing is assumed about which one wins: the statement says what happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.diagnose.horizon import input_horizon
from rnnguard.errors import ConfigError
from rnnguard.train.model_call import ModelCall
from rnnguard.utils.checks import integer

__all__ = ["ArmResult", "VerifyReport", "plain_training_recipe", "verify"]

#: Relative difference of final losses below which the two runs are called even.
TIE_TOLERANCE = 0.05


@dataclass
class ArmResult:
    """One trained run: its loss curve, final held-out numbers and horizons before/after."""

    label: str
    recipe: str
    steps: list[int]
    losses: list[float]
    final_loss: float
    metric_name: str
    metric: float
    solved: bool
    horizon_before: dict[str, Any]
    horizon_after: dict[str, Any]
    wall_time: float
    explosions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {k: _clean(v) for k, v in self.__dict__.items()}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


@dataclass
class VerifyReport:
    """Both runs side by side and a one-line statement of the outcome."""

    original: ArmResult
    prescribed: ArmResult
    task: str
    length: int
    steps: int
    seed: int
    batch_size: int
    statement: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "statement": self.statement,
            "task": self.task,
            "length": self.length,
            "steps": self.steps,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "original": self.original.to_dict(),
            "prescribed": self.prescribed.to_dict(),
            "settings": self.settings,
        }


def plain_training_recipe() -> Any:
    """How a user model is trained for comparison: Adam 1e-3, constant rate, no clipping."""
    from rnnguard.train.config import GuardConfig, OptimConfig, ScheduleConfig
    from rnnguard.train.recipes import Recipe

    return Recipe(
        name="user-model",
        description="the user's model trained plainly: Adam 1e-3, constant rate, no clipping",
        optimizer=OptimConfig(name="adam", lr=1e-3),
        schedule=ScheduleConfig(name="constant"),
        guard=GuardConfig(mode="none"),
    )


def _horizon_summary(model: nn.Module, x: Tensor) -> dict[str, Any]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        hz = input_horizon(model, x.to(device))
    except ConfigError as exc:
        return {"error": str(exc)}
    return {
        "horizon": hz.horizon,
        "rate_per_step": hz.rate if math.isfinite(hz.rate) else None,
        "far_ratio": hz.far_ratio if math.isfinite(hz.far_ratio) else None,
        "max_distance": hz.max_distance,
    }


def _arm(
    label: str,
    model: nn.Module,
    recipe: Any,
    task: Any,
    config: Any,
    probe: Tensor,
) -> ArmResult:
    from rnnguard.train.trainer import fit

    before = _horizon_summary(model, probe)
    result = fit(model, task, config, recipe=recipe)
    train = [r for r in result.history if r.get("kind") == "train"]
    return ArmResult(
        label=label,
        recipe=recipe.name,
        steps=[int(r["step"]) for r in train],
        losses=[float(r["loss"]) for r in train],
        final_loss=float(result.metrics.get("loss", math.nan)),
        metric_name=result.metric_name,
        metric=result.metric,
        solved=result.solved,
        horizon_before=before,
        horizon_after=_horizon_summary(model, probe),
        wall_time=result.wall_time,
        explosions=int(result.guard_stats.get("exploded", 0) or 0),
    )


def _statement(orig: ArmResult, pres: ArmResult, steps: int) -> str:
    a, b = orig.final_loss, pres.final_loss
    head = (
        f"after {steps} steps each, the prescribed {pres.recipe} reached held-out loss {b:.4g} "
        f"({pres.metric_name} {pres.metric:.4g}) against {a:.4g} ({orig.metric_name} {orig.metric:.4g}) "
        f"for the original {orig.recipe}"
    )
    if not (math.isfinite(a) and math.isfinite(b)):
        verdict = "at least one run did not end with a finite loss"
    elif abs(a - b) <= TIE_TOLERANCE * max(abs(a), abs(b)):
        verdict = "no clear difference at this budget"
    elif b < a:
        verdict = "the prescription did better"
    else:
        verdict = "the original did better at this budget"
    return f"{head}: {verdict}."


def verify(
    original: Any,
    prescribed: Any,
    task: Any,
    *,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    original_recipe: Any = None,
) -> VerifyReport:
    """Train ``original`` and ``prescribed`` for ``steps`` each on ``task`` with the same seeds.

    ``original``: a recipe name / Recipe, an nn.Module, or a zero-argument factory returning one
    (modules are trained with ``original_recipe`` or :func:`plain_training_recipe`).
    ``prescribed``: a recipe name, Recipe or :class:`~rnnguard.diagnose.doctor.Prescription`.
    """
    from rnnguard.train.config import TrainConfig
    from rnnguard.train.recipes import Recipe, get_recipe

    integer("steps", steps, minimum=1)
    integer("batch_size", batch_size, minimum=1)
    if not (hasattr(task, "batch") and hasattr(task, "spec")):
        raise TypeError(f"task must be a Task (see rnnguard.tasks), got {type(task).__name__}")
    length = int(getattr(task, "length", 0))
    if hasattr(prescribed, "build") and hasattr(prescribed, "overrides"):
        prescribed = prescribed.build()
    pres_recipe = get_recipe(prescribed) if isinstance(prescribed, str) else prescribed
    if not isinstance(pres_recipe, Recipe):
        raise TypeError(
            f"prescribed must be a recipe name, Recipe or Prescription, got {type(prescribed).__name__}"
        )

    def build(recipe: Recipe) -> nn.Module:
        torch.manual_seed(seed)  # the same initialisation stream fit() itself would use
        return recipe.build_model(task.spec, length=length)

    if isinstance(original, (str, Recipe)):
        orig_recipe = get_recipe(original) if isinstance(original, str) else original
        orig_model = build(orig_recipe)
    else:
        if not isinstance(original, nn.Module):
            if not callable(original):
                raise TypeError(
                    f"original must be a recipe, an nn.Module or a factory, got {type(original).__name__}"
                )
            torch.manual_seed(seed)
            original = _call_factory(original)
        # Any model that maps a batch to predictions: the first tensor it returns is taken.
        orig_model = ModelCall(original, per_step=False, nested=True)
        orig_recipe = original_recipe if original_recipe is not None else plain_training_recipe()
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
        eval_every=0,
        eval_batches=2,
        progress=False,
        stop_when_solved=False,
        log_every=1,
        checkpoint_every=0,
        tensorboard=False,
    )
    probe, _ = task.batch(min(batch_size, 16), torch.Generator().manual_seed(seed + 7))
    orig = _arm("original", orig_model, orig_recipe, task, config, probe)
    pres = _arm("prescribed", build(pres_recipe), pres_recipe, task, config, probe)
    return VerifyReport(
        original=orig,
        prescribed=pres,
        task=str(getattr(task, "name", type(task).__name__)),
        length=length,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        statement=_statement(orig, pres, steps),
        settings={
            "original_recipe": orig_recipe.to_dict(),
            "prescribed_recipe": pres_recipe.to_dict(),
        },
    )


def _call_factory(factory: Callable[..., Any]) -> nn.Module:
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"the model factory must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model
