"""Every registered recipe builds and trains a few steps on adding, copy and a text language model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnguard.nn.registry import list_layers
from rnnguard.tasks import create_task
from rnnguard.train.checkpoint import checkpoint_paths
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import Recipe, get_recipe, list_recipes
from rnnguard.train.trainer import fit

from .helpers import Crash

RECIPES = list(list_recipes())
TASKS = ("adding", "copy", "text")
CFG = TrainConfig(
    steps=3, batch_size=4, eval_every=0, eval_batches=1, progress=False, stop_when_solved=False
)
# A few hundred characters with some repetition: enough for 4 streams of 8-step windows.
TEXT = "the quick brown fox jumps over the lazy dog. " * 14


def _task(name: str, tmp_path: Path) -> Any:
    if name == "text":
        path = tmp_path / "corpus.txt"
        path.write_text(TEXT, encoding="utf-8")
        return create_task("text", length=8, path=str(path), eval_streams=4)
    return create_task(name, length={"adding": 8, "copy": 3}[name])


def _small(name: str) -> Recipe:
    recipe = get_recipe(name)
    if recipe.layer not in list_layers():
        pytest.skip(f"layer {recipe.layer!r} not in this build")
    return recipe.replace(hidden_size=8)


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_on_task(name: str, task_name: str, tmp_path: Path) -> None:
    recipe = _small(name)
    task = _task(task_name, tmp_path)
    torch.manual_seed(0)
    result = fit(recipe, task, CFG)
    assert result.steps == 3 and not result.diverged
    assert result.guard_stats["steps"] == 3 and result.guard_stats["skipped"] == 0
    losses = [r["loss"] for r in result.history if r["kind"] == "train"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result.metric), result.metrics
    assert result.metric_name == task.metric_name and result.recipe["name"] == name


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_yaml_round_trip_trains_the_same(name: str, tmp_path: Path) -> None:
    recipe = _small(name)
    path = tmp_path / f"{name}.yaml"
    recipe.to_yaml(path)
    loaded = Recipe.from_yaml(path)
    assert loaded == recipe and loaded.to_dict() == recipe.to_dict()
    assert Recipe.from_yaml(loaded.to_yaml()) == recipe
    task = _task("adding", tmp_path)
    a = fit(recipe, task, CFG)
    b = fit(loaded, task, CFG)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert a.metrics == b.metrics


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_resumes_exactly_on_text(name: str, tmp_path: Path) -> None:
    # The text task is the demanding case: a carried state and a stream position to restore.
    recipe = _small(name)
    cfg = CFG.replace(steps=4, checkpoint_every=2)
    full = fit(recipe, _task("text", tmp_path), cfg.replace(out=str(tmp_path / "a")))
    with pytest.raises(RuntimeError, match="simulated"):
        fit(recipe, _task("text", tmp_path), cfg.replace(out=str(tmp_path / "b")), [Crash(3)])
    resumed = fit(
        recipe, _task("text", tmp_path), cfg.replace(out=str(tmp_path / "b"), resume=True)
    )
    assert resumed.steps == 4 and resumed.metrics == full.metrics
    a = torch.load(checkpoint_paths(tmp_path / "a")[-1], weights_only=False)["model"]
    b = torch.load(checkpoint_paths(tmp_path / "b")[-1], weights_only=False)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
