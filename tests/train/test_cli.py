"""`rnnguard train` / `rnnguard list`: SIGKILL and resume, outputs, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnguard.cli import main
from rnnguard.train.checkpoint import checkpoint_paths, load_checkpoint
from rnnguard.utils.io import read_jsonl

TINY = [
    "--recipe",
    "gru",
    "--set",
    "hidden_size=8",
    "--task",
    "adding",
    "--length",
    "10",
    "--batch-size",
    "8",
    "--eval-batches",
    "1",
    "--no-progress",
]


def _cli(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from rnnguard.cli import main; sys.exit(main())",
        *args,
    ]


def test_train_writes_metrics_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    rc = main(["train", *TINY, "--steps", "20", "--eval-every", "10", "--out", str(out)])
    assert rc == 0
    line = capsys.readouterr().out
    assert "gru on adding(T=10)" in line and "steps=20" in line
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [10, 20]
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,step,epoch,loss,metric,grad_norm")
    assert len(csv_lines) == 1 + len(records)
    assert (out / "result.json").exists() and checkpoint_paths(out)


def _comparable(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """A run's records, summary and final checkpoint, without wall-clock times and paths."""
    records = [
        {k: v for k, v in r.items() if k != "time"} for r in read_jsonl(out / "metrics.jsonl")
    ]
    result = json.loads((out / "result.json").read_text())
    for key in ("wall_time", "out"):
        result.pop(key)
    ckpt = load_checkpoint(checkpoint_paths(out)[-1])
    ckpt["trainer"].pop("wall_time")
    ckpt["trainer"]["history"] = [
        {k: v for k, v in r.items() if k != "time"} for r in ckpt["trainer"]["history"]
    ]
    for key in ("out", "resume"):  # where and how it was started, not what it computed
        ckpt["config"].pop(key)
    return records, result, ckpt


def _same(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Bit-identical nested checkpoint contents (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):  # NumPy's generator state
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), (where, a, b)  # NaN equals NaN here


