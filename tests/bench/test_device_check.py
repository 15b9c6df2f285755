"""``benchmarks/device_check.py`` without a GPU: it parses, refuses clearly, judges fake rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from rnnguard.bench.speed import SpeedReport, SpeedResult

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_parses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _load().main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_refuses_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.md"
    assert _load().main(["--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_gpu_targets_judged_on_same_run_rows() -> None:
    def row(case: str, train_s: float) -> SpeedResult:
        return SpeedResult("gpu", case, train_s / 3, train_s, 1.0, None, None)

    report = SpeedReport(machine={})
    report.rows = [
        row("torch.nn.LSTM", 10.0), row("LSTM ln+zo.1+dc.2", 14.0),
        row("torch.nn.GRU", 10.0), row("GRU ln", 16.0),
        row("IndRNN 2 layers relu", 1.5),
        row("torch.nn.LSTM [bf16]", 5.0), row("LSTM ln+zo.1+dc.2 [bf16]", 8.0),
    ]  # fmt: skip
    report.verdicts = [
        {
            "check": "peak memory GRU ln / its reference (gpu)",
            "value": 0.8,
            "limit": 1.0,
            "ok": True,
        },
        {"check": "GRU ln fwd+bwd / torch.nn.GRU (gpu)", "value": 1.6, "limit": 1.5, "ok": False},
    ]
    text = "\n".join(_load()._gpu_targets(report))
    assert "| LSTM ln+zo.1+dc.2 fwd+bwd / torch.nn.LSTM (gpu) | 1.40 | 1.50 | yes |" in text
    assert "| GRU ln fwd+bwd / torch.nn.GRU (gpu) | 1.60 | 1.50 | NO |" in text
    assert "| IndRNN 2 layers relu fwd+bwd / torch.nn.LSTM (gpu) | 0.15 | 0.20 | yes |" in text
    assert "| LSTM ln+zo.1+dc.2 [bf16] fwd+bwd / torch.nn.LSTM [bf16] (gpu) | 1.60 |" in text
    assert "peak memory GRU ln / its reference (gpu) | 0.80" in text
    assert text.count("GRU ln fwd+bwd / torch.nn.GRU (gpu)") == 1  # the CPU verdict is left out
