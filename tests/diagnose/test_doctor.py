from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from rnnguard.diagnose.doctor import DoctorConfig, doctor, prescribe
from rnnguard.errors import ConfigError
from rnnguard.train.recipes import list_recipes

from .helpers import orthogonal

H = 32


class UserModel(nn.Module):
    """Built as a user would: a torch.nn recurrent layer inside, a linear read-out."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(H, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.core(x)[0])


def _tanh_half_orthogonal() -> nn.Module:
    rnn = nn.RNN(2, H, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(0.5 * orthogonal(H, dtype=torch.float32))
    return UserModel(rnn)


def _relu_identity_15() -> nn.Module:
    rnn = nn.RNN(2, H, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(1.5 * torch.eye(H))
    return UserModel(rnn)


def _lstm_forget_bias(total: float) -> nn.Module:
    lstm = nn.LSTM(2, H, batch_first=True)
    with torch.no_grad():
        lstm.bias_ih_l0[H : 2 * H] = total / 2  # torch adds both bias vectors
        lstm.bias_hh_l0[H : 2 * H] = total / 2
    return UserModel(lstm)


def _x(length: int) -> torch.Tensor:
    return torch.rand(16, length, 2, generator=torch.Generator().manual_seed(1))


def test_tanh_rnn_with_half_orthogonal_recurrence_is_vanishing() -> None:
    d = doctor(_tanh_half_orthogonal(), _x(50))
    assert d.verdicts == ["vanishing"]
    ev = d.findings[0].evidence
    assert any(e.source == "input horizon" and e.value is not None and e.value < 1e-3 for e in ev)
    assert d.spectra["core.l0"].top_lyapunov < 0
    assert d.prescriptions and d.prescriptions[0].addresses == ["vanishing"]


def test_relu_rnn_with_identity_15_is_exploding() -> None:
    d = doctor(_relu_identity_15(), _x(50))
    assert "exploding" in d.verdicts and "healthy" not in d.verdicts
    # perturbations grow by the recurrent factor 1.5 along the active units
    assert d.spectra["core.l0"].top_lyapunov == pytest.approx(
        torch.log(torch.tensor(1.5)).item(), abs=0.05
    )
    assert any("exploding" in p.addresses for p in d.prescriptions)


def test_lstm_with_total_forget_bias_2_on_30_steps_is_healthy() -> None:
    d = doctor(_lstm_forget_bias(2.0), _x(30))
    assert d.verdicts == ["healthy"] and d.healthy
    assert d.prescriptions == []
    assert d.horizons.input.horizon is None  # the gradient reaches the first step


def test_lstm_with_forget_bias_minus_5_is_saturated() -> None:
    d = doctor(_lstm_forget_bias(-5.0), _x(30))
    assert "saturated" in d.verdicts
    sat = next(f for f in d.findings if f.verdict == "saturated")
    assert any(e.metric == "closed forget-gate fraction" and e.value > 0.5 for e in sat.evidence)


def test_verdict_ignores_the_class_name() -> None:
    # the same vanishing recurrence, disguised as an LSTM-named class, is still measured as it is
    class LSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _tanh_half_orthogonal()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    assert doctor(LSTM(), _x(50)).verdicts == ["vanishing"]


def test_transformer_gets_an_input_horizon_only() -> None:
    class Enc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 8)
            self.enc = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1
            )
            self.head = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.proj(x)))

    d = doctor(Enc(), _x(20))
    assert d.spectra == {} and d.saturation == {}
    assert d.verdicts == ["healthy"]  # attention reaches every step directly


def test_history_adds_explosion_evidence_and_json_is_clean() -> None:
    records = [
        {"kind": "train", "step": s, "grad_norm": 1.0, "exploded": s % 10 == 0}
        for s in range(1, 101)
    ]
    d = doctor(_lstm_forget_bias(2.0), _x(30), history=records)
    assert d.verdicts == ["exploding"]
    ev = d.findings[0].evidence[0]
    assert ev.source == "training log" and ev.value == pytest.approx(0.1)
    data = json.loads(d.to_json())
    assert data["verdicts"] == ["exploding"] and data["history"]["explosions"] == 10
    assert data["prescriptions"][0]["command"].startswith("rnnguard train --recipe ")


def test_a_forward_blow_up_in_the_log_is_reported() -> None:
    """Finite, unclipped-looking gradients but a loss that blew up: the doctor says so."""
    records: list[dict] = [
        {"kind": "train", "step": s, "grad_norm": 1.0, "blowup": "loss" if s > 95 else None}
        for s in range(1, 101)
    ]
    records.append({"kind": "event", "step": 100, "event": "rollback", "cause": "loss"})
    d = doctor(_lstm_forget_bias(2.0), _x(30), history=records)
    assert "exploding" in d.verdicts
    evidence = [e for f in d.findings for e in f.evidence if "blow-up" in e.metric]
    assert evidence and evidence[0].value == 5 and "first at step 96" in evidence[0].text()
    assert "1 rollbacks" in evidence[0].text()
    assert json.loads(d.to_json())["history"]["blowups"] == 5


def test_prescriptions_are_registered_ranked_and_buildable() -> None:
    known = list_recipes()
    ps = prescribe(["vanishing", "exploding"], 300, original="vanilla")
    assert [p.rank for p in ps] == list(range(1, len(ps) + 1))
    assert all(p.recipe in known for p in ps)
    assert ps[0].recipe == "lstm-ln-clip" and ps[0].addresses == ["vanishing", "exploding"]
    assert ps[0].overrides == {"init": "chrono", "init_kwargs": {"t_max": "auto"}}  # T > 200
    long = prescribe(["vanishing"], 2000)
    assert long[0].recipe == "indrnn-relu"  # the cheat sheet's choice for very long sequences
    for p in ps:
        recipe = p.build()
        assert recipe.name == p.recipe
    fixed = next(
        p for p in prescribe(["exploding"], 100, original="vanilla") if p.recipe == "vanilla"
    )
    assert fixed.build().guard.mode == "norm" and "--set guard.max_norm=1.0" in fixed.command()
    assert all(
        p.recipe != "lstm" or p.overrides for p in prescribe(["saturated"], 50, original="lstm")
    )


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="horizon_threshold"):
        DoctorConfig(horizon_threshold=0.0)
    with pytest.raises(ConfigError, match="exploding_ratio"):
        DoctorConfig(exploding_ratio=0.5)
    with pytest.raises(TypeError, match="data must be"):
        doctor(_lstm_forget_bias(2.0), "adding")
    with pytest.raises(ConfigError, match="at least 2 time steps"):
        doctor(_lstm_forget_bias(2.0), _x(1))
    with pytest.raises(ConfigError, match=r"model must accept a \(batch, time, features\)"):
        doctor(UserModel(nn.LSTM(5, H, batch_first=True)), _x(10))


def test_doctor_on_a_token_task_uses_the_task_length_in_commands() -> None:
    from rnnguard.tasks.registry import create_task
    from rnnguard.train.recipes import get_recipe

    task = create_task("copy", length=10)
    model = get_recipe("vanilla").replace(hidden_size=8).build_model(task.spec, length=10)
    d = doctor(model, task, config=DoctorConfig(batch_size=4), recipe="vanilla")
    assert d.length == 30 and d.task_length == 10 and d.task == task.name  # T + 20 input steps
    assert "core.l0" in d.spectra  # measured on the embedded tokens
    for p in d.to_dict()["prescriptions"]:
        assert "--length 10" in p["command"] and "--task copy" in p["command"]


def test_doctor_builds_a_recipe_for_a_task() -> None:
    from rnnguard.tasks.registry import create_task
    from rnnguard.train.recipes import get_recipe

    task = create_task("adding", length=40)
    d = doctor(
        get_recipe("vanilla").replace(hidden_size=8), task, config=DoctorConfig(batch_size=4)
    )
    assert d.recipe == "vanilla" and d.task_length == 40 and "core.l0" in d.spectra
    with pytest.raises(TypeError, match="needs a Task"):
        doctor("vanilla", _x(10))
    with pytest.raises(TypeError, match="or a recipe"):
        doctor(3, task)
