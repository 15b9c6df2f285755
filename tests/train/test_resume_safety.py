"""Resume never changes what is trained: the run file, checkpoint validation and fallback, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnguard.cli import main
from rnnguard.errors import ConfigError
from rnnguard.tasks import AddingTask
from rnnguard.train.callbacks import Callback
from rnnguard.train.checkpoint import checkpoint_paths
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import Recipe, get_recipe
from rnnguard.train.run_config import RUN_FILE
from rnnguard.train.trainer import fit
from rnnguard.utils.io import read_jsonl

CFG = TrainConfig(
    steps=12,
    batch_size=4,
    eval_every=0,
    eval_batches=1,
    log_every=1,
    checkpoint_every=4,
    keep_last=3,
    progress=False,
    stop_when_solved=False,
)


def _recipe(hidden: int = 8) -> Recipe:
    return get_recipe("gru").replace(hidden_size=hidden)


def _cli(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from rnnguard.cli import main; sys.exit(main())",
        *args,
    ]


def test_sigkill_before_the_first_checkpoint_resumes_the_same_run(tmp_path: Path) -> None:
    """The configuration is on disk before step 1, so ``--resume --out D`` alone trains it."""
    out = tmp_path / "D"
    first = [
        "train",
        "--recipe",
        "vanilla",
        "--task",
        "adding",
        "--length",
        "20",
        "--set",
        "hidden_size=16",
        "--steps",
        "100000",
        "--checkpoint-every",
        "100000",
        "--log-every",
        "5",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _cli(*first), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        deadline = time.time() + 120
        while not read_jsonl(out / "metrics.jsonl"):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.time() < deadline, "no training step was logged in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not checkpoint_paths(out)
    done = subprocess.run(
        _cli("train", "--resume", "--out", str(out), "--steps", "10", "--no-progress"),
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "vanilla on adding(T=20)" in done.stdout, done.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["recipe"]["name"] == "vanilla" and result["recipe"]["hidden_size"] == 16
    assert result["steps"] == 10


def test_the_run_file_is_written_before_the_first_step(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    class Peek(Callback):
        def on_train_start(self, ctx: Any) -> None:
            seen.append(json.loads((tmp_path / RUN_FILE).read_text()))

    fit(_recipe(), AddingTask(6), CFG.replace(steps=1, out=str(tmp_path)), [Peek()])
    assert seen and seen[0]["recipe"]["hidden_size"] == 8
    assert seen[0]["task"] == {"name": "adding", "length": 6}
    assert seen[0]["config"]["steps"] == 1 and "weight_hh_l0" in str(seen[0]["parameters"])


def test_resume_refuses_to_train_another_model_task_or_seed(tmp_path: Path) -> None:
    fit(_recipe(), AddingTask(6), CFG.replace(steps=4, out=str(tmp_path)))
    resume = CFG.replace(steps=8, out=str(tmp_path), resume=True)
    with pytest.raises(ConfigError, match=r"resume must train the run.*hidden_size 8 -> 16"):
        fit(_recipe(16), AddingTask(6), resume)
    with pytest.raises(ConfigError, match=r"task length 6 -> 7"):
        fit(_recipe(), AddingTask(7), resume)
    with pytest.raises(ConfigError, match=r"seed 0 -> 3"):
        fit(_recipe(), AddingTask(6), resume.replace(seed=3))
    # What says how to train (budget, rate) may change.
    again = fit(_recipe().replace(**{"optimizer.lr": 1e-3}), AddingTask(6), resume)
    assert again.steps == 8


def test_a_foreign_or_torn_newest_checkpoint_falls_back_to_the_valid_one(tmp_path: Path) -> None:
    straight = fit(_recipe(), AddingTask(6), CFG.replace(out=str(tmp_path / "a")))
    for damage in ("foreign", "torn", "other-model"):
        run = tmp_path / damage
        fit(_recipe(), AddingTask(6), CFG.replace(out=str(run)))
        checkpoint_paths(run)[-1].unlink()  # as if killed after step 8's checkpoint
        newest = checkpoint_paths(run)[-1]
        assert newest.name == "ckpt-00000008.pt"
        if damage == "foreign":
            torch.save({"a": 1}, newest)
        elif damage == "torn":
            newest.write_bytes(newest.read_bytes()[:1000])
        else:
            fit(_recipe(4), AddingTask(6), CFG.replace(steps=8, out=str(tmp_path / "small")))
            newest.write_bytes(checkpoint_paths(tmp_path / "small")[-1].read_bytes())
        resumed = fit(_recipe(), AddingTask(6), CFG.replace(out=str(run), resume=True))
        # Continued from step 4, exactly as the uninterrupted run.
        assert resumed.metrics == straight.metrics, damage
        steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
        assert steps == list(range(1, 13)), damage


def test_no_usable_checkpoint_is_a_refusal_not_a_fresh_start(tmp_path: Path) -> None:
    fit(_recipe(), AddingTask(6), CFG.replace(steps=4, out=str(tmp_path)))
    only = checkpoint_paths(tmp_path)
    assert len(only) == 1
    torch.save({"a": 1}, only[0])
    before = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"usable checkpoint.*ckpt-00000004.pt.*missing"):
        fit(_recipe(), AddingTask(6), CFG.replace(out=str(tmp_path), resume=True))
    assert (tmp_path / "metrics.jsonl").read_bytes() == before


def test_checkpoints_replaced_by_a_file_is_refused_and_metrics_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "D"
    argv = ["train", "--recipe", "gru", "--set", "hidden_size=8", "--length", "6"]
    common = ["--batch-size", "4", "--eval-batches", "1", "--no-progress", "--out", str(out)]
    assert (
        main([*argv, "--steps", "20", "--checkpoint-every", "10", "--log-every", "1", *common]) == 0
    )
    before = (out / "metrics.jsonl").read_bytes()
    for ckpt in checkpoint_paths(out):
        ckpt.unlink()
    (out / "checkpoints").rmdir()
    (out / "checkpoints").write_text("not a folder")
    capsys.readouterr()
    assert main(["train", "--resume", "--steps", "30", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoints" in err and "folder" in err and len(err.splitlines()) == 1
    assert (out / "metrics.jsonl").read_bytes() == before


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    fit(_recipe(), AddingTask(6), CFG.replace(steps=4, out=str(tmp_path)))
    stale = [
        tmp_path / "checkpoints" / ".ckpt-00000008.pt.k2j_x9ab.tmp",
        tmp_path / ".metrics.csv.0a1b2c3d.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half")
    keep = tmp_path / "notes.tmp"
    keep.write_text("a user's file")
    fit(_recipe(), AddingTask(6), CFG.replace(steps=8, out=str(tmp_path), resume=True))
    assert not any(p.exists() for p in stale) and keep.exists()


def test_resume_with_nothing_to_go_on_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--resume needs a run to continue" in err and not (tmp_path / "metrics.jsonl").exists()


def test_cli_resume_with_a_changed_width_is_a_one_line_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--batch-size", "4", "--eval-batches", "1", "--no-progress", "--out", str(tmp_path)]
    assert (
        main(
            [
                "train",
                "--recipe",
                "gru",
                "--set",
                "hidden_size=8",
                "--length",
                "6",
                "--steps",
                "2",
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["train", "--resume", "--set", "hidden_size=16", "--steps", "4", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "hidden_size 8 -> 16" in err and len(err.splitlines()) == 1
