from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rnnguard.nn as rnn_nn
from rnnguard.diagnose._common import eval_mode
from rnnguard.diagnose.horizon import gradient_horizons
from rnnguard.diagnose.trajectory import find_recurrent, trace_recurrent


class Wrap(nn.Module):
    """A user-style model: some recurrent module inside, a linear head on every step."""

    def __init__(self, core: nn.Module, width: int, out: int = 2) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.core(x)[0])


@pytest.mark.parametrize(
    "core, width",
    [
        (nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True), 10),
        (nn.GRU(3, 5, batch_first=True), 5),
        (nn.RNN(3, 5, nonlinearity="relu", batch_first=True), 5),
        (rnn_nn.GRU(3, 5, num_layers=2, layer_norm=True, batch_first=True), 5),
        (rnn_nn.IndRNN(3, 3, num_layers=2, residual=True, batch_first=True), 3),
        (rnn_nn.LSTM(3, 5, zoneout=0.2, batch_first=True), 5),
    ],
)
def test_step_by_step_unroll_reproduces_the_layer(core: nn.Module, width: int) -> None:
    model = Wrap(core, width)
    x = torch.randn(4, 7, 3)
    with eval_mode(model):
        ref = model(x)
        with trace_recurrent(model) as traces:
            out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    (trace,) = traces
    dirs = 2 if getattr(core, "bidirectional", False) else 1
    assert len(trace.directions) == core.num_layers * dirs
    d0 = trace.directions[0]
    assert len(d0.states) == 8 and d0.inputs.shape == (4, 7, 3)
    assert find_recurrent(model)[0][0] == "core"


def test_hidden_horizon_is_the_total_gradient() -> None:
    torch.manual_seed(0)
    rnn = nn.RNN(3, 4, batch_first=True)

    class Ident(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

    x = torch.randn(1, 6, 3)
    hs = gradient_horizons(Ident(), x)
    curve = hs.hidden["rnn.l0"].norms
    # y_T = h_T: dy_T/dh_T = I, and dh_T/dh_{T-k} is the product of diag(1 - h^2) W_hh
    h = rnn(x)[0][0].detach()
    w = rnn.weight_hh_l0.detach()
    jac = torch.eye(4)
    expected = [2.0]  # ||I_4||_F
    for t in range(5, 0, -1):
        jac = jac @ torch.diag(1 - h[t] ** 2) @ w
        expected.append(torch.linalg.matrix_norm(jac).item())
    np.testing.assert_allclose(curve, expected, rtol=1e-5)
    assert hs.input.norms.shape == (6,)


def test_bidirectional_labels_and_reverse_distances() -> None:
    model = Wrap(nn.GRU(3, 4, bidirectional=True, batch_first=True), 8)
    hs = gradient_horizons(model, torch.randn(2, 9, 3), step=5)
    assert set(hs.hidden) == {"core.l0", "core.l0.reverse"}
    assert len(hs.hidden["core.l0"].norms) == 6  # steps 0..5 lie upstream of step 5
    assert len(hs.hidden["core.l0.reverse"].norms) == 4  # steps 5..8, upstream for the reverse pass
    d = hs.to_dict()
    assert d["hidden"]["core.l0"]["max_distance"] == 5


def test_chaotic_layers_are_traced_despite_amplified_rounding() -> None:
    # W = 3 x orthogonal makes a tanh RNN chaotic: float rounding differences between the fused
    # kernel and the step-by-step unroll grow exponentially, which must not be taken for a bug
    rnn = nn.RNN(2, 32, batch_first=True)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(32, 32))
        rnn.weight_hh_l0.copy_(3.0 * q)
    hs = gradient_horizons(Wrap(rnn, 32, 1), torch.randn(4, 300, 2))
    assert hs.input.peak_ratio > 100  # the gradient from the far past explodes


@pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")
def test_projected_lstm_is_skipped_but_still_gets_an_input_horizon() -> None:
    model = Wrap(nn.LSTM(3, 6, proj_size=4, batch_first=True), 4)
    assert find_recurrent(model) == []
    hs = gradient_horizons(model, torch.randn(2, 8, 3))
    assert hs.hidden == {} and hs.input.norms.shape == (8,)
