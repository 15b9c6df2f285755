"""The doctor on a finished ``rnnguard train`` run: its trained model against its initialisation.

A run folder holds what is needed: the last checkpoint (recipe, task, task arguments, seed and
weights) and ``metrics.jsonl`` (the explosion history). :func:`doctor_run` rebuilds the task and
the model, loads the trained weights, and diagnoses them on the run's own task and data together
with the same model as the run's seed initialised it, on the same batch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnguard.diagnose.doctor import Diagnosis, DoctorConfig, doctor
from rnnguard.diagnose.horizon import Horizon
from rnnguard.errors import ConfigError
from rnnguard.train.checkpoint import checkpoint_paths, latest_checkpoint
from rnnguard.train.recipes import Recipe

__all__ = ["RunDiagnosis", "TrainedRun", "doctor_run", "load_run"]


@dataclass
class TrainedRun:
    """What a run folder says about its model, task and data."""

    folder: Path
    recipe: Recipe
    task_name: str
    length: int | None
    task_args: dict[str, Any]
    seed: int
    step: int
    weights: dict[str, torch.Tensor] = field(repr=False)

    def build_task(self, task_args: dict[str, Any] | None = None, length: int | None = None) -> Any:
        """The run's task (``task_args`` replace the saved ones, e.g. a moved text file)."""
        from rnnguard.tasks import create_task

        kwargs = {**self.task_args, **(task_args or {})}
        return create_task(self.task_name, length=length or self.length, **kwargs)

    def initial_model(self, task: Any) -> nn.Module:
        """The model as the run's seed initialised it (the trainer seeds, then builds)."""
        torch.manual_seed(self.seed)
        return self.recipe.build_model(task.spec, length=getattr(task, "length", None))

    def trained_model(self, task: Any) -> nn.Module:
        """The model with the checkpoint's weights."""
        model = self.initial_model(task)
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(
                f"--run: the checkpoint's weights do not fit recipe {self.recipe.name!r} on task "
                f"{self.task_name!r} ({first}); was the run trained on a model of its own?"
            ) from exc
        return model


def load_run(folder: str | Path) -> TrainedRun:
    """Read a run folder written by ``rnnguard train --out`` (or ``fit`` with ``out=``)."""
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"--run must be a training run folder, got {str(folder)!r}")
    if not checkpoint_paths(path):
        raise ConfigError(
            f"--run: {str(folder)!r} holds no checkpoint; train with --out to keep one"
        )
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise ConfigError(f"--run: {str(folder)!r} holds no readable checkpoint")
    try:
        config = ckpt["config"]
        task = ckpt["task"]
        return TrainedRun(
            folder=path,
            recipe=Recipe.from_dict(ckpt["recipe"]),
            task_name=str(task["name"]),
            length=task.get("length"),
            task_args=dict(config.get("extra", {}).get("task_args") or {}),
            seed=int(config.get("seed", 0)),
            step=int(ckpt["trainer"]["step"]) if "trainer" in ckpt else -1,
            weights=ckpt["model"],
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"--run: the checkpoint in {str(folder)!r} lacks {exc}; was it written by rnnguard?"
        ) from exc


@dataclass
class RunDiagnosis:
    """The trained model's diagnosis and the same model's at initialisation (same batch)."""

    run: TrainedRun
    trained: Diagnosis
    initial: Diagnosis

    def comparison(self) -> str:
        """Side by side: after training, and at initialisation."""
        t, i = self.trained, self.initial
        lines = [
            f"after {self.run.step} training steps vs at initialisation (same batch, seed "
            f"{self.run.seed}):",
            f"  verdict: {', '.join(t.verdicts)}  (at initialisation: {', '.join(i.verdicts)})",
            f"  input gradient horizon: {_reach(t.horizons.input)}, per-step factor "
            f"{_factor(t.horizons.input)}  (at initialisation: {_reach(i.horizons.input)}, "
            f"{_factor(i.horizons.input)})",
            f"  far-past gradient share: {t.horizons.input.far_ratio:.3g}  (at initialisation: "
            f"{i.horizons.input.far_ratio:.3g})",
        ]
        for label, spec in t.spectra.items():
            before = i.spectra.get(label)
            was = f"{before.top_lyapunov:.4g}" if before is not None else "n/a"
            lines.append(
                f"  {label}: top Lyapunov exponent {spec.top_lyapunov:.4g}/step  "
                f"(at initialisation: {was})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: both diagnoses and where they came from."""
        return {
            "run": str(self.run.folder),
            "recipe": self.run.recipe.name,
            "task": self.run.task_name,
            "step": self.run.step,
            "trained": self.trained.to_dict(),
            "initial": self.initial.to_dict(),
        }


def _reach(h: Horizon) -> str:
    return f"{h.horizon} steps" if h.horizon is not None else f"beyond {h.max_distance} steps"


def _factor(h: Horizon) -> str:
    return f"{math.exp(h.rate):.4g}" if math.isfinite(h.rate) else "n/a"


def doctor_run(
    folder: str | Path,
    *,
    config: DoctorConfig | None = None,
    task_args: dict[str, Any] | None = None,
    length: int | None = None,
    history: Any = None,
    progress: bool | None = None,
) -> RunDiagnosis:
    """Diagnose a run's trained model on its own task and data, and the model at initialisation.

    ``history`` defaults to the run's ``metrics.jsonl`` (its explosions count as evidence for the
    trained model); ``task_args``/``length`` override the saved task's (e.g. a text file that
    moved, or a longer length to probe); ``progress`` as for :func:`doctor`.
    """
    run = load_run(folder)
    task = run.build_task(task_args, length)
    cfg = config if config is not None else DoctorConfig()
    # A streaming task (text) moves on as it is read: both diagnoses start from the same place.
    state = (
        copy.deepcopy(task.state_dict()) if callable(getattr(task, "state_dict", None)) else None
    )
    metrics = run.folder / "metrics.jsonl"
    hist = history if history is not None else (run.folder if metrics.exists() else None)
    trained = doctor(
        run.trained_model(task),
        task,
        config=cfg,
        history=hist,
        recipe=run.recipe.name,
        progress=progress,
    )
    if state is not None:
        task.load_state_dict(copy.deepcopy(state))
    initial = doctor(
        run.initial_model(task), task, config=cfg, recipe=run.recipe.name, progress=progress
    )
    trained.task_args = initial.task_args = {**run.task_args, **(task_args or {})}
    return RunDiagnosis(run, trained, initial)
