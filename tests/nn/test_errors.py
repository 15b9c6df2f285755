"""Every bad argument raises ConfigError (a ValueError) or TypeError naming it, the value and the expectation."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import rnnguard.nn as rn
from rnnguard.errors import ConfigError
from rnnguard.nn import functional as RF
from rnnguard.nn import init as rinit

pytestmark = pytest.mark.usefixtures("single_thread")

LAYERS = [rn.RNN, rn.LSTM, rn.GRU, rn.IndRNN]


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"input_size": 0, "hidden_size": 4}, ConfigError, ["input_size", "positive", "0"]),
        ({"input_size": 3, "hidden_size": -2}, ConfigError, ["hidden_size", "-2"]),
        ({"input_size": 3, "hidden_size": 4, "num_layers": 0}, ConfigError, ["num_layers", "0"]),
        ({"input_size": 3.0, "hidden_size": 4}, TypeError, ["input_size", "float"]),
        (
            {"input_size": 3, "hidden_size": 4, "dropout": 1.5},
            ConfigError,
            ["dropout", "[0, 1]", "1.5"],
        ),
        ({"input_size": 3, "hidden_size": 4, "dropout": "0.1"}, TypeError, ["dropout", "str"]),
        ({"input_size": 3, "hidden_size": 4, "zoneout": -0.1}, ConfigError, ["zoneout", "-0.1"]),
        (
            {"input_size": 3, "hidden_size": 4, "dropconnect": 1.5},
            ConfigError,
            ["dropconnect", "1.5"],
        ),
        (
            {"input_size": 3, "hidden_size": 4, "impl": "cuda"},
            ConfigError,
            ["impl", "'cuda'", "'auto'"],
        ),
        (
            {"input_size": 3, "hidden_size": 4, "init": "nope"},
            ConfigError,
            ["init", "'nope'", "safe"],
        ),
        ({"input_size": 3, "hidden_size": 4, "init": 3}, TypeError, ["init", "int"]),
        ({"input_size": 3, "hidden_size": 4, "bias": 1}, TypeError, ["bias", "bool"]),
        ({"input_size": 3, "hidden_size": 4, "bidirectional": "yes"}, TypeError, ["bidirectional"]),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, exc, words):
    with pytest.raises(exc) as info:
        cls(**kwargs)
    for w in words:
        assert w in str(info.value)


def test_bad_layer_specific_arguments():
    with pytest.raises(ConfigError, match=r"nonlinearity.*'tanh'.*'gelu'"):
        rn.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ConfigError, match="nonlinearity"):
        rn.IndRNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ConfigError, match="proj_size has to be smaller than hidden_size"):
        rn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ConfigError, match=r"forget_bias.*bias=True"):
        rn.LSTM(3, 4, bias=False, forget_bias=1.0)
    with pytest.raises(ConfigError, match=r"zoneout_cell.*\[0, 1\)"):
        rn.LSTM(3, 4, zoneout_cell=1.0)
    with pytest.raises(ConfigError, match=r"max_length or recurrent_max"):
        rn.IndRNN(3, 4, max_length=10, recurrent_max=1.0)
    with pytest.raises(ConfigError, match=r"max_length.*0"):
        rn.IndRNN(3, 4, max_length=0)
    with pytest.raises(ConfigError, match=r"recurrent_max.*-1"):
        rn.IndRNNCell(3, 4, recurrent_max=-1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        rn.GRU(3, 4, zoneout_cell=0.1)  # a cell-state rate only exists for LSTM


def test_residual_scale_arguments():
    with pytest.raises(ConfigError, match=r"residual_scale needs residual=True"):
        rn.RNN(3, 4, residual_scale=0.5)
    with pytest.raises(ConfigError, match=r"residual_scale.*\(0, 1\).*1\.0"):
        rn.RNN(3, 4, residual=True, residual_scale=1.0)
    with pytest.raises(TypeError, match=r"residual_scale.*str"):
        rn.RNNCell(3, 4, residual=True, residual_scale="0.5")
    with pytest.raises(TypeError, match="unexpected keyword"):
        rn.IndRNN(3, 4, residual=True, residual_scale=0.5)  # its residual joins layers
    assert "residual_scale=0.5" in repr(rn.RNN(3, 4, residual=True, residual_scale=0.5))


def _has_fused() -> bool:
    try:
        from rnnguard.nn.fused import run_direction  # noqa: F401
    except ImportError:
        return False
    return True


def test_fused_impl_matches_reference_or_says_unavailable():
    fused = rn.LSTM(3, 4, layer_norm=True, impl="fused")
    x = torch.randn(5, 2, 3)
    if not _has_fused():
        with pytest.raises(NotImplementedError, match="impl='fused'"):
            fused(x)
        return
    ref = rn.LSTM(3, 4, layer_norm=True, impl="reference")
    ref.load_state_dict(fused.state_dict())
    torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", LAYERS)
def test_bad_forward_inputs(cls):
    m = cls(3, 4, 2)
    with pytest.raises(ConfigError, match=r"input.*3-D.*2-D.*4-D"):
        m(torch.randn(2, 2, 2, 3))
    with pytest.raises(ConfigError, match=r"input feature size.*input_size=3.*got 5"):
        m(torch.randn(6, 2, 5))
    with pytest.raises(ConfigError, match=r"input dtype.*float32.*float64"):
        m(torch.randn(6, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="input must be a Tensor"):
        m([[1.0, 2.0, 3.0]])
    good = torch.zeros(2, 2, 4)
    bad = torch.zeros(2, 3, 4)
    if cls is rn.LSTM:
        with pytest.raises(ConfigError, match=r"c_0 must have shape \(2, 2, 4\).*\(2, 3, 4\)"):
            m(torch.randn(6, 2, 3), (good, bad))
        with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
            m(torch.randn(6, 2, 3), good)
    else:
        with pytest.raises(ConfigError, match=r"hx must have shape \(2, 2, 4\).*\(2, 3, 4\)"):
            m(torch.randn(6, 2, 3), bad)
        with pytest.raises(ConfigError, match=r"hx must have shape \(2, 4\)"):
            m(torch.randn(6, 3), good)  # unbatched input needs an unbatched state


def test_bad_cell_inputs():
    cell = rn.LSTMCell(3, 4)
    with pytest.raises(ConfigError, match=r"x_t.*2-D.*3-D"):
        cell(torch.randn(1, 2, 3))
    with pytest.raises(ConfigError, match=r"x_t feature size.*input_size=3.*got 2"):
        cell(torch.randn(2, 2))
    with pytest.raises(ConfigError, match=r"state.c must have shape \(2, 4\).*\(2, 5\)"):
        cell(torch.randn(2, 3), rn.LSTMState(torch.zeros(2, 4), torch.zeros(2, 5)))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\) or an LSTMState"):
        cell(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match=r"batch.*-1"):
        cell.initial_state(-1)


def test_bad_registry_init_and_step_function_arguments():
    with pytest.raises(
        ConfigError, match=r"unknown layer 'transformerxl'; expected one of: .*lstm"
    ):
        rn.create_layer("transformerxl", input_size=3, hidden_size=4)
    with pytest.raises(ConfigError, match=r"unknown init scheme 'bogus'; expected one of: .*safe"):
        rinit.apply(nn.LSTM(3, 4), "bogus")
    with pytest.raises(ConfigError, match=r"t_max"):
        rinit.apply(nn.LSTM(3, 4), "chrono")
    with pytest.raises(ConfigError, match=r"t_max must be > 2.*1.5"):
        rinit.chrono_(nn.LSTM(3, 4), 1.5)
    with pytest.raises(ConfigError, match=r"forget_bias_ needs.*lstm or gru.*RNN"):
        rinit.forget_bias_(nn.RNN(3, 4), 1.0)
    with pytest.raises(ConfigError, match=r"num_gates=4.*\(6, 4\)"):
        rinit.orthogonal_gates_(torch.empty(6, 4), 4)
    with pytest.raises(ConfigError, match=r"layer must be an int in \[0, 2\).*2"):
        rn.layer_step_function(nn.LSTM(3, 4, 2), layer=2)
    with pytest.raises(ConfigError, match=r"direction must be an int in \[0, 1\).*1"):
        rn.layer_step_function(rn.GRU(3, 4), direction=1)
    with pytest.raises(TypeError, match=r"module must be.*Linear"):
        rn.layer_step_function(nn.Linear(3, 4))
    with pytest.raises(NotImplementedError, match="proj_size"):
        rn.layer_step_function(nn.LSTM(3, 4, proj_size=2))


@pytest.mark.parametrize(
    "value",
    [0, 1, 0.0, 0.5, 1.0, np.float32(0.25), Fraction(1, 3), -0.1, 1.5, float("nan"), True, "0.5", None, 1j],
)  # fmt: skip
@pytest.mark.parametrize(("cls", "torch_cls"), [(rn.LSTM, nn.LSTM), (rn.GRU, nn.GRU), (rn.RNN, nn.RNN), (rn.IndRNN, nn.RNN)])  # fmt: skip
def test_dropout_accepts_exactly_what_torch_accepts(cls, torch_cls, value):
    def accepts(make):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                make(3, 4, num_layers=2, dropout=value)
            except (ValueError, TypeError):
                return False
        return True

    assert accepts(cls) == accepts(torch_cls)
    if accepts(cls):
        assert cls(3, 4, num_layers=2, dropout=value).dropout == float(value)


@pytest.mark.parametrize("value", [0.5, 1])
def test_dropout_on_a_single_layer_warns_like_torch(value):
    with pytest.warns(UserWarning) as ours:
        rn.LSTM(3, 4, dropout=value)
    with pytest.warns(UserWarning) as theirs:
        nn.LSTM(3, 4, dropout=value)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert f"dropout={value} and num_layers=1" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rn.GRU(3, 4, dropout=0.0)
        rn.GRU(3, 4, num_layers=2, dropout=1.0)


def test_run_direction_requires_masks_in_training():
    m = rn.LSTM(3, 4, zoneout_cell=0.3)
    x = torch.randn(5, 2, 3)
    z = torch.zeros(2, 4)
    with pytest.raises(
        ConfigError, match=r"zoneout_cell > 0 in training needs masks\.zoneout_cell"
    ):
        RF.run_direction(m.spec, x, RF.LSTMState(z, z), m.layer_params(), None, m.options, True)


@pytest.mark.parametrize("make", [lambda: rn.LSTM(3, 4), lambda: rn.GRU(3, 4, layer_norm=True), lambda: rn.IndRNN(3, 4, impl="reference")])  # fmt: skip
def test_state_dtype_and_device_must_match_the_input(make):
    m = make()
    x = torch.randn(5, 2, 3)
    name = "h_0" if isinstance(m, rn.LSTM) else "hx"

    def state(**kw):
        h = torch.zeros(1, 2, 4, **kw)
        return (h, torch.zeros(1, 2, 4)) if isinstance(m, rn.LSTM) else h

    with pytest.raises(ConfigError, match=rf"{name} dtype must match the input's \(torch.float32\), got torch.float64"):  # fmt: skip
        m(x, state(dtype=torch.float64))
    with pytest.raises(ConfigError, match=rf"{name} must be on the input's device \(cpu\), got meta"):  # fmt: skip
        m(x, state(device="meta"))


def test_cell_state_dtype_must_match_the_input():
    cell = rn.GRUCell(3, 4)
    with pytest.raises(ConfigError, match=r"state.h dtype must match the input's.*float64"):
        cell(torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_sequence_is_rejected(impl, batch_first):
    m = rn.GRU(3, 4, batch_first=batch_first, layer_norm=True, impl=impl)
    x = torch.randn(2, 0, 3) if batch_first else torch.randn(0, 2, 3)
    with pytest.raises(ConfigError, match=r"input must have at least one time step.*length 0"):
        m(x)
    assert m(torch.randn(2, 1, 3))[0].shape == (2, 1, 4)  # one step is enough
