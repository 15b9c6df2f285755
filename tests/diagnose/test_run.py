"""``rnnguard doctor --run DIR`` on finished training runs, and ``--text`` / ``--data-dir``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnguard.cli import main
from rnnguard.diagnose import DoctorConfig, doctor
from rnnguard.diagnose.run import doctor_run, load_run
from rnnguard.train.callbacks import Callback
from rnnguard.train.checkpoint import latest_checkpoint
from rnnguard.train.config import TrainConfig
from rnnguard.train.trainer import fit

TRAIN = ["--task", "adding", "--length", "30", "--batch-size", "16", "--threads", "1"]
SMALL = DoctorConfig(batch_size=8, spectrum_steps=30, lyapunov_k=2)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vanilla RNN trained for 150 steps on adding(T=30): long enough to move its horizon."""
    out = tmp_path_factory.mktemp("run") / "vanilla"
    argv = ["train", "--recipe", "vanilla", *TRAIN, "--set", "hidden_size=32", "--steps", "150"]
    assert main([*argv, "--eval-every", "150", "--out", str(out)]) == 0
    return out


def test_trained_horizon_differs_from_initialisation(adding_run: Path) -> None:
    result = doctor_run(adding_run, config=SMALL)
    trained, initial = result.trained.horizons.input, result.initial.horizons.input
    assert result.run.step == 150 and result.run.recipe.name == "vanilla"
    assert trained.horizon != initial.horizon
    assert not np.allclose(trained.norms, initial.norms, rtol=0.05)
    # the run's explosion history is evidence for the trained model only
    assert result.trained.history is not None and result.trained.history.total_steps == 150
    assert result.initial.history is None
    text = result.comparison()
    assert "at initialisation" in text and f"{_reach(trained)}" in text and _reach(initial) in text


def _reach(h: Any) -> str:
    return f"{h.horizon} steps" if h.horizon is not None else f"beyond {h.max_distance} steps"


def test_the_models_are_the_checkpoint_and_the_trainers_initialisation(adding_run: Path) -> None:
    run = load_run(adding_run)
    task = run.build_task()
    trained = run.trained_model(task)
    saved = latest_checkpoint(adding_run)
    assert saved is not None
    for k, v in trained.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    # the trainer's own initialisation, caught as its first step starts
    seen: dict[str, torch.Tensor] = {}

    class Catch(Callback):
        def on_train_start(self, ctx: Any) -> None:
            seen.update({k: v.clone() for k, v in ctx.model.state_dict().items()})

    config = TrainConfig(steps=1, batch_size=16, seed=run.seed, num_threads=1, progress=False)
    fit(run.recipe, run.build_task(), config, [Catch()])
    initial = run.initial_model(task).state_dict()
    assert seen.keys() == initial.keys()
    for k, v in initial.items():
        assert torch.equal(v, seen[k]), k
    # and the trained diagnosis is the doctor's on that model
    direct = doctor(trained, task, config=SMALL, recipe="vanilla")
    np.testing.assert_allclose(
        doctor_run(adding_run, config=SMALL).trained.horizons.input.norms,
        direct.horizons.input.norms,
    )


def test_doctor_run_cli_prints_both_and_writes_them(
    adding_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    rc, out, _ = _cli(
        capsys, "doctor", "--run", str(adding_run), "--batch-size", "8", "--out", str(tmp_path)
    )
    assert rc == 0 and out.startswith("verdict: ")
    assert "after 150 training steps vs at initialisation" in out
    assert "input gradient horizon:" in out and "(at initialisation:" in out
    trained = json.loads((tmp_path / "diagnosis.json").read_text())
    initial = json.loads((tmp_path / "initial.json").read_text())
    assert trained["recipe"] == initial["recipe"] == "vanilla"
    assert trained["history"]["total_steps"] == 150 and initial["history"] is None
    assert trained["horizons"]["input"]["norms"] != initial["horizons"]["input"]["norms"]


def _text_file(path: Path) -> Path:
    words = "the cat sat on the mat and the dog ran to the cat while it sat still "
    path.write_text(words * 60, encoding="utf-8")
    return path


def test_text_runs_rebuild_their_data_and_text_moves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = _text_file(tmp_path / "book.txt")
    out = tmp_path / "gru"
    argv = ["train", "--recipe", "gru", "--text", str(book), "--length", "20", "--steps", "5"]
    assert main([*argv, "--set", "hidden_size=16", "--threads", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    rc, text, _ = _cli(capsys, "doctor", "--run", str(out), "--batch-size", "4")
    assert rc == 0 and "at the core input" in text and "after 5 training steps" in text
    moved = shutil.move(str(book), str(tmp_path / "moved.txt"))
    rc, _, err = _cli(capsys, "doctor", "--run", str(out), "--batch-size", "4")
    assert rc == 2 and "book.txt" in err and len(err.strip().splitlines()) == 1
    rc, text, _ = _cli(capsys, "doctor", "--run", str(out), "--text", moved, "--batch-size", "4")
    assert rc == 0 and "after 5 training steps" in text
    # prescriptions will train on the same (moved) file
    result = doctor_run(out, config=DoctorConfig(batch_size=4), task_args={"path": moved})
    assert result.trained.task_args == {"path": moved} == result.initial.task_args
    assert result.trained.to_dict()["task_args"] == {"path": moved}


def test_text_and_data_dir_give_language_model_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = _text_file(tmp_path / "book.txt")
    args = ["--length", "16", "--hidden-size", "8", "--batch-size", "4"]
    rc, out, _ = _cli(capsys, "doctor", "--recipe", "lstm", "--text", str(book), *args)
    assert rc == 0 and "at the core input" in out
    ptb = tmp_path / "ptb-char"
    ptb.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (ptb / name).write_text(" a b _ c \n b _ a \n" * 80, encoding="utf-8")
    rc, out, _ = _cli(capsys, "doctor", "--recipe", "gru", "--data-dir", str(tmp_path), *args)
    assert rc == 0 and "at the core input" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--run", "no/such/run"], "--run must be a training run folder"),
        (["--recipe", "gru", "--text", "b.txt", "--task", "adding"], "--text is for --task text"),
        (["--recipe", "gru", "--text", "b.txt", "--data-dir", "d"], "give one of them"),
    ],
)
def test_bad_doctor_arguments_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _cli(capsys, "doctor", *argv)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_run_flags_that_cannot_apply_are_refused(
    adding_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _cli(capsys, "doctor", "--run", str(adding_run), "--hidden-size", "8")
    assert rc == 2 and "--hidden-size" in err
    rc, _, err = _cli(capsys, "doctor", "--run", str(adding_run), "--task", "copy")
    assert rc == 2 and "trained on 'adding'" in err
    empty = adding_run.parent / "empty"
    empty.mkdir(exist_ok=True)
    rc, _, err = _cli(capsys, "doctor", "--run", str(empty))
    assert rc == 2 and "holds no checkpoint" in err


def test_prescription_commands_name_the_data() -> None:
    from rnnguard.diagnose.prescriptions import Prescription

    p = Prescription(1, "gru", {}, "why", ["vanishing"])
    assert p.command("text", 50, {"path": "my book.txt"}) == (
        "rnnguard train --recipe gru --task text --length 50 --text 'my book.txt'"
    )
    assert p.command("ptb-char", 50, {"data_dir": "D"}).endswith("--data-dir D")
    assert p.command("copy", 5, {"delay": 3}).endswith("--task-arg delay=3")
