"""How torch's type-dispatching tools treat rnnguard modules: never a model computing something else.

The layers are not subclasses of torch.nn's (``isinstance(m, nn.LSTM)`` is False), so tools that
dispatch on those classes leave them alone; ``to_torch()`` gives the exact torch.nn twin of a
module without extras (sharing its parameters), and TorchScript/tracing either work through it or
raise a clear error.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import rnnguard.nn as rn
from rnnguard.errors import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")

X = torch.randn(6, 2, 3)


class Model(nn.Module):
    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.core(x)[0])


EXTRAS = [
    lambda: rn.LSTM(3, 4, layer_norm=True),
    lambda: rn.LSTM(3, 4, zoneout=0.2),
    lambda: rn.GRU(3, 4, dropconnect=0.3),
    lambda: rn.RNN(3, 4, nonlinearity="leaky_relu"),
    lambda: rn.RNN(3, 4, residual=True),
    lambda: rn.LSTM(3, 4, weight_norm=True),
    lambda: rn.IndRNN(3, 4),
]
PLAIN = [
    lambda: rn.LSTM(3, 4, 2, bidirectional=True, forget_bias=1.0),
    lambda: rn.LSTM(3, 5, proj_size=4),
    lambda: rn.GRU(3, 4, init="safe"),
    lambda: rn.RNN(3, 4, nonlinearity="relu", batch_first=True),
]


def test_layers_are_not_torch_subclasses() -> None:
    for make, cls in ((rn.LSTM, nn.LSTM), (rn.GRU, nn.GRU), (rn.RNN, nn.RNN)):
        assert not isinstance(make(3, 4), (cls, nn.RNNBase))
    assert not isinstance(rn.LSTMCell(3, 4), nn.RNNCellBase)


@pytest.mark.parametrize("make", PLAIN)
def test_to_torch_is_the_exact_twin_sharing_parameters(make) -> None:  # type: ignore[no-untyped-def]
    ours = make()
    twin = ours.to_torch()
    assert isinstance(twin, nn.RNNBase)
    assert [(n, p) for n, p in twin.named_parameters()] == [
        (n, p) for n, p in ours.named_parameters()
    ]  # the same objects, in the same order
    x = X.transpose(0, 1) if ours.batch_first else X
    out, out_t = ours(x)[0], twin(x)[0]
    torch.testing.assert_close(out, out_t, rtol=0, atol=0)
    with torch.no_grad():
        ours.weight_hh_l0.mul_(0.5)  # shared: the twin sees it
    torch.testing.assert_close(ours(x)[0], twin(x)[0], rtol=0, atol=0)


def test_cells_to_torch() -> None:
    for ours, cls in (
        (rn.LSTMCell(3, 4), nn.LSTMCell),
        (rn.RNNCell(3, 4, nonlinearity="relu"), nn.RNNCell),
    ):
        twin = ours.to_torch()
        assert type(twin) is cls
        x = torch.randn(2, 3)
        got, want = ours(x), twin(x)
        for g, w in zip(
            got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
        ):
            torch.testing.assert_close(g, w)  # cells run torch's ops, not its cell kernel


@pytest.mark.parametrize("make", EXTRAS)
def test_to_torch_refuses_what_torch_would_compute_differently(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"to_torch needs a module torch\.nn can compute exactly"):
        make().to_torch()


def _quantize(model: nn.Module, spec):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


@pytest.mark.parametrize("make", [*EXTRAS[:5], PLAIN[0]])
@pytest.mark.parametrize("spec", [None, {nn.LSTM, nn.GRU, nn.RNN, nn.Linear}, "ours"])
def test_quantize_dynamic_leaves_our_layers_untouched(make, spec) -> None:  # type: ignore[no-untyped-def]
    core = make().eval()
    model = Model(core).eval()
    before = core(X)[0]
    q = _quantize(model, {type(core), nn.Linear} if spec == "ours" else spec)
    assert type(q.core) is type(core)  # not swapped for a quantized torch.nn layer
    torch.testing.assert_close(q.core(X)[0], before, rtol=0, atol=0)
    assert type(q.head) is not nn.Linear  # the tool did run on the rest of the model


def test_quantize_dynamic_through_to_torch() -> None:
    core = rn.LSTM(3, 4).eval()
    q = _quantize(Model(core.to_torch()).eval(), {nn.LSTM, nn.Linear})
    assert type(q.core).__module__.startswith("torch.ao.nn.quantized")


@pytest.mark.parametrize("make", [*PLAIN[2:], lambda: rn.LSTM(3, 4, forget_bias=1.0)])
def test_torchscript_of_a_plain_layer_scripts_its_torch_twin(make) -> None:  # type: ignore[no-untyped-def]
    model = Model(make()).eval()
    eager = model(X)
    params = dict(model.named_parameters())
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(X), eager, rtol=0, atol=0)
    for name, p in scripted.named_parameters():
        assert p is params[name]  # the same parameters: training the script trains the model


@pytest.mark.parametrize("make", EXTRAS)
def test_torchscript_with_extras_raises_a_clear_error(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError, match="cannot be compiled with TorchScript"):
        torch.jit.script(Model(make()))


def test_torchscript_of_cells() -> None:
    cell = rn.GRUCell(3, 4)
    x = torch.randn(2, 3)
    torch.testing.assert_close(torch.jit.script(cell)(x), cell(x))  # torch's cell kernel: rounding
    with pytest.raises(RuntimeError, match="cannot be compiled with TorchScript"):
        torch.jit.script(rn.GRUCell(3, 4, zoneout=0.1))


def test_tracing_with_extras_raises_and_plain_traces_exactly() -> None:
    with pytest.raises(RuntimeError, match="cannot be traced"):
        torch.jit.trace(Model(rn.LSTM(3, 4, layer_norm=True)), X)
    model = Model(rn.LSTM(3, 4)).eval()
    traced = torch.jit.trace(model, X)
    other = torch.randn(9, 2, 3)  # another length: torch's kernel is one op, not an unrolled loop
    torch.testing.assert_close(traced(other), model(other), rtol=0, atol=0)
