"""One spec per recurrent family: what differs between RNN, LSTM, GRU and IndRNN, as data.

Layers, cells, masks and both paths (reference and fused) read these fields instead of asking
which family they run; a new family is a new :class:`KindSpec` plus its step function (and,
later, its fused function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import _VF, Tensor, nn

from rnnguard.errors import ConfigError
from rnnguard.nn import init as rinit
from rnnguard.nn.functional import (
    HiddenState,
    LSTMState,
    State,
    StepFn,
    gru_step,
    indrnn_step,
    lstm_step,
    rnn_step,
)
from rnnguard.nn.fused import (
    FusedFn,
    gru_direction,
    indrnn_direction,
    lstm_direction,
    rnn_direction,
)
from rnnguard.nn.options import RecurrentOptions

__all__ = ["KINDS", "KindSpec", "kind_spec"]


@dataclass(frozen=True)
class KindSpec:
    """A recurrent family: its parameters, its state, its extras and the functions that run it."""

    name: str
    """``"rnn"``, ``"lstm"``, ``"gru"`` or ``"indrnn"`` (what ``module.kind`` says)."""
    gates: int
    """Gate blocks stacked in ``weight_ih``/``weight_hh`` (torch.nn's order)."""
    state: type[HiddenState] | type[LSTMState]
    """The state NamedTuple: ``LSTMState(h, c)`` or ``HiddenState(h)``."""
    step: StepFn
    """The reference step (:mod:`rnnguard.nn.functional`)."""
    fused: FusedFn
    """The fused direction (:mod:`rnnguard.nn.fused`)."""
    default_init: Callable[[nn.Module], Any]
    """The init a fresh module gets (before ``init=`` and ``forget_bias=``)."""
    default_nonlinearity: str = "tanh"
    nonlinearities: tuple[str, ...] = ("tanh",)
    """The activations the step accepts (``nonlinearity=``)."""
    vector_recurrence: bool = False
    """``weight_hh`` is a per-unit vector (H,): no ``bias_hh``, no recurrent LayerNorm."""
    cell_layer_norm: bool = False
    """With ``layer_norm=True`` the cell state is normalised too (``layer_norm_c_*``)."""
    keep_gate: int | None = None
    """Index of the gate ``forget_bias=`` sets (LSTM forget gate, GRU update gate)."""
    residual_between_layers: bool = False
    """``residual=True`` adds each layer's input to its output (else it acts inside the step)."""
    torch_kernel: Callable[[str], Any] | None = None
    """torch's own fused kernel for a nonlinearity, when torch has this family."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # A spec holds functions (some lambdas): pickle it (and the modules holding it) by name.
        return (kind_spec, (self.name,))

    def __repr__(self) -> str:
        return f"KindSpec({self.name!r})"

    @property
    def has_cell(self) -> bool:
        """Whether the state carries a cell state ``c`` besides ``h``."""
        return self.state is LSTMState

    def hh_shape(self, hidden_size: int, proj_size: int = 0) -> tuple[int, ...]:
        """Shape of ``weight_hh`` (and of a DropConnect mask); ``proj_size`` is h's width if > 0."""
        if self.vector_recurrence:
            return (hidden_size,)
        return (self.gates * hidden_size, proj_size or hidden_size)

    def zero_state(
        self,
        batch: int,
        hidden_size: int,
        like: Tensor,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zeros (batch, hidden_size) for every state component, on ``like``'s device/dtype by default."""
        z = torch.zeros(batch, hidden_size, device=device or like.device, dtype=dtype or like.dtype)
        return self.state(*(z if i == 0 else z.clone() for i in range(len(self.state._fields))))

    def options(
        self, *, bias: bool, zoneout_cell: float | None = None, **extras: Any
    ) -> RecurrentOptions:
        """The validated options of a module of this family (family defaults filled in).

        ``zoneout_cell=None`` means "as ``zoneout``" for an LSTM; other families have no cell
        state and reject it.
        """
        if zoneout_cell is not None and not self.has_cell:
            raise ConfigError(
                f"zoneout_cell applies only to LSTM, got zoneout_cell={zoneout_cell} for {self.name}"
            )
        if extras.get("nonlinearity") is None:
            extras["nonlinearity"] = self.default_nonlinearity
        opts = RecurrentOptions(
            **extras,
            zoneout_cell=(
                0.0 if not self.has_cell
                else extras.get("zoneout", 0.0) if zoneout_cell is None else zoneout_cell
            ),
        )  # fmt: skip
        if opts.nonlinearity not in self.nonlinearities:
            raise ConfigError(
                f"nonlinearity must be one of {', '.join(map(repr, self.nonlinearities))} for "
                f"{self.name}, got {opts.nonlinearity!r}"
            )
        if opts.residual_scale is not None and self.residual_between_layers:
            raise ConfigError(
                f"residual_scale applies to the residual inside an RNN step, got "
                f"residual_scale={opts.residual_scale} for {self.name}"
            )
        if opts.forget_bias is not None and not bias:
            raise ConfigError("forget_bias needs bias=True, got bias=False")
        return opts

    def default_options(self, given: RecurrentOptions) -> RecurrentOptions:
        """The options a module of this family has when no extra is given (for ``extra_repr``)."""
        return RecurrentOptions(
            nonlinearity=self.default_nonlinearity,
            zoneout_cell=given.zoneout if self.has_cell else 0.0,
        )


_ACTS = ("tanh", "relu", "leaky_relu")

KINDS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec(
            "rnn", 1, HiddenState, rnn_step, rnn_direction, rinit.torch_default_,
            nonlinearities=_ACTS,
            torch_kernel=lambda act: {"tanh": _VF.rnn_tanh, "relu": _VF.rnn_relu}.get(act),
        ),
        KindSpec(
            "lstm", 4, LSTMState, lstm_step, lstm_direction, rinit.torch_default_,
            cell_layer_norm=True, keep_gate=1, torch_kernel=lambda act: _VF.lstm,
        ),
        KindSpec(
            "gru", 3, HiddenState, gru_step, gru_direction, rinit.torch_default_,
            keep_gate=1, torch_kernel=lambda act: _VF.gru,
        ),
        KindSpec(
            "indrnn", 1, HiddenState, indrnn_step, indrnn_direction, rinit.indrnn_,
            default_nonlinearity="relu", nonlinearities=_ACTS, vector_recurrence=True,
            residual_between_layers=True,
        ),
    )
}  # fmt: skip


def kind_spec(name: str) -> KindSpec:
    """The spec of the family ``name`` (``"rnn"``, ``"lstm"``, ``"gru"``, ``"indrnn"``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(
            f"kind must be one of {', '.join(map(repr, KINDS))}, got {name!r}"
        ) from None
