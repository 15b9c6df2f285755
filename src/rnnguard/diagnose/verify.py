"""Verify a prescription: train the original and the prescribed recipe until one is decided.

The prescription trains first, until it solves the task, its step cap or its half of the time
budget; the original then trains for at most as many steps (same task, seeds and batch size), so
both end on an equal budget. The report holds both loss curves and held-out curves, the final
numbers, the input gradient horizons before and after training, and a verdict
(:func:`decide`): *cure confirmed*, *no difference*, *original better* or *inconclusive*. Nothing
is assumed about which one wins. :func:`verify_length` picks a task length where the diagnosis
predicts a difference: a few times the original's gradient horizon.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.diagnose.horizon import input_horizon
from rnnguard.errors import ConfigError
from rnnguard.train.callbacks import Callback
from rnnguard.train.model_call import ModelCall
from rnnguard.utils.checks import integer, number

__all__ = [
    "VERDICTS",
    "ArmResult",
    "VerifyReport",
    "decide",
    "plain_training_recipe",
    "verify",
    "verify_length",
]

#: Relative difference of final losses below which the two runs are called even.
TIE_TOLERANCE = 0.05
#: One side solving in at most this fraction of the other's steps counts as faster.
FASTER = 0.5
VERDICTS = ("cure confirmed", "no difference", "original better", "inconclusive")


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
    solved_step: int | None = None
    steps_run: int = 0
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    """Held-out (step, metric) at each evaluation."""
    stopped_by_time: bool = False

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
    verdict: str = "inconclusive"
    time_budget: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "statement": self.statement,
            "verdict": self.verdict,
            "time_budget": self.time_budget,
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


class _TimeLimit(Callback):
    """Stop training after ``seconds`` (None: no limit); ``hit`` says whether it did."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds, self.start, self.hit = seconds, 0.0, False

    def on_train_start(self, ctx: Any) -> None:
        self.start = time.monotonic()

    def on_step_end(self, ctx: Any, record: dict[str, Any]) -> None:
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            self.hit = ctx.should_stop = True


def _arm(
    label: str,
    model: nn.Module,
    recipe: Any,
    task: Any,
    config: Any,
    probe: Tensor,
    seconds: float | None = None,
) -> ArmResult:
    from rnnguard.train.trainer import fit

    limit = _TimeLimit(seconds)
    before = _horizon_summary(model, probe)
    result = fit(model, task, config, recipe=recipe, callbacks=[limit])
    train = [r for r in result.history if r.get("kind") == "train"]
    evals = [r for r in result.history if r.get("kind") == "eval"]
    name = result.metric_name
    return ArmResult(
        label=label,
        recipe=recipe.name,
        steps=[int(r["step"]) for r in train],
        losses=[float(r["loss"]) for r in train],
        final_loss=float(result.metrics.get("loss", math.nan)),
        metric_name=name,
        metric=result.metric,
        solved=result.solved,
        horizon_before=before,
        horizon_after=_horizon_summary(model, probe),
        wall_time=result.wall_time,
        explosions=int(result.guard_stats.get("exploded", 0) or 0),
        solved_step=result.solved_step,
        steps_run=int(train[-1]["step"]) if train else 0,
        eval_curve=[(int(r["step"]), float(r.get(name, math.nan))) for r in evals],
        stopped_by_time=limit.hit,
    )


def decide(
    orig: ArmResult, pres: ArmResult, solvable: bool = True, higher_is_better: bool = False
) -> tuple[str, str]:
    """The verdict (one of :data:`VERDICTS`) and its reason, from two finished arms.

    On a task with a solved threshold, solving decides: the prescription solving within steps the
    original also ran, without the original solving, confirms the cure; solving in at most
    :data:`FASTER` of the other's steps counts as faster; neither solving is inconclusive. On a
    task without one (a language model), the held-out metric after equal steps decides, with
    :data:`TIE_TOLERANCE` as the margin.
    """
    a, b = orig.metric, pres.metric
    if not (math.isfinite(a) or math.isfinite(b)):
        return "inconclusive", "neither run ended with a finite metric"
    if solvable:
        if pres.solved and not orig.solved:
            if orig.steps_run >= (pres.solved_step or 0):
                return "cure confirmed", (
                    f"the prescription solved the task at step {pres.solved_step}; the original "
                    f"had not after {orig.steps_run} steps"
                )
            return "inconclusive", (
                f"the prescription solved at step {pres.solved_step}, but the original stopped "
                f"at step {orig.steps_run} (time budget) before reaching it"
            )
        if orig.solved and not pres.solved:
            if pres.steps_run >= (orig.solved_step or 0):
                return "original better", (
                    f"the original solved the task at step {orig.solved_step}; the prescription "
                    f"had not after {pres.steps_run} steps"
                )
            return "inconclusive", "the original solved it, on more steps than the prescription ran"
        if orig.solved and pres.solved:
            so, sp = orig.solved_step or 0, pres.solved_step or 0
            if sp <= FASTER * so:
                return (
                    "cure confirmed",
                    f"both solved; the prescription at step {sp}, the original at {so}",
                )
            if so <= FASTER * sp:
                return (
                    "original better",
                    f"both solved; the original at step {so}, the prescription at {sp}",
                )
            return "no difference", f"both solved, at steps {so} (original) and {sp} (prescription)"
        return "inconclusive", (
            f"neither solved the task within the budget ({orig.steps_run} and {pres.steps_run} "
            f"steps); held-out {pres.metric_name} {b:.4g} (prescription) vs {a:.4g} (original)"
        )
    if orig.steps_run < pres.steps_run:
        return "inconclusive", "the original ran fewer steps than the prescription (time budget)"
    if not math.isfinite(a):
        return "cure confirmed", "the original did not end with a finite metric"
    if not math.isfinite(b):
        return "original better", "the prescription did not end with a finite metric"
    if abs(a - b) <= TIE_TOLERANCE * max(abs(a), abs(b)):
        return (
            "no difference",
            f"held-out {pres.metric_name} {b:.4g} vs {a:.4g}, within {TIE_TOLERANCE:.0%}",
        )
    if (b > a) if higher_is_better else (b < a):
        return "cure confirmed", f"held-out {pres.metric_name} {b:.4g} against {a:.4g}"
    return "original better", f"held-out {pres.metric_name} {b:.4g} against {a:.4g}"


