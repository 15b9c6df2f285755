"""One-step cells ``RNNCell``, ``LSTMCell``, ``GRUCell``, ``IndRNNCell``.

Contract: ``forward(x_t, state=None) -> (out_t, new_state)`` with ``state`` a NamedTuple
(:class:`~rnnguard.nn.functional.LSTMState` or :class:`~rnnguard.nn.functional.HiddenState`).
The step is :func:`rnnguard.nn.functional.cell_forward`, the same one the layers run. Random masks
(DropConnect, zoneout) are drawn afresh on every call, i.e. every step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnguard.errors import ConfigError
from rnnguard.nn import _checks
from rnnguard.nn._base import RecurrentBase
from rnnguard.nn.functional import (
    DirectionMasks,
    HiddenState,
    LSTMState,
    State,
    cell_forward,
    sample_masks,
)
from rnnguard.nn.layers import InitArg

__all__ = ["GRUCell", "IndRNNCell", "LSTMCell", "RNNCell"]


class _Cell(RecurrentBase):
    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str = "tanh",
        layer_norm: bool = False,
        zoneout: float = 0.0,
        zoneout_cell: float | None = None,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
        residual: bool = False,
        recurrent_max: float | None = None,
        max_length: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.input_size = _checks.positive_int("input_size", input_size)
        self._setup(
            kind, hidden_size, bias, nonlinearity=nonlinearity, layer_norm=layer_norm,
            zoneout=zoneout, zoneout_cell=zoneout_cell, dropconnect=dropconnect,
            forget_bias=forget_bias, init=init, weight_norm=weight_norm, residual=residual,
            recurrent_max=recurrent_max, max_length=max_length,
        )  # fmt: skip
        self._make_params([self.input_size], {"device": device, "dtype": dtype})
        self._finish_init()

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def layer_input_size(self, layer: int = 0) -> int:
        return self.input_size

    def initial_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zeros of shape (batch, hidden_size) for every state component."""
        _checks.positive_int("batch", batch)
        w: Tensor = self.layer_params().weight_ih
        z = torch.zeros(batch, self.hidden_size, device=device or w.device, dtype=dtype or w.dtype)
        return LSTMState(z, z.clone()) if self.kind == "lstm" else HiddenState(z)

    def _coerce_state(self, state: Any, batch: int, batched: bool) -> State:
        parts: tuple[Any, ...]
        if self.kind == "lstm":
            if not isinstance(state, tuple) or len(state) != 2:
                raise TypeError(
                    f"state must be an LSTMState(h, c) for LSTMCell, got {type(state).__name__}"
                )
            parts = tuple(state)
        else:
            parts = (state,) if isinstance(state, Tensor) else tuple(state)
            if len(parts) != 1:
                raise TypeError(
                    f"state must be a HiddenState(h) or a Tensor, got {type(state).__name__}"
                )
        shape = (batch, self.hidden_size) if batched else (self.hidden_size,)
        for name, t in zip(("h", "c"), parts):
            if not isinstance(t, Tensor):
                raise TypeError(f"state.{name} must be a Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ConfigError(f"state.{name} must have shape {shape}, got {tuple(t.shape)}")
        parts = tuple(t if batched else t.unsqueeze(0) for t in parts)
        return LSTMState(*parts) if self.kind == "lstm" else HiddenState(*parts)

    def forward(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, State]:
        """One step: ``x_t`` (B, input_size) or unbatched (input_size,) -> ``(h_t, new_state)``."""
        if not isinstance(x_t, Tensor):
            raise TypeError(f"x_t must be a Tensor, got {type(x_t).__name__}")
        if x_t.dim() not in (1, 2):
            raise ConfigError(
                f"x_t must be 2-D (batch, input_size) or 1-D, got {x_t.dim()}-D tensor"
            )
        if x_t.shape[-1] != self.input_size:
            raise ConfigError(
                f"x_t feature size must equal input_size={self.input_size}, got {x_t.shape[-1]}"
            )
        batched = x_t.dim() == 2
        x = x_t if batched else x_t.unsqueeze(0)
        batch = x.shape[0]
        if state is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        else:
            state = self._coerce_state(state, batch, batched)
        opts = self.step_options()
        masks = None
        if self.training and (self.dropconnect > 0 or self.zoneout > 0 or self.zoneout_cell > 0):
            m = sample_masks(
                self.kind, num_layers=1, num_directions=1, hidden_size=self.hidden_size, steps=1,
                batch=batch, like=x, dropconnect=self.dropconnect, zoneout=self.zoneout,
                zoneout_cell=self.zoneout_cell,
            )[0].directions[0]  # fmt: skip
            masks = DirectionMasks(
                m.dropconnect,
                m.zoneout_h[0] if m.zoneout_h is not None else None,
                m.zoneout_c[0] if m.zoneout_c is not None else None,
            )
        new = cell_forward(self.kind, x, state, self.layer_params(), opts, masks)
        if not batched:
            new = type(new)(*(t.squeeze(0) for t in new))
        return new[0], new

    def extra_repr(self) -> str:
        s = [f"{self.input_size}, {self.hidden_size}"]
        if not self.bias:
            s.append("bias=False")
        if self.kind in ("rnn", "indrnn"):
            s.append(f"nonlinearity={self.nonlinearity!r}")
        return ", ".join(s + self._extra_options())


class LSTMCell(_Cell):
    """One LSTM step; torch.nn.LSTMCell's parameters and maths, plus the layer extras."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        zoneout_cell: float | None = None,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
    ) -> None:
        super().__init__(
            "lstm", input_size, hidden_size, bias, layer_norm=layer_norm, zoneout=zoneout,
            zoneout_cell=zoneout_cell, dropconnect=dropconnect, forget_bias=forget_bias,
            init=init, weight_norm=weight_norm, device=device, dtype=dtype,
        )  # fmt: skip


class GRUCell(_Cell):
    """One GRU step; torch.nn.GRUCell's parameters and maths, plus the layer extras."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
    ) -> None:
        super().__init__(
            "gru", input_size, hidden_size, bias, layer_norm=layer_norm, zoneout=zoneout,
            dropconnect=dropconnect, forget_bias=forget_bias, init=init, weight_norm=weight_norm,
            device=device, dtype=dtype,
        )  # fmt: skip


class RNNCell(_Cell):
    """One Elman RNN step (``residual=True``: h_{t-1} + act(...)), torch.nn.RNNCell's parameters."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: Any = None,
        *,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        dropconnect: float = 0.0,
        init: InitArg = None,
        weight_norm: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__(
            "rnn", input_size, hidden_size, bias, nonlinearity=nonlinearity,
            layer_norm=layer_norm, zoneout=zoneout, dropconnect=dropconnect, init=init,
            weight_norm=weight_norm, residual=residual, device=device, dtype=dtype,
        )  # fmt: skip


class IndRNNCell(_Cell):
    """One IndRNN step h = act(W x + b + u * h_prev); |u| bounded via ``max_length``/``recurrent_max``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str = "relu",
        layer_norm: bool = False,
        max_length: int | None = None,
        recurrent_max: float | None = None,
        zoneout: float = 0.0,
        dropconnect: float = 0.0,
        init: InitArg = None,
        weight_norm: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            "indrnn", input_size, hidden_size, bias, nonlinearity=nonlinearity,
            layer_norm=layer_norm, zoneout=zoneout, dropconnect=dropconnect, init=init,
            weight_norm=weight_norm, recurrent_max=recurrent_max, max_length=max_length,
            device=device, dtype=dtype,
        )  # fmt: skip
