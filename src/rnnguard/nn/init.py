"""Initialisers for recurrent weights and named schemes that apply them to a whole model.

Tensor-level (in place, like ``torch.nn.init``): :func:`orthogonal_gates_`, :func:`xavier_input_`,
:func:`kaiming_input_`. Module-level (every recurrent layer/cell inside ``module``, torch.nn or
rnnguard): :func:`forget_bias_`, :func:`chrono_`, :func:`indrnn_`. Schemes:
``apply(model, "safe")``, :func:`list_init_schemes`, :func:`scheme` (a bound scheme for ``init=``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from rnnguard.errors import ConfigError
from rnnguard.nn.functional import TORCH_MODES, torch_cell_kind, torch_suffix
from rnnguard.utils.checks import positive_float
from rnnguard.utils.registry import Entry, Registry

__all__ = [
    "INIT_SCHEMES",
    "InitScheme",
    "RecurrentUnit",
    "apply",
    "chrono_",
    "forget_bias_",
    "indrnn_",
    "kaiming_input_",
    "list_init_schemes",
    "orthogonal_gates_",
    "recurrent_units",
    "register_init_scheme",
    "scheme",
    "torch_default_",
    "xavier_input_",
]

# Index of the gate whose bias sets the memory time scale: LSTM forget gate f, GRU update gate z.
_KEEP_GATE = {"lstm": 1, "gru": 1}


@dataclass(frozen=True)
class RecurrentUnit:
    """One layer/direction (or cell) of a recurrent module: where its tensors live and what it is."""

    module: nn.Module
    kind: str  # rnn | lstm | gru | indrnn
    nonlinearity: str
    hidden_size: int
    weight_ih: str
    weight_hh: str
    bias_ih: str | None = None
    bias_hh: str | None = None
    recurrent_max: float | None = None  # IndRNN bound on |u|
    weight_hr: str | None = None  # LSTM projection (proj_size > 0)

    @property
    def gates(self) -> int:
        """Gate blocks stacked in the input weight (its rows over ``hidden_size``)."""
        rows = int(getattr(self.module, self.weight_ih).shape[0])
        return rows // self.hidden_size if self.hidden_size else 1  # no rows: any count fits


def recurrent_units(model: nn.Module) -> Iterator[RecurrentUnit]:
    """Every recurrent layer/direction and cell inside ``model`` (torch.nn and rnnguard)."""
    for m in model.modules():
        units = getattr(m, "recurrent_units", None)
        if callable(units):
            yield from units()
        elif isinstance(m, nn.RNNBase):
            kind, act = TORCH_MODES[m.mode]
            for layer in range(m.num_layers):
                for d in range(2 if m.bidirectional else 1):
                    s = torch_suffix(layer, d)
                    yield RecurrentUnit(
                        m, kind, act, m.hidden_size, "weight_ih" + s, "weight_hh" + s,
                        "bias_ih" + s if m.bias else None, "bias_hh" + s if m.bias else None,
                        weight_hr="weight_hr" + s if getattr(m, "proj_size", 0) else None,
                    )  # fmt: skip
        elif isinstance(m, nn.RNNCellBase):
            kind = torch_cell_kind(m)
            act = getattr(m, "nonlinearity", "tanh")
            b = bool(m.bias)
            yield RecurrentUnit(
                m, kind, act, m.hidden_size, "weight_ih", "weight_hh",
                "bias_ih" if b else None, "bias_hh" if b else None,
            )  # fmt: skip


def _get(module: nn.Module, name: str) -> Tensor:
    return getattr(module, name).detach().clone()


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    # A weight-normed tensor is computed, so it is written through its parametrization's inverse.
    with torch.no_grad():
        if parametrize.is_parametrized(module, name):
            setattr(module, name, value)
        else:
            getattr(module, name).copy_(value)


def _blocks(weight: Tensor, num_gates: int) -> list[Tensor]:
    if weight.dim() != 2 or weight.shape[0] % num_gates:
        raise ConfigError(
            f"weight must be 2-D with rows divisible by num_gates={num_gates}, got shape {tuple(weight.shape)}"
        )
    return list(weight.chunk(num_gates, dim=0))


def orthogonal_gates_(weight: Tensor, num_gates: int | None = None, gain: float = 1.0) -> Tensor:
    """Make each gate's (H, H) block of a stacked recurrent weight (G*H, H) orthogonal, in place."""
    if num_gates is None:
        if weight.dim() != 2 or weight.shape[0] % weight.shape[1]:
            raise ConfigError(f"cannot infer num_gates from weight shape {tuple(weight.shape)}")
        num_gates = weight.shape[0] // weight.shape[1]
    with torch.no_grad():
        for block in _blocks(weight, num_gates):
            nn.init.orthogonal_(block, gain=gain)
    return weight


