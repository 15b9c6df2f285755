"""One frozen, validated object for the extras of a recurrent layer or cell.

A layer builds its :class:`RecurrentOptions` once (:meth:`rnnguard.nn.kinds.KindSpec.options`
adds the checks that depend on the family) and hands the same object to the masks, the reference
step, the fused loops and the native kernels' wrappers, so every extra keeps one name from the
constructor keyword down to the kernel argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from rnnguard.errors import ConfigError
from rnnguard.nn import init as rinit
from rnnguard.nn.functional import NONLINEARITIES
from rnnguard.utils import checks as _checks

__all__ = ["InitArg", "RecurrentOptions"]

#: What ``init=`` accepts: an init scheme name, a callable taking the module, or None.
InitArg = str | Callable[..., Any] | None


@dataclass(frozen=True)
class RecurrentOptions:
    """The extras of one recurrent layer or cell; every field is checked on construction.

    Rates are probabilities in [0, 1); ``zoneout_cell`` is the LSTM cell state's zoneout rate (the
    families without a cell state ignore it). ``max_length=T`` sets ``recurrent_max`` to
    ``2 ** (1 / T)`` (the IndRNN bound); give one or the other.
    """

    nonlinearity: str = "tanh"
    """Activation of the RNN / IndRNN step: ``"tanh"``, ``"relu"`` or ``"leaky_relu"``."""
    layer_norm: bool = False
    """LayerNorm on the input and recurrent projections (and the LSTM cell state)."""
    zoneout: float = 0.0
    """Probability that a hidden unit keeps its previous value at a step."""
    zoneout_cell: float = 0.0
    """The same for the LSTM cell state."""
    dropconnect: float = 0.0
    """Drop probability of each recurrent weight (one mask per sequence)."""
    forget_bias: float | None = None
    """Total bias of the LSTM forget gate / GRU update gate set at init (None: leave it)."""
    init: InitArg = None
    """Init scheme name or callable applied after the default init."""
    weight_norm: bool = False
    """Weight normalisation of the input and recurrent matrices."""
    residual: bool = False
    """RNN: ``h_t = h_{t-1} + act(...)``; IndRNN: each layer's input added to its output."""
    residual_scale: float | None = None
    """RNN with ``residual``: ``s`` in (0, 1) gives the convex residual
    ``h_t = (1 - s) h_{t-1} + s act(...)``, whose state stays within the activation's range
    (the plain sum grows without bound over a long or carried stream); None: the plain sum."""
    recurrent_max: float | None = None
    """Bound on ``|u|`` of the IndRNN recurrent vector."""
    max_length: int | None = None
    """The sequence length the IndRNN bound is derived from (as the user gave it)."""

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise the values once, here
        put(self, "nonlinearity", _checks.choice("nonlinearity", self.nonlinearity, NONLINEARITIES))
        for name in ("layer_norm", "weight_norm", "residual"):
            _checks.boolean(name, getattr(self, name))
        for name in ("zoneout", "zoneout_cell", "dropconnect"):
            put(self, name, _checks.probability(name, getattr(self, name)))
        if self.forget_bias is not None:
            fb = self.forget_bias
            if isinstance(fb, bool) or not isinstance(fb, (int, float)):
                raise TypeError(f"forget_bias must be a number or None, got {type(fb).__name__}")
            if not math.isfinite(fb):
                raise ConfigError(f"forget_bias must be finite, got {fb}")
            put(self, "forget_bias", float(fb))
        if self.residual_scale is not None:
            put(self, "residual_scale", _checks.fraction("residual_scale", self.residual_scale))
            if not self.residual:
                raise ConfigError(
                    f"residual_scale needs residual=True, got residual_scale={self.residual_scale}"
                )
        _check_init(self.init)
        bound = self.recurrent_max
        if self.max_length is not None:
            derived = 2.0 ** (1.0 / _checks.positive_int("max_length", self.max_length))
            if bound is not None and bound != derived:
                raise ConfigError(
                    f"give max_length or recurrent_max, not both; got max_length="
                    f"{self.max_length}, recurrent_max={bound}"
                )
            bound = derived
        if bound is not None:
            put(self, "recurrent_max", _checks.positive_float("recurrent_max", bound))

    @property
    def changes_recurrence(self) -> bool:
        """Whether an extra changes the step maths (weight norm, init and forget_bias do not)."""
        return bool(
            self.layer_norm or self.zoneout or self.zoneout_cell or self.dropconnect
            or self.residual or self.nonlinearity == "leaky_relu"
        )  # fmt: skip

    @property
    def random(self) -> bool:
        """Whether a training-mode step draws random masks (zoneout or DropConnect)."""
        return bool(self.zoneout or self.zoneout_cell or self.dropconnect)

    def describe(self, defaults: RecurrentOptions) -> list[str]:
        """``name=value`` for every field differing from ``defaults`` (for ``extra_repr``)."""
        out = []
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(defaults, f.name)
            if f.name == "recurrent_max" and self.max_length is not None:
                continue  # derived from max_length, which is shown instead
            if value == default or f.name == "nonlinearity":
                continue
            if f.name == "init":
                out.append(f"init={getattr(value, '__name__', value)!r}")
            elif f.name == "recurrent_max":
                out.append(f"recurrent_max={value:.6g}")
            else:
                out.append(f"{f.name}={value}")
        return out


def _check_init(init: Any) -> None:
    if init is None or callable(init):
        return
    if not isinstance(init, str):
        raise TypeError(
            f"init must be a scheme name, a callable or None, got {type(init).__name__}"
        )
    rinit.INIT_SCHEMES.entry(init)  # unknown names fail here, listing the known ones
