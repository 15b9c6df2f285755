"""One-step cells ``RNNCell``, ``LSTMCell``, ``GRUCell``, ``IndRNNCell``, drop-in for torch.nn's.

Called as torch.nn's cells are: ``h = cell(x, h)``, ``h, c = lstm_cell(x, (h, c))``, ``hx=None``
for zeros, unbatched input, zero sizes, the same parameter names. :meth:`_Cell.step` keeps the
step contract the diagnostics use, ``step(x_t, state=None) -> (out_t, new_state)`` with
``state`` a NamedTuple (:class:`~rnnguard.nn.functional.LSTMState` or
:class:`~rnnguard.nn.functional.HiddenState`). Both run
:func:`rnnguard.nn.functional.cell_forward`, the same step the layers run.

Random masks (DropConnect, zoneout) are drawn afresh on every training-mode call, i.e. every step.
A layer instead shares one DropConnect mask over the whole sequence; to get that from a cell you
unroll yourself, hold the masks for the sequence::

    with cell.hold_masks():             # one DropConnect mask until the block ends
        state = cell.initial_state(batch)
        for x_t in x:
            out, state = cell.step(x_t, state)

``cell.hold_masks()`` also works as a plain call (hold from now on; each such call starts a new
sequence) and ``cell.release_masks()`` returns to fresh masks per call. With ``steps=T`` the cell
also draws the zoneout masks of all ``T`` steps at once, exactly as a layer does, so an unrolled
cell reproduces the layer's numbers under the same seed.
"""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.errors import ConfigError, ConfigTypeError, ShapeError
from rnnguard.nn._base import InitArg, RecurrentBase, check_state_like
from rnnguard.nn.functional import DirectionMasks, State, cell_forward, sample_masks
from rnnguard.utils import checks as _checks

__all__ = ["GRUCell", "IndRNNCell", "LSTMCell", "MaskHold", "RNNCell"]


class _HeldMasks:
    """The masks a cell holds for one sequence; drawn on the first training-mode call."""

    def __init__(self, steps: int | None) -> None:
        self.steps = steps
        self.masks: DirectionMasks | None = None
        self.batch = 0
        self.t = 0  # the next step's index into held zoneout masks


class MaskHold:
    """Returned by :meth:`hold_masks`; as a context manager, restores the previous holding on exit."""

    def __init__(self, cell: _Cell, previous: _HeldMasks | None) -> None:
        self._cell = cell
        self._previous = previous

    def __enter__(self) -> _Cell:
        return self._cell

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cell._held = self._previous


