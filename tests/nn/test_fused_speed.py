"""Smoke tests of the speed benchmark (``rnnguard speed``); no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rnnguard.bench import speed
from rnnguard.cli import main
from rnnguard.errors import ConfigError


def test_run_speed_tiny_has_every_row_ratio_and_verdict() -> None:
    report = speed.run_speed(
        sizes=("tiny",), repeats=1, memory=True, scaling=(4, 8), keep_freed_memory=False
    )
    names = [r.case for r in report.rows]
    assert "torch.nn.LSTM" in names and "LSTM ln+zo.1+dc.2 [reference]" in names
    by_name = {r.case: r for r in report.rows}
    fused = by_name["LSTM ln+zo.1+dc.2"]
    assert fused.train_ratio is not None and fused.train_ratio > 0
    assert fused.train_s >= fused.forward_s > 0
    assert fused.peak_bytes is not None and fused.peak_bytes > 0
    assert by_name["torch.nn.LSTM"].train_ratio is None  # a baseline has no ratio
    checks = [v["check"] for v in report.verdicts]
    assert any(c.startswith("peak memory LSTM ln+zo.1+dc.2") for c in checks)
    assert any("T=8 / T=4" in c for c in checks)
    text = speed.format_report(report)
    assert "| tiny | GRU ln |" in text and "load average" in text


def test_speed_command_prints_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "speed.json"
    code = main(["speed", "--quick", "--repeats", "1", "--no-memory", "--no-scaling",
                 "--no-reference", "--default-allocator", "--json", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "IndRNN 2 layers relu" in printed and "[reference]" not in printed
    assert "allocator default" in printed and "native kernels" in printed
    data = json.loads(out.read_text())
    assert data["machine"]["torch_threads"] >= 1 and data["rows"]


def test_speed_amp_rows_against_torch_and_their_own_float32(capsys) -> None:
    code = main(["speed", "--quick", "--repeats", "1", "--no-memory", "--no-scaling",
                 "--no-reference", "--default-allocator", "--amp"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "bfloat16 autocast" in printed and "vs own float32" in printed
    # Under the same autocast as torch.nn's row, and against the layer's own float32 row.
    assert "| tiny | GRU ln [bf16] |" in printed and "| torch.nn.GRU [bf16] |" in printed
    assert "| LSTM ln+zo.1+dc.2 [bf16] fwd+bwd / LSTM ln+zo.1+dc.2 (tiny) |" in printed
    assert "| 1.30 |" in printed


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sizes": ("huge",)}, "sizes"),
        ({"repeats": 0}, "repeats"),
        ({"device": "tpu"}, "device"),
        ({"amp": "fp8"}, "amp"),
    ],
)
def test_run_speed_rejects_bad_arguments(kwargs, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        speed.run_speed(**kwargs)


def test_keep_freed_memory_reports_what_it_did() -> None:
    # In a child process: the setting lasts for the life of the process that makes it.
    code = "from rnnguard.utils.memory import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    said = out.stdout.strip()
    if sys.platform.startswith("linux"):
        assert said.startswith(("glibc, freed memory kept", "default (")), said
    else:
        assert said.startswith("default"), said
