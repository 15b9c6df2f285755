"""Float64 gradcheck of every layer and cell with every extra switched on (inputs and parameters)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_sequence

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

F_IN, H = 2, 2

LAYERS = {
    "lstm": lambda: rn.LSTM(
        F_IN, H, 2, bidirectional=True, dropout=0.3, layer_norm=True, zoneout=0.3,
        zoneout_cell=0.2, dropconnect=0.3, weight_norm=True, forget_bias=1.0,
    ),
    "gru": lambda: rn.GRU(
        F_IN, H, 2, bidirectional=True, dropout=0.3, layer_norm=True, zoneout=0.3,
        dropconnect=0.3, weight_norm=True, init="safe",
    ),
    "rnn": lambda: rn.RNN(
        F_IN, H, 2, "leaky_relu", bidirectional=True, dropout=0.3, layer_norm=True,
        zoneout=0.3, dropconnect=0.3, weight_norm=True, residual=True,
    ),
    "indrnn": lambda: rn.IndRNN(
        F_IN, H, 2, nonlinearity="tanh", bidirectional=True, dropout=0.3, layer_norm=True,
        residual=True, zoneout=0.3, dropconnect=0.3, weight_norm=True, recurrent_max=0.9,
    ),
}  # fmt: skip

CELLS = {
    "lstm": lambda: rn.LSTMCell(F_IN, H, layer_norm=True, zoneout=0.3, zoneout_cell=0.2, dropconnect=0.3, weight_norm=True),
    "gru": lambda: rn.GRUCell(F_IN, H, layer_norm=True, zoneout=0.3, dropconnect=0.3, weight_norm=True),
    "rnn": lambda: rn.RNNCell(F_IN, H, nonlinearity="tanh", layer_norm=True, zoneout=0.3, dropconnect=0.3, residual=True, weight_norm=True),
    "indrnn": lambda: rn.IndRNNCell(F_IN, H, nonlinearity="tanh", layer_norm=True, zoneout=0.3, dropconnect=0.3, recurrent_max=0.9, weight_norm=True),
}  # fmt: skip


def _inside_bound(module):
    # A clamp has a kink at the bound; keep every recurrent weight strictly inside it.
    if getattr(module, "recurrent_max", None) is not None:
        rn.init.indrnn_(module, -0.5, 0.5, input_init=False)
    return module


def _check(module, call, x, training: bool, fast: bool = True):
    module = _inside_bound(module.double()).train(training)
    names, values = zip(
        *[(n, p.detach().clone().requires_grad_()) for n, p in module.named_parameters()]
    )

    def fn(x, *params):
        torch.manual_seed(1234)  # the same masks on every evaluation
        out = call(functional_call(module, dict(zip(names, params)), (x,)))
        return out

    assert torch.autograd.gradcheck(fn, (x, *values), eps=1e-6, atol=1e-5, fast_mode=fast)


def _flat(out):
    y, state = out
    parts = [y.data if hasattr(y, "batch_sizes") else y]
    parts += list(state) if isinstance(state, tuple) else [state]
    return tuple(parts)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("impl", ["reference", "auto"])
def test_layer_gradcheck(kind, training, impl):
    x = torch.randn(3, 2, F_IN, dtype=torch.float64, requires_grad=True)
    layer = LAYERS[kind]()
    layer.impl = impl  # "auto" with extras runs the fused path
    # Layers use gradcheck's random-projection fast mode; the cells below check full Jacobians.
    _check(layer, _flat, x, training, fast=True)


@pytest.mark.parametrize("kind", ["lstm", "indrnn"])
def test_layer_gradcheck_packed(kind):
    module = _inside_bound(LAYERS[kind]().double())
    x = torch.randn(3, 2, F_IN, dtype=torch.float64, requires_grad=True)

    def call_packed(m_out):
        return _flat(m_out)

    names, values = zip(
        *[(n, p.detach().clone().requires_grad_()) for n, p in module.named_parameters()]
    )

    def fn(x, *params):
        torch.manual_seed(99)
        packed = pack_sequence([x[:, 0], x[:2, 1]], enforce_sorted=False)
        return call_packed(functional_call(module, dict(zip(names, params)), (packed,)))

    assert torch.autograd.gradcheck(fn, (x, *values), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("training", [True, False])
def test_cell_gradcheck(kind, training):
    x = torch.randn(2, F_IN, dtype=torch.float64, requires_grad=True)
    # torch.nn's call convention: h, or (h, c) for the LSTM cell
    _check(
        CELLS[kind](),
        lambda out: out if isinstance(out, tuple) else (out,),
        x,
        training,
        fast=False,
    )