def xavier_input_(weight: Tensor, num_gates: int = 1, gain: float = 1.0) -> Tensor:
    """Glorot-uniform init of each gate's (H, I) block of an input weight (for tanh/sigmoid units)."""
    with torch.no_grad():
        for block in _blocks(weight, num_gates):
            nn.init.xavier_uniform_(block, gain=gain)
    return weight


def kaiming_input_(weight: Tensor, num_gates: int = 1, nonlinearity: str = "relu") -> Tensor:
    """He-uniform init (fan-in) of each gate's block of an input weight (for ReLU-like units)."""
    with torch.no_grad():
        for block in _blocks(weight, num_gates):
            if nonlinearity == "leaky_relu":
                nn.init.kaiming_uniform_(block, a=0.01, nonlinearity="leaky_relu")
            else:
                nn.init.kaiming_uniform_(block, nonlinearity="relu")
    return weight


def _units_of(module: nn.Module, kinds: tuple[str, ...], what: str) -> list[RecurrentUnit]:
    units = [u for u in recurrent_units(module) if u.kind in kinds]
    if not units:
        raise ConfigError(
            f"{what} needs a module containing {' or '.join(kinds)} layers, got {type(module).__name__}"
        )
    return units


def _set_gate_bias(u: RecurrentUnit, gate: int, value: Tensor | float) -> None:
    if u.bias_ih is None or u.bias_hh is None:
        raise ConfigError(
            f"forget/keep-gate bias needs bias=True, got bias=False in {type(u.module).__name__}"
        )
    h = u.hidden_size
    b_ih, b_hh = _get(u.module, u.bias_ih), _get(u.module, u.bias_hh)
    # The total is what the gate sees: put it all in bias_ih and zero bias_hh's share.
    b_ih[gate * h : (gate + 1) * h] = value
    b_hh[gate * h : (gate + 1) * h] = 0.0
    _set(u.module, u.bias_ih, b_ih)
    _set(u.module, u.bias_hh, b_hh)


def forget_bias_(module: nn.Module, value: float) -> nn.Module:
    """Set the *total* (bias_ih + bias_hh) LSTM forget-gate / GRU update-gate bias to ``value``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"forget_bias must be a finite number, got {value!r}")
    for u in _units_of(module, ("lstm", "gru"), "forget_bias_"):
        _set_gate_bias(u, _KEEP_GATE[u.kind], float(value))
    return module


def chrono_(module: nn.Module, t_max: float, generator: torch.Generator | None = None) -> nn.Module:
    """Chrono init (Tallec & Ollivier 2018): forget bias ~ log U(1, t_max - 1), LSTM input bias = -that."""
    t_max = positive_float("t_max", t_max)
    if t_max <= 2.0:
        raise ConfigError(f"t_max must be > 2 (the longest dependency in steps), got {t_max}")
    for u in _units_of(module, ("lstm", "gru"), "chrono_"):
        h = u.hidden_size
        ref = getattr(u.module, u.weight_hh)
        draw = torch.empty(h, dtype=torch.float64).uniform_(1.0, t_max - 1.0, generator=generator)
        bf = torch.log(draw).to(device=ref.device, dtype=ref.dtype)
        _set_gate_bias(u, _KEEP_GATE[u.kind], bf)
        if u.kind == "lstm":
            _set_gate_bias(u, 0, -bf)
    return module


def indrnn_(
    module: nn.Module, low: float = 0.0, high: float = 1.0, *, input_init: bool = True
) -> nn.Module:
    """IndRNN init (Li et al. 2018): u ~ U(low, high) clipped to the layer's bound, He input, zero bias."""
    if not low <= high:
        raise ConfigError(f"low must be <= high, got low={low}, high={high}")
    for u in _units_of(module, ("indrnn",), "indrnn_"):
        _indrnn_unit(u, low, high)
        if input_init:
            _init_input(u)
            _zero_biases(u)
    return module


def torch_default_(module: nn.Module) -> nn.Module:
    """torch.nn's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)) (IndRNN's u within its bound)."""
    for u in recurrent_units(module):
        k = 1.0 / math.sqrt(u.hidden_size) if u.hidden_size > 0 else 0.0  # as torch.nn
        for name in (u.weight_ih, u.weight_hh, u.bias_ih, u.bias_hh, u.weight_hr):
            if name is not None:
                value = _get(u.module, name).uniform_(-k, k)
                if name == u.weight_hh and u.recurrent_max is not None:
                    value.clamp_(-u.recurrent_max, u.recurrent_max)
                _set(u.module, name, value)
    return module


