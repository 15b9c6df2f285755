"""Cells holding their DropConnect (and zoneout) masks over a sequence, as the layers do."""

from __future__ import annotations

import pytest
import torch

import rnnguard.nn as rn
from rnnguard.errors import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")

F_IN, H, T, B = 3, 5, 6, 4

PAIRS = {
    "lstm": (rn.LSTMCell, rn.LSTM, {"zoneout": 0.2, "zoneout_cell": 0.3}),
    "gru": (rn.GRUCell, rn.GRU, {"zoneout": 0.2}),
    "rnn": (rn.RNNCell, rn.RNN, {"zoneout": 0.2}),
    "indrnn": (rn.IndRNNCell, rn.IndRNN, {"zoneout": 0.2}),
}


def _pair(kind, **kw):
    cell_cls, layer_cls, _ = PAIRS[kind]
    layer = layer_cls(F_IN, H, impl="reference", **kw)
    cell = cell_cls(F_IN, H, **kw)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
    return cell, layer


def _unroll(cell, x, seed):
    torch.manual_seed(seed)
    state = cell.initial_state(x.shape[1])
    outs = []
    for t in range(x.shape[0]):
        out, state = cell.step(x[t], state)
        outs.append(out)
    return torch.stack(outs), state


def _layer(layer, x, seed):
    torch.manual_seed(seed)
    out, hn = layer(x)
    return out, hn


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_held_masks_with_steps_reproduce_the_layer(kind):
    cell, layer = _pair(kind, dropconnect=0.4, **PAIRS[kind][2])
    x = torch.randn(T, B, F_IN)
    with cell.hold_masks(steps=T):
        out, state = _unroll(cell, x, seed=3)
    want, hn = _layer(layer, x, seed=3)
    torch.testing.assert_close(out, want)
    final = hn if kind == "lstm" else (hn,)
    for got, exp in zip(state, final):
        torch.testing.assert_close(got, exp[0])
    assert not torch.allclose(_unroll(cell, x, seed=3)[0], want)  # released: masks per call again


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_held_dropconnect_without_steps_reproduces_the_layer(kind):
    cell, layer = _pair(kind, dropconnect=0.5)
    x = torch.randn(T, B, F_IN)
    want = _layer(layer, x, seed=8)[0]
    cell.hold_masks()  # a plain call holds until release_masks()
    torch.testing.assert_close(_unroll(cell, x, seed=8)[0], want)
    cell.release_masks()
    assert not torch.allclose(_unroll(cell, x, seed=8)[0], want)


def test_default_draws_a_new_dropconnect_mask_every_call():
    cell = rn.RNNCell(F_IN, 64, dropconnect=0.5)
    x, h = torch.randn(B, F_IN), torch.randn(B, 64)
    assert not torch.equal(cell.step(x, h)[0], cell.step(x, h)[0])
    with cell.hold_masks() as same:
        assert same is cell
        first = cell.step(x, h)[0]
        torch.testing.assert_close(cell.step(x, h)[0], first, rtol=0, atol=0)
        cell.hold_masks()  # a new sequence: a new mask
        assert not torch.equal(cell.step(x, h)[0], first)
    assert not torch.equal(
        cell.step(x, h)[0], cell.step(x, h)[0]
    )  # the block's end restored the default


def test_held_zoneout_without_steps_stays_per_call():
    cell = rn.GRUCell(F_IN, 64, zoneout=0.5)
    x, h = torch.randn(B, F_IN), torch.randn(B, 64)
    with cell.hold_masks():
        assert not torch.equal(cell.step(x, h)[0], cell.step(x, h)[0])


def test_nested_hold_restores_the_outer_sequence():
    cell = rn.RNNCell(F_IN, 64, dropconnect=0.5)
    x, h = torch.randn(B, F_IN), torch.randn(B, 64)
    with cell.hold_masks():
        outer = cell.step(x, h)[0]
        with cell.hold_masks():
            assert not torch.equal(cell.step(x, h)[0], outer)
        torch.testing.assert_close(cell.step(x, h)[0], outer, rtol=0, atol=0)


def test_eval_mode_draws_nothing_while_holding():
    cell = rn.LSTMCell(F_IN, H, dropconnect=0.5, zoneout=0.1)
    x = torch.randn(B, F_IN)
    torch.manual_seed(0)
    expected = torch.rand(3)
    with cell.hold_masks(steps=2):
        cell.eval()
        torch.manual_seed(0)
        for _ in range(5):  # eval calls neither draw nor use up held steps
            cell(x)
        assert torch.equal(torch.rand(3), expected)
        cell.train()
        cell(x)
        cell(x)
        with pytest.raises(ConfigError, match="all are used"):
            cell(x)


def test_held_steps_errors():
    cell = rn.GRUCell(F_IN, H, zoneout=0.2)
    x = torch.randn(B, F_IN)
    with pytest.raises(ConfigError, match=r"steps must be a positive int, got 0"):
        cell.hold_masks(steps=0)
    with cell.hold_masks(steps=2):
        cell(x)
        with pytest.raises(ConfigError, match=r"batch size must stay 4.*steps=2, got 2"):
            cell(x[:2])
        cell(x)
        with pytest.raises(ConfigError, match=r"held for steps=2 and all are used.*hold_masks"):
            cell(x)
