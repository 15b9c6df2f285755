"""Ordinary faults give one line naming the path or argument, a non-zero exit, and leave what is
already stored as it was: an --out that is a file, a folder where a file goes, no permission, a
full disk, sizes that cannot fit in memory, an overflowing seed, a model with NaN weights."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from rnnguard.cli import main
from rnnguard.cli.faults import describe
from rnnguard.utils import io as rio

TRAIN = ["train", "--recipe", "gru", "--set", "hidden_size=8", "--task", "adding", "--length",
         "10", "--batch-size", "8", "--eval-batches", "1", "--no-progress", "--steps", "4"]  # fmt: skip
TUNE = ["tune", "--task", "adding", "--length", "5", "--trials", "1", "--budget-steps", "3",
        "--hidden-size", "4", "--quiet", "--no-report"]  # fmt: skip
DOCTOR = ["doctor", "--recipe", "gru", "--length", "10", "--hidden-size", "8", "--batch-size", "4"]


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("command", [TRAIN, TUNE, DOCTOR], ids=["train", "tune", "doctor"])
def test_out_naming_an_existing_file(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if command is TUNE:
        pytest.importorskip("optuna")
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me")
    assert main([*command, "--out", str(victim)]) != 0
    _one_line(capsys, str(victim))
    assert victim.read_text() == "keep me"


def test_figure_and_speed_refuse_a_folder_for_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "plots"
    folder.mkdir()
    assert main(["figure", "grad-norm", "--steps", "5", "--hidden", "4", "--out", str(folder)]) != 0
    _one_line(capsys, "--out", str(folder))
    # Refused before measuring anything (a full run takes minutes).
    assert main(["speed", "--quick", "--json", str(folder)]) != 0
    _one_line(capsys, "--json", str(folder))
    assert list(folder.iterdir()) == []


def test_speed_rejects_zero_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["speed", "--quick", "--repeats", "0"]) == 2
    _one_line(capsys, "--repeats", "0")


def test_no_permission_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> object:
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(rio.tempfile, "mkstemp", denied)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 1
    _one_line(capsys, "permission denied", str(out))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main([*TRAIN, "--out", str(locked / "run")]) != 0
        _one_line(capsys, str(locked))
    finally:
        locked.chmod(0o755)


def test_disk_full_keeps_what_was_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio.os, "fsync", full)
    assert main([*TRAIN, "--steps", "8", "--resume", "--out", str(out)]) == 1
    _one_line(capsys, "no space left", str(out))
    for path, data in before.items():  # whole files only: each is what it was or absent
        if path.suffix == ".json":
            assert json.loads(path.read_bytes()) == json.loads(data)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize(
    "sizes", [["--length", "1000000000000"], ["--batch-size", "1000000000"]], ids=["T", "B"]
)
def test_impossible_sizes_are_refused_before_allocating(
    sizes: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, *sizes, "--out", str(out)]
    assert main(argv) == 2
    _one_line(capsys, f"{sizes[0][2:].replace('-', '_')}={sizes[1]}", "GiB")
    assert not out.exists()  # refused before anything was written
    assert main([*DOCTOR, *sizes]) == 2
    _one_line(capsys, sizes[1], "GiB")


def test_running_out_of_memory_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    doc = importlib.import_module("rnnguard.diagnose.doctor")  # the package re-exports the function

    def oom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
            "tried to allocate 40000000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(doc, "doctor", oom)
    assert main(DOCTOR) == 1
    _one_line(capsys, "out of memory", "37.3 GiB", "--batch-size")
    assert describe(MemoryError()) is not None
    assert describe(RuntimeError("shape mismatch")) is None  # other errors keep their traceback


@pytest.mark.parametrize("command", [TRAIN, DOCTOR], ids=["train", "doctor"])
def test_overflowing_seed_names_the_range(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--seed", "99999999999999999999"]) == 2
    _one_line(capsys, "seed", "2**63 - 1")


def test_doctor_on_a_model_with_nan_weights(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from rnnguard.diagnose.doctor import doctor
    from rnnguard.errors import ConfigError
    from rnnguard.tasks import create_task

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.RNN(2, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 1)
            with torch.no_grad():
                self.rnn.weight_hh_l0[0, 0] = float("nan")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0])

    with pytest.raises(ConfigError, match=r"'rnn\.weight_hh_l0' holds NaN values"):
        doctor(Broken(), create_task("adding", length=6))
