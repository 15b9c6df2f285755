"""The doctor's ``dead-units`` verdict, from ReLU models built to have a known share of dead units.

The live units run an identity recurrence on positive inputs (neither vanishing nor exploding),
so the dead units are the only finding; the share of dead units is set exactly by biases that
keep them below zero on every input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnguard
from rnnguard.diagnose.doctor import DoctorConfig, doctor

H = 32


class UserModel(nn.Module):
    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(H, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.core(x)[0])


def _relu_rnn(dead: int) -> nn.Module:
    """torch.nn's ReLU RNN: identity recurrence, positive input weights, ``dead`` units shut off."""
    rnn = nn.RNN(2, H, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.eye(H))
        rnn.weight_ih_l0.abs_().add_(0.1)
        rnn.bias_hh_l0.zero_()
        rnn.bias_ih_l0.zero_()
        rnn.bias_ih_l0[:dead] = -50.0
    return UserModel(rnn)


def _x(length: int = 30) -> torch.Tensor:
    return torch.rand(16, length, 2, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dead", [16, 24])
def test_relu_rnn_with_dead_units_gets_the_dead_units_verdict_alone(dead: int) -> None:
    d = doctor(_relu_rnn(dead), _x())
    assert d.verdicts == ["dead-units"]
    (finding,) = d.findings
    (ev,) = finding.evidence
    assert ev.source == "core.l0" and ev.metric == "dead unit fraction"
    assert ev.value == pytest.approx(dead / H) and ev.threshold == 0.25 and ev.relation == ">"
    assert d.saturation["core.l0"].dead_units == pytest.approx(dead / H)
    assert d.prescriptions and all("dead-units" in p.addresses for p in d.prescriptions)
    assert all(p.recipe != "indrnn-relu" for p in d.prescriptions)  # no rectifier as the cure


def test_dead_units_below_the_threshold_are_healthy_and_the_threshold_is_a_setting() -> None:
    model = _relu_rnn(4)  # 1/8 of the units
    assert doctor(model, _x()).verdicts == ["healthy"]
    d = doctor(model, _x(), config=DoctorConfig(dead_units=0.1))
    assert d.verdicts == ["dead-units"] and d.findings[0].evidence[0].threshold == 0.1


def test_rnnguard_indrnn_with_dead_units() -> None:
    layer = rnnguard.IndRNN(2, H, batch_first=True)
    with torch.no_grad():
        layer.weight_hh_l0.fill_(1.0)
        layer.weight_ih_l0.abs_().add_(0.1)
        layer.bias_ih_l0.zero_()
        layer.bias_ih_l0[: H // 2] = -50.0
    d = doctor(UserModel(layer), _x(16))
    assert d.verdicts == ["dead-units"]
    assert d.findings[0].evidence[0].value == pytest.approx(0.5)