def test_sigkill_then_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    """kill -9 mid-run, ``--resume``: same weights, optimiser, RNG states, metrics and summary.

    Zoneout and DropConnect draw masks every step, so the random streams must resume exactly. The
    killed run is started with a long budget (so it is surely still running when killed) and
    resumed with the short one; the schedule is constant, so the budget changes nothing else.
    """
    run = [
        "--recipe", "gru", "--set", "hidden_size=8", "--set", "layer_kwargs.zoneout=0.1",
        "--set", "layer_kwargs.dropconnect=0.2", "--set", "schedule.name=constant",
        "--set", "schedule.warmup_fraction=0", "--task", "adding", "--length", "10",
        "--batch-size", "8", "--eval-batches", "1", "--eval-every", "15", "--checkpoint-every",
        "10", "--log-every", "1", "--threads", "1", "--no-stop", "--no-progress",
    ]  # fmt: skip
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli("train", *run, "--steps", "3000", "--out", str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            ckpts = checkpoint_paths(out)
            if ckpts and int(ckpts[-1].stem.split("-")[1]) >= 20:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in read_jsonl(out / "metrics.jsonl"))
    last_ckpt = int(checkpoint_paths(out)[-1].stem.split("-")[1])
    assert killed_at >= last_ckpt >= 20
    steps = str(last_ckpt + 17)  # ends between checkpoints and after an evaluation
    done = subprocess.run(
        _cli("train", "--resume", "--out", str(out), "--steps", steps, "--no-progress"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    assert main(["train", *run, "--steps", steps, "--out", str(straight)]) == 0
    got, want = _comparable(out), _comparable(straight)
    assert [r["step"] for r in got[0] if r["kind"] == "train"] == list(range(1, int(steps) + 1))
    assert got[0] == want[0]  # every training and evaluation record, losses and norms included
    assert got[1] == want[1]  # the summary: metrics, guard statistics, steps
    _same(got[2], want[2])  # model, optimiser, scheduler, guard, RNG states, step


def test_list_shows_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("vanilla", "lstm-ln-clip", "indrnn-relu", "safe-lstm", "adding", "copy"):
        assert name in text


@pytest.mark.parametrize(
    "argv,word",
    [
        (["train", "--recipe", "nope", "--steps", "1"], "unknown recipe"),
        (["train", "--task", "nope", "--steps", "1"], "unknown task"),
        (["train", "--recipe", "gru", "--steps", "-3"], "steps"),
        (["train", "--resume", "--out", "/nonexistent/rnnguard-run"], "resume"),
        (["train", "--resume"], "--out"),
        (["train", "--recipe", "gru", "--set", "hidden_size"], "KEY=VALUE"),
        (["train", "--recipe-file", "/nonexistent/r.yaml"], "recipe file"),
    ],
)
def test_bad_input_one_line_error(
    argv: list[str], word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err and "Traceback" not in err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    done = subprocess.run(
        _cli("train", "--resume", "--out", str(bad)), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_recipe_file_runs_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnguard.train.recipes import Recipe, get_recipe

    recipe = get_recipe("indrnn-relu").replace(name="mine", hidden_size=6, **{"optimizer.lr": 0.02})
    path = tmp_path / "best.yaml"
    recipe.to_yaml(path)
    out = tmp_path / "run"
    argv = [
        "train",
        "--recipe-file",
        str(path),
        "--length",
        "9",
        "--steps",
        "3",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    assert "mine on adding(T=9)" in capsys.readouterr().out
    import json

    saved = json.loads((out / "result.json").read_text())
    assert Recipe.from_dict(saved["recipe"]) == recipe


def test_resume_of_an_empty_folder_starts_fresh(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 99}\n')  # left by a dead run
    assert (
        main(["train", *TINY, "--steps", "4", "--eval-every", "2", "--out", str(out), "--resume"])
        == 0
    )
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl")]
    assert 99 not in steps and steps[-1] == 4


def test_monitor_horizon_logs_the_horizon_to_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", *TINY, "--steps", "6", "--eval-every", "3", "--out", str(out)]
    assert main([*argv, "--monitor-horizon", "2"]) == 0
    found = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("diagnostic") == "horizon"]
    assert [r["step"] for r in found] == [2, 4, 6]
    assert all(r["kind"] == "custom" and r["max_distance"] == 9 for r in found)
    assert all(r["horizon"] is None or 0 <= r["horizon"] <= 9 for r in found)
    # A resumed run keeps measuring without the flag being repeated.
    assert main(["train", "--resume", "--out", str(out), "--steps", "8", "--no-progress"]) == 0
    steps = [
        r["step"] for r in read_jsonl(out / "metrics.jsonl") if r.get("diagnostic") == "horizon"
    ]
    assert steps == [2, 4, 6, 8]
    # Without the flag nothing is measured.
    plain = tmp_path / "plain"
    assert main([*argv[:-1], str(plain)]) == 0
    assert not [r for r in read_jsonl(plain / "metrics.jsonl") if r.get("diagnostic")]


def test_monitor_horizon_is_imported_only_when_asked() -> None:
    code = (
        "import sys, rnnguard.cli.train as c, rnnguard.train.trainer;"
        "print('rnnguard.diagnose' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_monitor_horizon_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TINY, "--steps", "2", "--monitor-horizon", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--monitor-horizon" in err and len(err.splitlines()) == 1


def test_text_flag_trains_a_language_model_and_resumes_it(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a stitch in time saves nine. " * 30, encoding="utf-8")
    out = tmp_path / "run"
    common = ["--set", "hidden_size=8", "--batch-size", "4", "--no-progress"]
    argv = ["train", "--recipe", "gru", "--text", str(corpus), "--length", "8", *common]
    assert main([*argv, "--steps", "4", "--eval-every", "2", "--out", str(out)]) == 0
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4] and all("valid_bpc" in r for r in evals)
    # The file is remembered: --resume needs neither --text nor --task.
    assert main(["train", "--resume", "--out", str(out), "--steps", "6", "--no-progress"]) == 0
    assert max(r["step"] for r in read_jsonl(out / "metrics.jsonl")) == 6


def test_text_flag_with_another_task_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--task", "adding", "--text", "x.txt", "--steps", "1"]) == 2
    assert "--text is for --task text" in capsys.readouterr().err


def test_data_dir_implies_ptb_char(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data-dir", str(tmp_path), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "PTB-char" in err and str(tmp_path) in err and len(err.strip().splitlines()) == 1