def _init_input(u: RecurrentUnit) -> None:
    w = _get(u.module, u.weight_ih)
    if w.numel() == 0:  # a zero-size cell: nothing to draw (torch.nn.init would warn)
        return
    if u.kind in ("rnn", "indrnn") and u.nonlinearity in ("relu", "leaky_relu"):
        kaiming_input_(w, u.gates, u.nonlinearity)
    else:
        xavier_input_(w, u.gates)
    _set(u.module, u.weight_ih, w)


def _zero_biases(u: RecurrentUnit) -> None:
    for name in (u.bias_ih, u.bias_hh):
        if name is not None:
            _set(u.module, name, torch.zeros_like(getattr(u.module, name)))


# --------------------------------------------------------------------------- schemes

#: A registered init scheme: ``name``, ``obj`` (``fn(model, **kwargs)``), ``description``, ``metadata``.
InitScheme = Entry[Callable[..., None]]

INIT_SCHEMES: Registry[Callable[..., None]] = Registry("init scheme")


def register_init_scheme(
    name: str, description: str = "", **metadata: Any
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator registering ``fn(model, **kwargs)`` as the init scheme ``name``."""
    return INIT_SCHEMES.decorator(name, description, **metadata)


def list_init_schemes() -> dict[str, InitScheme]:
    """All registered init schemes by name."""
    return INIT_SCHEMES.entries()


def apply(model: nn.Module, init: str | Callable[..., Any], **kwargs: Any) -> nn.Module:
    """Initialise every recurrent layer/cell of ``model`` with a scheme name or a callable ``fn(model)``."""
    if callable(init):
        init(model, **kwargs)
        return model
    if not isinstance(init, str):
        raise TypeError(f"init must be a scheme name or a callable, got {type(init).__name__}")
    INIT_SCHEMES.get(init)(model, **kwargs)
    return model


def scheme(name: str, **kwargs: Any) -> Callable[[nn.Module], nn.Module]:
    """A scheme with its arguments bound, for ``init=``: ``LSTM(..., init=scheme("chrono", t_max=784))``."""
    INIT_SCHEMES.entry(name)  # fail now, not at the first build

    def bound(model: nn.Module) -> nn.Module:
        return apply(model, name, **kwargs)

    bound.__name__ = f"scheme_{name}"
    return bound


def _safe_unit(u: RecurrentUnit, irnn: bool = False) -> None:
    _init_input(u)
    _zero_biases(u)
    if u.kind == "indrnn":
        _indrnn_unit(u)
        return
    w = _get(u.module, u.weight_hh)
    if irnn and u.kind == "rnn":
        w.copy_(torch.eye(u.hidden_size))
    else:
        orthogonal_gates_(w, u.gates)
    _set(u.module, u.weight_hh, w)
    if u.weight_hr is not None:  # the projection keeps the norm of what it projects
        proj = _get(u.module, u.weight_hr)
        nn.init.orthogonal_(proj)
        _set(u.module, u.weight_hr, proj)


def _indrnn_unit(u: RecurrentUnit, low: float = 0.0, high: float = 1.0) -> None:
    rec = _get(u.module, u.weight_hh).uniform_(low, high)
    if u.recurrent_max is not None:
        rec.clamp_(-u.recurrent_max, u.recurrent_max)
    _set(u.module, u.weight_hh, rec)


@register_init_scheme(
    "torch", "torch.nn's default: all weights and biases ~ U(-1/sqrt(H), 1/sqrt(H))"
)
def _scheme_torch(model: nn.Module) -> None:
    torch_default_(model)


@register_init_scheme(
    "safe",
    "Glorot (tanh/gates) or He (ReLU) input weights, per-gate orthogonal recurrent weights, zero "
    "biases, total LSTM forget bias 1; IndRNN: u ~ U(0, 1) within its bound",
)
def _scheme_safe(model: nn.Module, forget_bias: float = 1.0) -> None:
    for u in recurrent_units(model):
        _safe_unit(u)
        if u.kind == "lstm" and u.bias_ih is not None:
            _set_gate_bias(u, 1, float(forget_bias))


@register_init_scheme(
    "chrono", "'safe' plus chrono gate biases (Tallec & Ollivier 2018); needs t_max (longest lag)"
)
def _scheme_chrono(model: nn.Module, t_max: float | None = None) -> None:
    if t_max is None:
        raise ConfigError(
            "init scheme 'chrono' needs t_max (the longest dependency in steps), got None"
        )
    _scheme_safe(model)
    if any(u.kind in ("lstm", "gru") for u in recurrent_units(model)):
        chrono_(model, t_max)


@register_init_scheme(
    "irnn", "'safe' with identity recurrent weights for plain RNNs (Le et al. 2015, for ReLU RNNs)"
)
def _scheme_irnn(model: nn.Module) -> None:
    for u in recurrent_units(model):
        _safe_unit(u, irnn=True)
        if u.kind == "lstm" and u.bias_ih is not None:
            _set_gate_bias(u, 1, 1.0)
