"""What a torch.nn user expects of any module: reprs, factory kwargs, packed round trips, state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

F_IN, H = 3, 5


def test_repr_with_defaults_equals_torch():
    pairs = [
        (rn.LSTM(F_IN, H), nn.LSTM(F_IN, H)),
        (rn.GRU(F_IN, H, 2, bias=False, batch_first=True, dropout=0.5, bidirectional=True),
         nn.GRU(F_IN, H, 2, bias=False, batch_first=True, dropout=0.5, bidirectional=True)),
        (rn.RNN(F_IN, H, 3), nn.RNN(F_IN, H, 3)),
        (rn.LSTMCell(F_IN, H), nn.LSTMCell(F_IN, H)),
        (rn.GRUCell(F_IN, H, bias=False), nn.GRUCell(F_IN, H, bias=False)),
        (rn.RNNCell(F_IN, H), nn.RNNCell(F_IN, H)),
    ]  # fmt: skip
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_repr_shows_every_non_default_option_and_only_those():
    assert repr(rn.IndRNN(F_IN, H)) == "IndRNN(3, 5)"
    assert repr(rn.IndRNNCell(F_IN, H)) == "IndRNNCell(3, 5)"
    assert "nonlinearity='tanh'" in repr(rn.IndRNN(F_IN, H, nonlinearity="tanh"))
    assert "nonlinearity='tanh'" in repr(rn.IndRNNCell(F_IN, H, nonlinearity="tanh"))
    assert "nonlinearity='relu'" in repr(rn.RNN(F_IN, H, nonlinearity="relu"))
    assert "nonlinearity='leaky_relu'" in repr(rn.RNNCell(F_IN, H, nonlinearity="leaky_relu"))
    text = repr(
        rn.LSTM(
            F_IN, H, layer_norm=True, zoneout=0.1, zoneout_cell=0.0, dropconnect=0.2,
            forget_bias=1.0, init="safe", weight_norm=True, impl="reference",
        )
    )  # fmt: skip
    for part in (
        "layer_norm=True", "zoneout=0.1", "zoneout_cell=0.0", "dropconnect=0.2",
        "forget_bias=1.0", "init='safe'", "weight_norm=True", "impl='reference'",
    ):  # fmt: skip
        assert part in text, part
    bounded = repr(rn.IndRNN(F_IN, H, max_length=100, residual=True))
    assert "max_length=100" in bounded and "residual=True" in bounded
    assert "recurrent_max" not in bounded
    assert "recurrent_max=0.9" in repr(rn.IndRNNCell(F_IN, H, recurrent_max=0.9))


EXTRAS = [
    lambda **kw: rn.LSTM(F_IN, H, 2, bidirectional=True, layer_norm=True, weight_norm=True, forget_bias=1.0, init="safe", **kw),
    lambda **kw: rn.GRU(F_IN, H, layer_norm=True, weight_norm=True, **kw),
    lambda **kw: rn.RNN(F_IN, H, layer_norm=True, residual=True, **kw),
    lambda **kw: rn.IndRNN(F_IN, H, 2, layer_norm=True, max_length=10, **kw),
    lambda **kw: rn.LSTMCell(F_IN, H, layer_norm=True, weight_norm=True, **kw),
    lambda **kw: rn.IndRNNCell(F_IN, H, layer_norm=True, recurrent_max=0.9, **kw),
]  # fmt: skip


@pytest.mark.parametrize("make", EXTRAS)
def test_factory_kwargs_reach_every_parameter_of_the_extras(make):
    m = make(dtype=torch.float64)
    params = dict(m.named_parameters())
    assert any(n.startswith("layer_norm_") for n in params)
    assert all(p.dtype == torch.float64 for p in params.values()), {
        n: p.dtype for n, p in params.items() if p.dtype != torch.float64
    }
    meta = make(device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


@pytest.mark.parametrize("impl", ["reference", "auto"])
@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU, rn.IndRNN])
def test_pack_padded_unsorted_round_trip(cls, impl):
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, F_IN)
    m = cls(
        F_IN, H, 2, batch_first=True, bidirectional=True, impl=impl, layer_norm=True, zoneout=0.2
    )
    m.eval()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = m(packed)
    padded, out_lengths = pad_packed_sequence(out, batch_first=True)
    assert torch.equal(out_lengths, lengths)
    h_n = state[0] if isinstance(state, tuple) else state
    for b, n in enumerate(lengths.tolist()):
        alone, alone_state = m(x[b : b + 1, :n])
        alone_h = alone_state[0] if isinstance(alone_state, tuple) else alone_state
        torch.testing.assert_close(padded[b, :n], alone[0])
        torch.testing.assert_close(h_n[:, b], alone_h[:, 0])  # states in the caller's order
        assert torch.count_nonzero(padded[b, n:]) == 0


def test_state_dict_errors_name_the_missing_key():
    plain = nn.LSTM(F_IN, H).state_dict()
    for target in (rn.LSTM(F_IN, H), rn.LSTM(F_IN, H, weight_norm=True)):
        sd = dict(plain)
        del sd["bias_hh_l0"]
        with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"bias_hh_l0"'):
            target.load_state_dict(sd)
    sd = dict(plain)
    del sd["weight_hh_l0"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*weight_hh_l0"):
        rn.LSTM(F_IN, H, weight_norm=True).load_state_dict(sd)
    ln = rn.LSTM(F_IN, H, layer_norm=True)
    with pytest.raises(RuntimeError, match=r"layer_norm_ih_l0"):
        ln.load_state_dict(plain)  # a plain checkpoint lacks the LayerNorm gains
    result = ln.load_state_dict(plain, strict=False)
    assert set(result.missing_keys) == {
        "layer_norm_ih_l0", "layer_norm_hh_l0", "layer_norm_c_weight_l0", "layer_norm_c_bias_l0",
    }  # fmt: skip
    assert result.unexpected_keys == []
    torch.testing.assert_close(ln.weight_hh_l0, plain["weight_hh_l0"])


@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU, rn.RNN, rn.IndRNN])
def test_extras_run_under_cpu_autocast(cls):
    m = cls(F_IN, H, 2, layer_norm=True, zoneout=0.1, dropconnect=0.2)
    x = torch.randn(6, 2, F_IN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        out = m(x)[0]
        m.impl = "reference"
        torch.manual_seed(0)
        ref = m(x)[0]
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    # The fused path runs mixed precision (products in bf16, the rest in float32), the reference
    # loop autocast's own casts: the same maths to bf16 rounding, not the same bits.
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref.float(), rtol=0, atol=0.05)
    m.eval()
    full = m(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)[0]
    torch.testing.assert_close(low.float(), full, rtol=0, atol=0.1)  # bf16 keeps ~3 digits
