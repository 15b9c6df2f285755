"""The same mistake raises the exception type torch.nn raises (and our ConfigError with a clear message)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnguard.nn as rn
from rnnguard.errors import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")

X = torch.randn(5, 2, 3)


def _layer_mistakes(lib: Any) -> dict[str, Callable[[], Any]]:
    lstm, gru = lib.LSTM(3, 4), lib.GRU(3, 4)
    z = torch.zeros
    return {
        "input 4-D": lambda: lstm(torch.randn(2, 2, 2, 3)),
        "input 1-D": lambda: gru(torch.randn(3)),
        "feature size": lambda: lstm(torch.randn(5, 2, 2)),
        "feature size unbatched": lambda: gru(torch.randn(5, 2)),
        "feature size packed": lambda: gru(pack_padded_sequence(torch.randn(5, 2, 2), [5, 3])),
        "sequence length 0": lambda: lstm(torch.randn(0, 2, 3)),
        "h_0 batch": lambda: lstm(X, (z(1, 3, 4), z(1, 3, 4))),
        "h_0 2-D for batched input": lambda: lstm(X, (z(2, 4), z(2, 4))),
        "hx batch": lambda: gru(X, z(1, 3, 4)),
        "hx layers": lambda: gru(X, z(2, 2, 4)),
        "hx device": lambda: gru(X, z(1, 2, 4, device="meta")),
        "input dtype": lambda: lstm(X.double()),
        "proj_size negative": lambda: lib.LSTM(3, 4, proj_size=-1),
        "proj_size too big": lambda: lib.LSTM(3, 4, proj_size=4),
        "proj_size on GRU": lambda: lib.GRU(3, 4, proj_size=2),
        "hidden_size 0": lambda: lib.GRU(3, 0),
        "hidden_size float": lambda: lib.GRU(3, 4.0),
        "input_size 0": lambda: lib.LSTM(0, 4),
        "num_layers 0": lambda: lib.RNN(3, 4, 0),
        "dropout 2": lambda: lib.LSTM(3, 4, 2, dropout=2.0),
        "bias not bool": lambda: lib.GRU(3, 4, bias="yes"),
        "batch_first not bool": lambda: lib.GRU(3, 4, batch_first=1),
        "nonlinearity unknown": lambda: lib.RNN(3, 4, nonlinearity="gelu"),
    }


def _cell_mistakes(lib: Any) -> dict[str, Callable[[], Any]]:
    gru = lib.GRUCell(3, 4)
    return {
        "cell input 3-D": lambda: gru(torch.randn(2, 2, 3)),
        "cell feature size": lambda: gru(torch.randn(2, 2)),
        "cell state batch": lambda: gru(torch.randn(2, 3), torch.zeros(3, 4)),
        "cell state dtype": lambda: gru(torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.float64)),
    }


def _raised(fn: Callable[[], Any]) -> BaseException | None:
    try:
        fn()
    except Exception as exc:  # the test inspects whatever was raised
        return exc
    return None


@pytest.mark.parametrize("table", [_layer_mistakes, _cell_mistakes])
def test_each_mistake_raises_torchs_exception_type(table: Any) -> None:
    theirs, ours = table(nn), table(rn)
    for name in theirs:
        expected, got = _raised(theirs[name]), _raised(ours[name])
        assert expected is not None, f"{name}: torch accepts it"
        assert got is not None, f"{name}: rnnguard accepts it"
        assert isinstance(got, type(expected)), (
            f"{name}: torch raises {type(expected).__name__}, rnnguard {type(got).__mro__}"
        )
        assert isinstance(got, ConfigError), f"{name}: not a ConfigError: {got!r}"


def test_messages_stay_ours() -> None:
    with pytest.raises(RuntimeError, match=r"input feature size must equal input_size=3, got 2"):
        rn.LSTM(3, 4)(torch.randn(5, 2, 2))
    with pytest.raises(RuntimeError, match=r"hx must be on the input's device \(cpu\), got meta"):
        rn.GRU(3, 4)(X, torch.zeros(1, 2, 4, device="meta"))
    with pytest.raises(RuntimeError, match=r"h_0 must have shape \(1, 2, 4\)"):
        rn.LSTM(3, 4)(X, (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
    with pytest.raises(RuntimeError, match="input must be on the layer's device"):
        rn.GRU(3, 4, device="meta")(X)
