"""The training objective, search spaces, `rnnguard tune` end to end and its errors."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnguard.cli import main
from rnnguard.errors import ConfigError, MissingExtraError
from rnnguard.tasks import AddingTask, create_task
from rnnguard.tasks.registry import register_task
from rnnguard.train.recipes import Recipe
from rnnguard.tune.objective import TrainObjective, _PruningCallback
from rnnguard.tune.search import search
from rnnguard.tune.space import CELLS, CLIP_MODES, INITS, get_space, list_spaces
from rnnguard.tune.study import FAIL_REASON_ATTR, PRUNED_REASON_ATTR, run_worker
from rnnguard.utils.io import read_jsonl

optuna = pytest.importorskip("optuna")
from optuna.trial import FixedTrial, TrialState  # noqa: E402

TINY = ["--task", "adding", "--length", "8", "--hidden-size", "8", "--batch-size", "8"]


class _NanTask(AddingTask):
    """Adding problem whose inputs are NaN: every loss is NaN."""

    def batch(self, batch_size, generator):  # type: ignore[no-untyped-def]
        x, y = super().batch(batch_size, generator)
        return torch.full_like(x, math.nan), y


def _fixed(layer: str, clip: str, init: str | None) -> dict[str, object]:
    params: dict[str, object] = {
        "layer": layer, "layer_norm": True, "nonlinearity": "relu", "residual": True,
        "forget_bias": 1.0, "zoneout": 0.1, "dropconnect": 0.1, "r_min": 0.5, "r_max": 0.99,
        "clip": clip, "max_norm": 1.0, "clip_value": 0.1, "percentile": 10.0, "agc_clip": 0.01,
        "lr": 1e-3, "weight_decay": 1e-4, "amsgrad": True, "warmup_fraction": 0.1,
    }  # fmt: skip
    if init is not None:
        params[f"init_{layer}"] = init
    return params


@pytest.mark.parametrize("layer", CELLS)
def test_every_suggested_recipe_builds_and_runs(layer: str) -> None:
    task = create_task("adding", length=6)
    space = get_space("default")
    for init in INITS.get(layer, (None,)):
        for clip in CLIP_MODES:
            recipe = space.suggest(FixedTrial(_fixed(layer, clip, init)), Recipe(hidden_size=4))
            assert recipe.layer == layer and recipe.guard.mode == clip
            assert recipe.optimizer.amsgrad is True and recipe.schedule.warmup_fraction == 0.1
            assert Recipe.from_yaml(recipe.to_yaml()) == recipe
            model = recipe.build_model(task.spec, length=task.length)
            out, _ = model(task.batch(2, torch.Generator().manual_seed(0))[0])
            assert out.shape == (2, 6, 1) and torch.isfinite(out).all()


def test_spaces_registry_and_unknown_space() -> None:
    assert {"default", "gated", "no-reg", "training"} <= set(list_spaces())
    assert get_space("gated").cells == ("lstm", "gru")
    with pytest.raises(ConfigError, match=r"unknown search space 'nope'; expected one of: default"):
        get_space("nope")
    # The 'training' space keeps the base model and varies only training settings.
    base = Recipe(layer="gru", hidden_size=4, layer_kwargs={"layer_norm": True})
    r = get_space("training").suggest(FixedTrial(_fixed("lstm", "norm", None)), base)
    assert (r.layer, r.layer_kwargs) == ("gru", {"layer_norm": True}) and r.guard.max_norm == 1.0


def test_nan_loss_trial_is_pruned_as_diverged(request: pytest.FixtureRequest) -> None:
    from rnnguard.tasks import registry

    # Registered for this test only, so other areas' task listings stay as they are.
    register_task("tune-nan-test")(_NanTask)
    request.addfinalizer(lambda: registry.TASKS.unregister("tune-nan-test"))
    study = optuna.create_study()
    objective = TrainObjective("tune-nan-test", 6, budget_steps=8, hidden_size=4, batch_size=4,
                               eval_every=4, eval_batches=1)  # fmt: skip
    run_worker(study, objective, 1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs[PRUNED_REASON_ATTR] == "diverged: non-finite loss (nan) at step 1"
    assert trial.user_attrs["diverged"] is True
    assert trial.user_attrs["recipe"]["hidden_size"] == 4


def test_repeated_blowups_prune_the_trial_and_clipped_spikes_do_not() -> None:
    study = optuna.create_study()
    trial = study.ask()
    cb = _PruningCallback(trial, explosion_patience=3)
    for step in range(1, 11):  # clipped, finite gradient spikes: counted, never pruned for
        cb.on_step_end(None, {"step": step, "loss": 1.0, "exploded": True, "blowup": None})
    cb.on_step_end(None, {"step": 11, "loss": 9e3, "blowup": "loss"})
    cb.on_step_end(None, {"step": 12, "loss": 1.0, "blowup": None})  # streak broken
    cb.on_step_end(None, {"step": 13, "loss": 9e3, "blowup": "loss"})
    cb.on_step_end(None, {"step": 14, "loss": 9e3, "blowup": "loss"})
    with pytest.raises(optuna.TrialPruned):
        cb.on_step_end(None, {"step": 15, "loss": 9e3, "blowup": "loss"})
    assert trial.user_attrs[PRUNED_REASON_ATTR] == (
        "diverged: 3 consecutive steps with a loss blow-up at step 15"
    )


def test_cli_tune_then_train_the_best_recipe_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tune"
    args = ["tune", *TINY, "--trials", "3", "--budget-steps", "6", "--out", str(out), "--seed", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "rank" in printed and "mse" in printed and "3 trials: 3 complete" in printed
    for name in ("best.yaml", "trials.csv", "report.md", "optimization_history.png",
                 "intermediate_values.png", "study.journal"):  # fmt: skip
        assert (out / name).is_file(), name
    assert len((out / "trials.csv").read_text().splitlines()) == 4
    best = Recipe.from_yaml(out / "best.yaml")
    assert best.name == "tuned-adding-T8" and best.hidden_size == 8

    # The YAML runs unchanged through `rnnguard train` and trains exactly that recipe.
    run = tmp_path / "train"
    train = ["train", "--recipe-file", str(out / "best.yaml"), *TINY[:4], "--steps", "4",
             "--batch-size", "8", "--eval-batches", "1", "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(train) == 0
    assert "tuned-adding-T8 on adding(T=8)" in capsys.readouterr().out
    assert read_jsonl(run / "metrics.jsonl")
    assert Recipe.from_dict(_result_recipe(run)) == best

    # Running it again resumes: nothing left to do; a larger --trials only adds the difference.
    assert main([*args, "--quiet", "--no-report"]) == 0
    assert "3 finished" in capsys.readouterr().out
    assert main([*args[:-4], "--trials", "4", "--out", str(out), "--quiet", "--no-report"]) == 0
    assert "4 finished" in capsys.readouterr().out

    # A study is never mixed with a different search.
    assert main([*args[:-2], "--budget-steps", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "budget_steps=6 (got 7)" in err


def _result_recipe(run: Path) -> dict[str, object]:
    import json

    return json.loads((run / "result.json").read_text())["recipe"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--space", "nope"], "unknown search space 'nope'"),
        (["--storage", "ftp://host/study"], "storage has an unknown scheme 'ftp'"),
        (["--trials", "0"], "--trials must be a positive int, got 0"),
        (["--workers", "0"], "workers must be a positive int, got 0"),
        (["--budget-steps", "-5"], "budget_steps must be a positive int, got -5"),
        (["--task", "nope"], "unknown task 'nope'"),
        (["--device", "tpu"], "device must be one of"),
        (["--length", "0"], "length"),
        (["--task-arg", "noequals"], "--task-arg must be KEY=VALUE, got 'noequals'"),
        (["--task-arg", "bogus=1"], "bogus"),
    ],
)
def test_cli_bad_arguments_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    rc = main(["tune", *TINY, "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert err.startswith("rnnguard tune: error:")
    assert not (tmp_path / "o" / "study.journal").exists()  # refused before touching storage


def test_list_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--list-spaces"]) == 0
    assert "gated" in capsys.readouterr().out


def test_missing_optuna_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` fail
    with pytest.raises(MissingExtraError, match=r"rnnguard\[tune\]"):
        search("adding", 8, 1)


@pytest.mark.slow
def test_cli_two_workers_sigkill_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    cmd = [sys.executable, "-c", "import sys; from rnnguard.cli import main; sys.exit(main())",
           "tune", *TINY, "--trials", "8", "--budget-steps", "30", "--out", str(out),
           "--workers", "2", "--seed", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "trial" in line and ("complete" in line or "pruned" in line):
            break
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers die at once
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    assert "8 finished" in done.stdout
    study = optuna.load_study(study_name="adding-T8-default", storage=_storage(out))
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 8 and not [t for t in study.trials if t.state == TrialState.RUNNING]
    for t in study.trials:  # trials cut short by the kill were detected and re-issued
        if t.state == TrialState.FAIL:
            assert t.system_attrs[FAIL_REASON_ATTR].startswith("stale: worker process")


def _storage(out: Path):  # type: ignore[no-untyped-def]
    from rnnguard.tune.storage import open_storage, parse_storage

    return open_storage(parse_storage(None, out))


def test_search_on_a_token_task_follows_its_metric_direction(tmp_path: Path) -> None:
    task = create_task("copy", length=4)
    result = search(
        "copy", 4, 2, budget_steps=4, space="gated", hidden_size=8, batch_size=4,
        eval_batches=1, out=tmp_path, seed=3, report=False, verbose=False,
    )  # fmt: skip
    assert result.direction == ("maximize" if task.higher_is_better else "minimize")
    assert result.metric_name == task.metric_name
    assert result.counts.finished == 2 and result.study_name == "copy-T4-gated"
    assert result.best_recipe is not None and result.best_recipe.layer in ("lstm", "gru")
    # report=False skips the report alone: the tuned recipe and the trials table are still kept.
    assert (tmp_path / "best.yaml").is_file() and (tmp_path / "trials.csv").is_file()
    assert result.best_recipe_path == tmp_path / "best.yaml"
    assert not (tmp_path / "report.md").exists() and not list(tmp_path.glob("*.png"))
