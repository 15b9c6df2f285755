"""The real training run of a benchmark grid: recipe + task + :func:`rnnguard.train.trainer.fit`,
with the input-gradient horizon measured at the start and the end, as a JSON-ready record."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from rnnguard.bench.grid import RunSpec

__all__ = ["CURVE_POINTS", "train_run"]

CURVE_POINTS = 60  # learning-curve points kept per run (the full history stays out of the store)


def _thin(points: list[list[float]], n: int = CURVE_POINTS) -> list[list[float]]:
    if len(points) <= n:
        return points
    stride = len(points) / n
    picked = [points[int(i * stride)] for i in range(n)]
    return [*picked[:-1], points[-1]]


def _horizon_batch(task: Any, spec: RunSpec) -> Any:
    import torch

    if getattr(task, "stateful", False) and hasattr(task, "data"):
        # A language model: a valid window, so the training stream's position is untouched.
        data = task.data.get("valid", task.data["train"])
        t = min(spec.length, data.numel() // 4)
        return data[: 4 * t].view(4, t)
    if spec.horizon_length and spec.horizon_length != spec.length:
        from rnnguard.tasks.registry import create_task

        task = create_task(spec.task, length=spec.horizon_length, **dict(spec.task_kwargs))
    x, _ = task.batch(8, torch.Generator().manual_seed(4242))
    return x


def _measure_horizon(model: Any, x: Any) -> dict[str, Any] | None:
    """Input gradient horizon of ``model`` on ``x`` (None when diagnostics are unavailable)."""
    try:
        from rnnguard.diagnose.horizon import input_horizon
    except ImportError:
        return None
    try:
        device = next(model.parameters()).device
        h = input_horizon(model, x.to(device), max_outputs=4)
    except Exception as exc:  # a diagnostic must never sink a benchmark run
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    norms = [float(v) for v in h.normalized]
    stride = max(1, len(norms) // CURVE_POINTS)
    return {
        "horizon": h.horizon,
        "max_distance": h.max_distance,
        "rate": float(h.rate),
        "far_ratio": float(h.far_ratio),
        "curve": [[k, norms[k]] for k in range(0, len(norms), stride)],
    }


def train_run(spec: RunSpec) -> dict[str, Any]:
    """Train one run of the grid and return its result record (JSON-ready)."""
    import torch

    from rnnguard.tasks.registry import create_task
    from rnnguard.train.callbacks import Callback
    from rnnguard.train.config import TrainConfig
    from rnnguard.train.recipes import get_recipe
    from rnnguard.train.trainer import fit

    task = create_task(spec.task, length=spec.length, **dict(spec.task_kwargs))
    recipe = get_recipe(spec.recipe)
    overrides: dict[str, Any] = {}
    if spec.hidden_size is not None:
        overrides["hidden_size"] = spec.hidden_size
    if spec.num_layers is not None:
        overrides["num_layers"] = spec.num_layers
    if overrides:
        recipe = recipe.replace(**overrides)
    horizons: dict[str, Any] = {}
    probe = _horizon_batch(task, spec) if spec.horizon else None

    class HorizonProbe(Callback):
        def on_train_start(self, ctx: Any) -> None:
            if probe is not None:
                horizons["init"] = _measure_horizon(ctx.model, probe)

        def on_train_end(self, ctx: Any, result: Any) -> None:
            if probe is not None:
                horizons["end"] = _measure_horizon(ctx.model, probe)

    config = TrainConfig(
        steps=spec.steps, batch_size=spec.batch_size, eval_every=spec.eval_every,
        eval_batches=spec.eval_batches, seed=spec.seed, device=spec.device, progress=False,
        steps_per_epoch=spec.steps_per_epoch, stop_when_solved=spec.kind == "length",
        tensorboard=False, log_every=max(1, spec.steps // 200),
    )  # fmt: skip
    result = fit(recipe, task, config, callbacks=[HorizonProbe()])
    train = [r for r in result.history if r.get("kind") == "train"]
    evals = [r for r in result.history if r.get("kind") == "eval"]
    metric_name = result.metric_name
    per_epoch = list(result.explosions_per_epoch)
    epochs = max(1, len(per_epoch), -(-result.steps // spec.steps_per_epoch))
    total_explosions = int(result.guard_stats.get("exploded", sum(per_epoch)))
    return {
        "status": "ok",
        "metric_name": metric_name,
        "metric": result.metric,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "solved": bool(result.solved),
        "solved_step": result.solved_step,
        "steps": result.steps,
        "wall_time": float(result.wall_time),
        "num_params": int(result.num_params),
        "explosions_total": total_explosions,
        "explosions_per_epoch": total_explosions / epochs,
        "explosions_by_epoch": per_epoch,
        "skipped_steps": int(result.guard_stats.get("skipped", 0)),
        "diverged": bool(result.diverged),
        "rollbacks": int(result.rollbacks),
        "blowups": int(result.blowups),
        "baseline": float(task.baseline),
        "threshold": float(task.solved_threshold),
        "higher_is_better": bool(task.higher_is_better),
        "curve": _thin([[r["step"], r.get("time", 0.0), r["loss"]] for r in train]),
        "eval_curve": [[r["step"], r.get("time", 0.0), r.get(metric_name)] for r in evals],
        "horizon_init": horizons.get("init"),
        "horizon_end": horizons.get("end"),
        "recipe_config": recipe.to_dict(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }
