from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from rnnguard.cli import main
from rnnguard.diagnose.doctor import DoctorConfig, doctor
from rnnguard.tasks.registry import create_task
from rnnguard.train.recipes import get_recipe

pytest.importorskip("matplotlib")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_figure_grad_norm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "g.png"
    rc, out, _ = _run(
        capsys, "figure", "grad-norm", "--out", str(target), "--steps", "12", "--hidden", "4"
    )
    assert rc == 0 and target.read_bytes().startswith(b"\x89PNG")
    assert "linear s=1.1" in out and "tanh s=0.9" in out


def test_doctor_recipe_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(
        capsys, "doctor", "--recipe", "vanilla", "--task", "adding", "--length", "60",
        "--hidden-size", "8", "--batch-size", "4", "--out", str(tmp_path),
    )  # fmt: skip
    assert rc == 0 and out.startswith("verdict: ")
    data = json.loads((tmp_path / "diagnosis.json").read_text())
    assert data["recipe"] == "vanilla" and data["length"] == 60 and data["verify"] is None
    # A width-8 tanh RNN at T=60 forgets: the same verdict and evidence as the library gives.
    assert data["verdicts"] == ["vanishing"]
    want = doctor(
        get_recipe("vanilla").replace(hidden_size=8), create_task("adding", length=60),
        config=DoctorConfig(batch_size=4, seed=0),
    )  # fmt: skip
    assert data["findings"] == json.loads(want.to_json())["findings"]
    for ev in data["findings"][0]["evidence"]:
        assert ev["relation"] == "<" and ev["value"] < ev["threshold"]
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # plots are inline: the page stands alone
    assert "<img" in page and 'src="plots/' not in page


def test_doctor_verify_reports_both_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = _run(
        capsys, "doctor", "--recipe", "vanilla", "--length", "40", "--hidden-size", "4",
        "--batch-size", "4", "--verify", "--verify-steps", "3", "--out", str(tmp_path),
    )  # fmt: skip
    assert rc == 0
    data = json.loads((tmp_path / "diagnosis.json").read_text())
    assert data["verdicts"] != ["healthy"], "a tanh RNN at T=40 should need a cure to verify"
    v = data["verify"]
    assert v["original"]["recipe"] == "vanilla"
    assert v["prescribed"]["recipe"] == data["prescriptions"][0]["recipe"]
    for arm in ("original", "prescribed"):
        assert len(v[arm]["losses"]) == 3 and v[arm]["final_loss"] is not None
        assert "horizon" in v[arm]["horizon_before"] and "horizon" in v[arm]["horizon_after"]
    # Three steps decide nothing: the verdict says so rather than naming a winner.
    assert v["verdict"] == "inconclusive" and v["statement"].startswith("inconclusive: neither")
    assert "verify original (vanilla): not solved after 3 steps" in out
    assert "Verification: inconclusive" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "plots" / "verify_loss.png").exists()


def _write_module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_doctor_user_model_factory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(
        tmp_path,
        "diag_user_model_ok",
        """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self, spec):
                super().__init__()
                self.rnn = nn.GRU(spec.input_size, 6, batch_first=True)
                self.out = nn.Linear(6, spec.output_size)

            def forward(self, x):
                return self.out(self.rnn(x)[0])

        def make(spec):
            return Net(spec)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, out, _ = _run(
        capsys,
        "doctor",
        "--model",
        "diag_user_model_ok:make",
        "--length",
        "20",
        "--batch-size",
        "4",
    )
    assert rc == 0 and "verdict:" in out and "rnn.l0" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--recipe", "vanilla", "--length", "1"], "--length must be an int >= 2, got 1"),
        (
            ["--model", "no_such_pkg_xyz.models:make", "--length", "10"],
            "could not import module 'no_such_pkg_xyz.models'",
        ),
        (
            ["--model", "not-a-factory-path", "--length", "10"],
            "--model must look like package.module:factory",
        ),
        (
            ["--model", "diag_user_model_bad:make", "--length", "10"],
            "model must accept a (batch, time, features) input",
        ),
        (
            ["--model", "diag_user_model_bad:missing", "--length", "10"],
            "has no attribute 'missing'",
        ),
        (["--recipe", "no-such-recipe", "--length", "10"], "unknown recipe 'no-such-recipe'"),
    ],
)
def test_bad_input_gives_one_line_errors(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _write_module(
        tmp_path,
        "diag_user_model_bad",
        """
        from torch import nn

        def make():
            return nn.Linear(5, 1)  # wants 5 features per step; the adding task has 2
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, _, err = _run(capsys, "doctor", *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnguard doctor: error: ")
    assert message in lines[0]
    assert "Traceback" not in err


def test_doctor_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnguard.train.recipes import get_recipe

    path = tmp_path / "tuned.yaml"
    get_recipe("gru").replace(name="tuned-gru", hidden_size=4).to_yaml(path)
    rc, out, _ = _run(
        capsys, "doctor", "--recipe-file", str(path), "--length", "12", "--batch-size", "2"
    )
    assert rc == 0 and out.startswith("verdict: ")
    rc, _, err = _run(
        capsys, "doctor", "--recipe-file", str(tmp_path / "missing.yaml"), "--length", "12"
    )
    assert rc == 2 and "recipe file must be a readable YAML file" in err