def verify_length(horizon: int | None, task_length: int, minimum: int = 20, factor: int = 4) -> int:
    """A task length where the diagnosis predicts a difference: ``factor`` times the original's
    input gradient horizon (at least ``minimum``), never longer than the task's own length.
    ``horizon=None`` (no vanishing found) keeps the task's length."""
    integer("task_length", task_length, minimum=1)
    if horizon is None:
        return task_length
    return max(min(task_length, minimum), min(task_length, factor * max(int(horizon), 1)))


def verify(
    original: Any,
    prescribed: Any,
    task: Any,
    *,
    steps: int = 3000,
    time_budget: float | None = 240.0,
    eval_every: int = 50,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    original_recipe: Any = None,
    progress: bool | None = None,
) -> VerifyReport:
    """Train ``prescribed``, then ``original`` on as many steps, on ``task`` with the same seeds.

    The prescription trains until it solves the task, ``steps`` or half of ``time_budget``
    seconds; the original gets at most the same number of steps (and the rest of the budget). The
    report's ``verdict`` comes from :func:`decide`.
    ``original``: a recipe name / Recipe, an nn.Module, or a zero-argument factory returning one
    (modules are trained with ``original_recipe`` or :func:`plain_training_recipe`).
    ``prescribed``: a recipe name, Recipe or :class:`~rnnguard.diagnose.doctor.Prescription`.
    """
    from rnnguard.train.config import TrainConfig
    from rnnguard.train.recipes import Recipe, get_recipe

    integer("steps", steps, minimum=1)
    integer("batch_size", batch_size, minimum=1)
    integer("eval_every", eval_every, minimum=1)
    if time_budget is not None:
        number("time_budget", time_budget, positive=True)
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
        orig_model: nn.Module | None = None
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
    solvable = has_solved_threshold(task)

    def config(n_steps: int) -> TrainConfig:
        return TrainConfig(
            steps=n_steps, batch_size=batch_size, seed=seed, device=device,
            eval_every=min(eval_every, n_steps), eval_batches=2, progress=progress,
            stop_when_solved=solvable, log_every=1, checkpoint_every=0, tensorboard=False,
        )  # fmt: skip

    probe, _ = task.batch(min(batch_size, 16), torch.Generator().manual_seed(seed + 7))
    t0 = time.monotonic()
    half = None if time_budget is None else time_budget / 2
    pres = _arm("prescribed", build(pres_recipe), pres_recipe, task, config(steps), probe, half)
    left = None if time_budget is None else max(half or 0.0, time_budget - (time.monotonic() - t0))
    orig_steps = max(1, pres.steps_run)
    model = orig_model if orig_model is not None else build(orig_recipe)
    orig = _arm("original", model, orig_recipe, task, config(orig_steps), probe, left)
    verdict, why = decide(orig, pres, solvable, bool(getattr(task, "higher_is_better", False)))
    return VerifyReport(
        original=orig,
        prescribed=pres,
        task=str(getattr(task, "name", type(task).__name__)),
        length=length,
        steps=orig_steps,
        seed=seed,
        batch_size=batch_size,
        statement=f"{verdict}: {why}.",
        settings={
            "original_recipe": orig_recipe.to_dict(),
            "prescribed_recipe": pres_recipe.to_dict(),
            "max_steps": steps,
            "eval_every": eval_every,
        },
        verdict=verdict,
        time_budget=time_budget,
    )


def has_solved_threshold(task: Any) -> bool:
    """Whether the task has a reachable solved threshold (a language model has none)."""
    threshold = getattr(task, "solved_threshold", None)
    if threshold is None:
        return False
    higher = bool(getattr(task, "higher_is_better", False))
    return bool(higher or threshold > 0)


def _call_factory(factory: Callable[..., Any]) -> nn.Module:
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"the model factory must return a torch.nn.Module, got {type(model).__name__}"
        )
    return model