class _Cell(RecurrentBase):
    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str | None = None,
        layer_norm: bool = False,
        zoneout: float = 0.0,
        zoneout_cell: float | None = None,
        dropconnect: float = 0.0,
        forget_bias: float | None = None,
        init: InitArg = None,
        weight_norm: bool = False,
        residual: bool = False,
        residual_scale: float | None = None,
        recurrent_max: float | None = None,
        max_length: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        # torch.nn's cells accept zero sizes (an empty state or input), so these do too.
        self.input_size = _checks.integer("input_size", input_size, minimum=0)
        self._setup(
            kind, hidden_size, bias, nonlinearity=nonlinearity, layer_norm=layer_norm,
            zoneout=zoneout, zoneout_cell=zoneout_cell, dropconnect=dropconnect,
            forget_bias=forget_bias, init=init, weight_norm=weight_norm, residual=residual,
            residual_scale=residual_scale, recurrent_max=recurrent_max, max_length=max_length,
            zero_ok=True,
        )  # fmt: skip
        self._make_params([self.input_size], {"device": device, "dtype": dtype})
        self._finish_init()
        self._held: _HeldMasks | None = None

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def layer_input_size(self, layer: int = 0) -> int:
        return self.input_size

    def initial_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zeros of shape (batch, hidden_size) for every state component."""
        _checks.integer("batch", batch, minimum=0)
        w = self.layer_params().weight_ih
        return self.spec.zero_state(batch, self.hidden_size, w, device, dtype)

    def hold_masks(self, steps: int | None = None) -> MaskHold:
        """Share one DropConnect mask over the calls from now on (a new sequence starts here).

        The masks are drawn on the next training-mode call, from that call's device and dtype, in
        the layers' order (docs/equations.md). Without ``steps`` zoneout masks stay per call; with
        ``steps=T`` the zoneout masks of ``T`` steps are drawn up front as a layer draws them, and
        the batch size is then fixed and a call past step ``T`` is an error. Use as a context
        manager to restore the previous behaviour afterwards, or call :meth:`release_masks`.
        """
        if steps is not None:
            _checks.positive_int("steps", steps)
        previous = getattr(self, "_held", None)
        self._held = _HeldMasks(steps)
        return MaskHold(self, previous)

    def release_masks(self) -> None:
        """Back to the default: fresh masks on every training-mode call."""
        self._held = None

    def _step_masks(self, x: Tensor) -> DirectionMasks | None:
        """This call's masks: fresh ones, or the held sequence's masks for the current step."""
        if not self.training or not self.options.random:
            return None
        held = getattr(self, "_held", None)
        batch = x.shape[0]
        if held is None:
            return _at(self._draw(1, batch, x), 0)
        if held.masks is None:  # the sequence's first step: draw as a layer's forward does
            held.masks = self._draw(held.steps or 1, batch, x)
            held.batch, held.t = batch, 0
            step = _at(held.masks, 0)
        elif held.steps is None:  # zoneout per call, DropConnect held
            step = _at(self._draw(1, batch, x, with_dropconnect=False), 0)
            step = step._replace(dropconnect=held.masks.dropconnect)
        else:
            if batch != held.batch:
                raise ConfigError(
                    f"x_t batch size must stay {held.batch} while masks are held for "
                    f"steps={held.steps}, got {batch}; call hold_masks() to start a new sequence"
                )
            if held.t >= held.steps:
                raise ConfigError(
                    f"masks are held for steps={held.steps} and all are used; call hold_masks() "
                    "to start a new sequence"
                )
            step = _at(held.masks, held.t)
        held.t += 1
        return step

    def _draw(
        self, steps: int, batch: int, like: Tensor, with_dropconnect: bool = True
    ) -> DirectionMasks:
        options = self.options if with_dropconnect else replace(self.options, dropconnect=0.0)
        return sample_masks(
            self.spec, options, num_layers=1, num_directions=1, hidden_size=self.hidden_size,
            steps=steps, batch=batch, like=like,
        )[0].directions[0]  # fmt: skip

    def _coerce_state(self, state: Any, batch: int, batched: bool, like: Tensor) -> State:
        parts: tuple[Any, ...]
        if self.spec.has_cell:
            if not isinstance(state, tuple) or len(state) != 2:
                raise ConfigTypeError(
                    "state must be a tuple (h, c) or an LSTMState for LSTMCell, got "
                    f"{type(state).__name__}"
                )
            parts = tuple(state)
        else:
            parts = (state,) if isinstance(state, Tensor) else tuple(state)
            if len(parts) != 1:
                raise ConfigTypeError(
                    f"state must be a HiddenState(h) or a Tensor, got {type(state).__name__}"
                )
        shape = (batch, self.hidden_size) if batched else (self.hidden_size,)
        for name, t in zip(("h", "c"), parts):
            if not isinstance(t, Tensor):
                raise ConfigTypeError(f"state.{name} must be a Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ShapeError(f"state.{name} must have shape {shape}, got {tuple(t.shape)}")
            check_state_like(f"state.{name}", t, like)
        parts = tuple(t if batched else t.unsqueeze(0) for t in parts)
        return self.spec.state(*parts)

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        """torch.nn's call: ``h' = cell(input, h)``; an LSTM cell ``(h', c') = cell(input, (h, c))``.

        ``input`` is (B, input_size) or unbatched (input_size,); ``hx`` None means zeros. The
        extras act as in :meth:`step`, which returns ``(out, state)`` instead.
        """
        _, new = self.step(input, hx)
        return tuple(new) if self.spec.has_cell else new[0]

    def step(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, State]:
        """One step with the step contract: ``x_t`` -> ``(h_t, new_state)``.

        ``state`` and ``new_state`` are NamedTuples in torch order (:class:`LSTMState`,
        :class:`HiddenState`; a plain tensor or tuple is accepted too); ``state=None`` means zeros.
        """
        if not isinstance(x_t, Tensor):
            raise ConfigTypeError(f"x_t must be a Tensor, got {type(x_t).__name__}")
        if x_t.dim() not in (1, 2):  # torch.nn: ValueError
            raise ConfigError(
                f"x_t must be 2-D (batch, input_size) or 1-D, got {x_t.dim()}-D tensor"
            )
        if x_t.shape[-1] != self.input_size:
            raise ShapeError(
                f"x_t feature size must equal input_size={self.input_size}, got {x_t.shape[-1]}"
            )
        batched = x_t.dim() == 2
        x = x_t if batched else x_t.unsqueeze(0)
        batch = x.shape[0]
        if state is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        else:
            state = self._coerce_state(state, batch, batched, x)
        masks = self._step_masks(x)
        new = cell_forward(
            self.spec, x, state, self.layer_params(), self.options, self.training, masks
        )
        if not batched:
            new = type(new)(*(t.squeeze(0) for t in new))
        return new[0], new

    def _torch_twin(self) -> nn.Module:
        w = self.weight_ih
        factory: dict[str, Any] = {"bias": self.bias, "device": w.device, "dtype": w.dtype}
        if self.kind == "lstm":
            return nn.LSTMCell(self.input_size, self.hidden_size, **factory)
        if self.kind == "gru":
            return nn.GRUCell(self.input_size, self.hidden_size, **factory)
        return nn.RNNCell(
            self.input_size, self.hidden_size, nonlinearity=self.options.nonlinearity, **factory
        )

    def extra_repr(self) -> str:
        s = [f"{self.input_size}, {self.hidden_size}"]
        if not self.bias:
            s.append("bias=False")
        # As torch.nn.RNNCell: the nonlinearity only when it is not the default.
        if self.options.nonlinearity != self.spec.default_nonlinearity:
            s.append(f"nonlinearity={self.options.nonlinearity!r}")
        return ", ".join(s + self._extra_options())


def _at(m: DirectionMasks, t: int) -> DirectionMasks:
    """Step ``t`` of per-sequence masks: the shared DropConnect mask and that step's zoneout masks."""
    return DirectionMasks(
        m.dropconnect,
        m.zoneout[t] if m.zoneout is not None else None,
        m.zoneout_cell[t] if m.zoneout_cell is not None else None,
    )


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
    """One Elman RNN step (``residual=True``: h_{t-1} + act(...), convex with ``residual_scale``),
    torch.nn.RNNCell's parameters."""

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
        residual_scale: float | None = None,
    ) -> None:
        super().__init__(
            "rnn", input_size, hidden_size, bias, nonlinearity=nonlinearity,
            layer_norm=layer_norm, zoneout=zoneout, dropconnect=dropconnect, init=init,
            weight_norm=weight_norm, residual=residual, residual_scale=residual_scale,
            device=device, dtype=dtype,
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
