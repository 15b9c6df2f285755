from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnguard.nn as rnn_nn
from rnnguard.diagnose._common import eval_mode
from rnnguard.diagnose.saturation import (
    SaturationThresholds,
    measure_saturation,
    preactivations,
)
from rnnguard.diagnose.trajectory import trace_recurrent
from rnnguard.errors import ConfigError


def _lstm_with_forget_bias(total: float) -> nn.LSTM:
    lstm = nn.LSTM(3, 8, batch_first=True)
    with torch.no_grad():
        for b in (lstm.bias_ih_l0, lstm.bias_hh_l0):
            b[8:16] = total / 2
    return lstm


@pytest.mark.parametrize("layer_norm", [False, True])
def test_lstm_preactivations_rebuild_the_cell_state(layer_norm: bool) -> None:
    lstm = rnn_nn.LSTM(3, 6, layer_norm=layer_norm, batch_first=True)
    with eval_mode(lstm), torch.no_grad(), trace_recurrent(lstm) as traces:
        lstm(torch.randn(2, 5, 3))
    d = traces[0].directions[0]
    z = preactivations(d)
    c_prev, c = d.stacked(1, after=False), d.stacked(1, after=True)
    rebuilt = torch.sigmoid(z["f"]) * c_prev + torch.sigmoid(z["i"]) * torch.tanh(z["g"])
    torch.testing.assert_close(rebuilt, c)


def test_gru_preactivations_rebuild_the_state() -> None:
    gru = nn.GRU(3, 6, batch_first=True)
    with eval_mode(gru), torch.no_grad(), trace_recurrent(gru) as traces:
        gru(torch.randn(2, 5, 3))
    d = traces[0].directions[0]
    z = preactivations(d)
    u = torch.sigmoid(z["z"])
    rebuilt = (1 - u) * torch.tanh(z["n"]) + u * d.stacked(0, after=False)
    torch.testing.assert_close(rebuilt, d.stacked(0, after=True))


def test_forget_gate_stuck_shut_and_open() -> None:
    x = torch.randn(8, 20, 3)
    shut = measure_saturation(_lstm_with_forget_bias(-10.0), x)["lstm.l0"]
    assert shut.forget_closed is not None and shut.forget_closed > 0.95
    assert shut.forget_mean is not None and shut.forget_mean < 0.01
    assert shut.per_gate["forget"] > 0.95  # |z_f| ~ 10 lies in sigmoid's flat part
    fine = measure_saturation(_lstm_with_forget_bias(2.0), x)["lstm.l0"]
    assert fine.forget_closed == 0.0 and 0.8 < (fine.forget_mean or 0) < 0.95
    assert fine.dead_units is None


def test_dead_relu_units_and_saturated_tanh() -> None:
    relu = nn.RNN(3, 10, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        relu.bias_ih_l0[:4] = -100.0  # four units can never fire
    sat = measure_saturation(relu, torch.randn(6, 15, 3))["rnn.l0"]
    assert sat.dead_units == pytest.approx(0.4)
    assert sat.tanh_saturated is None
    ind = rnn_nn.IndRNN(3, 10, batch_first=True)
    with torch.no_grad():
        ind.bias_ih_l0[:5] = -100.0
    assert measure_saturation(ind, torch.randn(6, 15, 3))["indrnn.l0"].dead_units == pytest.approx(
        0.5
    )
    tanh = nn.RNN(3, 10, batch_first=True)
    with torch.no_grad():
        tanh.weight_ih_l0.mul_(100.0)
    assert measure_saturation(tanh, torch.randn(6, 15, 3))["rnn.l0"].tanh_saturated > 0.8  # type: ignore[operator]


def test_gru_update_gate_closed() -> None:
    gru = nn.GRU(3, 6, batch_first=True)
    with torch.no_grad():
        gru.bias_ih_l0[6:12] = -20.0
    sat = measure_saturation(gru, torch.randn(4, 10, 3))["gru.l0"]
    assert sat.forget_closed == 1.0 and sat.per_gate["update"] == 1.0


def test_thresholds_are_checked() -> None:
    with pytest.raises(ConfigError, match="tanh_flat"):
        SaturationThresholds(tanh_flat=1.5)
    with pytest.raises(TypeError, match="thresholds"):
        measure_saturation(nn.GRU(3, 3, batch_first=True), torch.randn(2, 3, 3), thresholds=0.5)  # type: ignore[arg-type]
