"""The one-step map of a layer or cell, for diagnostics: :func:`layer_step_function`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.errors import ConfigError
from rnnguard.nn._base import RecurrentBase
from rnnguard.nn.functional import (
    TORCH_MODES,
    HiddenState,
    LayerParams,
    State,
    cell_forward,
    torch_cell_kind,
    torch_suffix,
)
from rnnguard.nn.kinds import KindSpec, kind_spec
from rnnguard.nn.options import RecurrentOptions

__all__ = ["StepFunction", "layer_step_function"]


class StepFunction:
    """The deterministic (eval-mode) one-step map of one layer and direction of a recurrent module.

    ``step(x_t, state) -> state``, ``output(state) -> h_t``, ``initial_state(batch)``. Parameters
    are read live from the module on every call, so gradients flow to them.
    """

    def __init__(
        self,
        spec: KindSpec,
        params: Callable[[], LayerParams],
        options: RecurrentOptions,
        input_size: int,
        hidden_size: int,
    ) -> None:
        self.spec = spec
        self._params = params
        self.options = options
        self.input_size = input_size
        self.hidden_size = hidden_size

    @property
    def kind(self) -> str:
        """The family's name: ``"rnn"``, ``"lstm"``, ``"gru"`` or ``"indrnn"``."""
        return self.spec.name

    @property
    def params(self) -> LayerParams:
        """The current tensors of this layer and direction."""
        return self._params()

    def step(self, x_t: Tensor, state: State | Tensor) -> State:
        """Advance one step on ``x_t`` (B, input_size)."""
        if isinstance(state, Tensor):
            state = HiddenState(state)
        return cell_forward(self.spec, x_t, state, self._params(), self.options, False)

    def output(self, state: State) -> Tensor:
        """The layer output for ``state`` (its h)."""
        return state[0]

    def initial_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zeros of the right shape (an :class:`LSTMState` for LSTMs, else :class:`HiddenState`)."""
        like = self._params().weight_ih
        return self.spec.zero_state(batch, self.hidden_size, like, device, dtype)

    def __repr__(self) -> str:
        return (
            f"StepFunction(kind={self.kind!r}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size})"
        )


def layer_step_function(module: nn.Module, layer: int = 0, direction: int = 0) -> StepFunction:
    """One-step map (eval semantics) of ``layer``/``direction`` of a torch.nn or rnnguard RNN/LSTM/GRU/IndRNN.

    Cells (torch.nn's ``RNNCell``/``LSTMCell``/``GRUCell`` and rnnguard's) have one layer and direction.

    Eval semantics: zoneout contributes its expectation, DropConnect and dropout are off.
    """
    if getattr(module, "proj_size", 0):  # h and c would differ in width: no flat step state
        raise NotImplementedError("layer_step_function does not support LSTM with proj_size > 0")
    if isinstance(module, RecurrentBase):
        mod: Any = module
        layers, dirs = int(mod.num_layers), 2 if mod.bidirectional else 1
        _check_index(layer, layers, direction, dirs)
        return StepFunction(
            mod.spec,
            lambda: mod.layer_params(layer, direction),
            mod.options,
            int(mod.layer_input_size(layer)),
            int(mod.hidden_size),
        )
    if isinstance(module, nn.RNNBase):
        if module.mode not in TORCH_MODES:
            raise ConfigError(
                f"module.mode must be one of {tuple(TORCH_MODES)}, got {module.mode!r}"
            )
        dirs = 2 if module.bidirectional else 1
        _check_index(layer, module.num_layers, direction, dirs)
        kind, act = TORCH_MODES[module.mode]
        sfx = torch_suffix(layer, direction)
        tm: Any = module

        def params() -> LayerParams:
            b = tm.bias
            return LayerParams(
                getattr(tm, "weight_ih" + sfx),
                getattr(tm, "weight_hh" + sfx),
                getattr(tm, "bias_ih" + sfx) if b else None,
                getattr(tm, "bias_hh" + sfx) if b else None,
            )

        in_size = module.input_size if layer == 0 else dirs * module.hidden_size
        return StepFunction(
            kind_spec(kind), params, RecurrentOptions(nonlinearity=act), in_size, module.hidden_size
        )
    if isinstance(module, nn.RNNCellBase):
        _check_index(layer, 1, direction, 1)
        cell: Any = module
        act = str(getattr(module, "nonlinearity", "tanh"))

        def cell_params() -> LayerParams:
            b = cell.bias
            return LayerParams(
                cell.weight_ih,
                cell.weight_hh,
                cell.bias_ih if b else None,
                cell.bias_hh if b else None,
            )

        return StepFunction(
            kind_spec(torch_cell_kind(module)),
            cell_params,
            RecurrentOptions(nonlinearity=act),
            module.input_size,
            module.hidden_size,
        )
    raise TypeError(
        "module must be a torch.nn.RNN/LSTM/GRU(Cell) or an rnnguard layer or cell, "
        f"got {type(module).__name__}"
    )


def _check_index(layer: int, layers: int, direction: int, dirs: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < layers:
        raise ConfigError(f"layer must be an int in [0, {layers}), got {layer!r}")
    if isinstance(direction, bool) or not isinstance(direction, int) or not 0 <= direction < dirs:
        raise ConfigError(f"direction must be an int in [0, {dirs}), got {direction!r}")
