"""Saturation of gates and units along a real trajectory.

From the recorded inputs and states of every recurrent layer, the gate pre-activations are
recomputed with the layer's own parameters (``LN(W_ih x) + b_ih + LN(W_hh h) + b_hh``) and
summarised: sigmoid gates in their flat parts, forget gates stuck shut, tanh units saturated, and
ReLU units that never fire ("dead"). Flat parts pass almost no gradient, so these fractions say
where the backward signal is lost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnguard.diagnose._common import check_module, check_sequence_batch, eval_mode
from rnnguard.diagnose.trajectory import DirectionTrace, trace_recurrent
from rnnguard.errors import ConfigError
from rnnguard.nn.functional import LN_EPS, project_input
from rnnguard.train.model_call import call_model

__all__ = [
    "LayerSaturation",
    "SaturationThresholds",
    "gate_saturation",
    "measure_saturation",
    "preactivations",
]


@dataclass(frozen=True)
class SaturationThresholds:
    """Where an activation counts as flat.

    ``sigmoid_flat``: |z| above which sigmoid'(z) < 0.018; ``tanh_flat``: |tanh| above which
    tanh' < 0.02; ``gate_closed``: a forget gate (LSTM f, GRU update z) below this lets almost
    nothing of the previous state through.
    """

    sigmoid_flat: float = 4.0
    tanh_flat: float = 0.99
    gate_closed: float = 0.05

    def __post_init__(self) -> None:
        if not self.sigmoid_flat > 0:
            raise ConfigError(f"sigmoid_flat must be > 0, got {self.sigmoid_flat!r}")
        if not 0 < self.tanh_flat < 1:
            raise ConfigError(f"tanh_flat must be in (0, 1), got {self.tanh_flat!r}")
        if not 0 < self.gate_closed < 1:
            raise ConfigError(f"gate_closed must be in (0, 1), got {self.gate_closed!r}")


@dataclass
class LayerSaturation:
    """Saturation fractions of one layer and direction (None where the layer has no such unit).

    ``per_gate`` maps each gate or unit group to its saturated fraction (for the bar plot).
    """

    label: str
    kind: str
    sigmoid_saturated: float | None = None
    forget_closed: float | None = None
    forget_mean: float | None = None
    tanh_saturated: float | None = None
    dead_units: float | None = None
    inactive: float | None = None
    per_gate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: every field by name."""
        return asdict(self)


def _frac(mask: Tensor) -> float:
    return float(mask.float().mean().item())


def _recurrent(h: Tensor, trace: DirectionTrace) -> Tensor:
    p = trace.fn.params
    if trace.kind == "indrnn":
        return p.weight_hh * h  # per-unit recurrent vector
    u = F.linear(h, p.weight_hh)
    if p.ln_hh is not None:
        u = F.layer_norm(u, (u.shape[-1],), p.ln_hh, None, LN_EPS)
    if p.bias_hh is not None:
        u = u + p.bias_hh
    return u


def preactivations(trace: DirectionTrace) -> dict[str, Tensor]:
    """Pre-activations (B, T, H) of every gate of a recorded layer/direction, in processing order.

    LSTM: ``i, f, g, o`` and ``cell`` (the argument of tanh, layer-normed where the layer is);
    GRU: ``r, z`` and ``n`` (the candidate's tanh argument); RNN/IndRNN: ``pre``.
    """
    with torch.no_grad():
        p = trace.fn.params
        xp = project_input(trace.inputs, p)
        rec = _recurrent(trace.stacked(0, after=False), trace)
        if trace.kind == "lstm":
            z_i, z_f, z_g, z_o = (xp + rec).chunk(4, dim=-1)
            c = trace.stacked(1, after=True)
            if p.ln_c_weight is not None:
                c = F.layer_norm(c, (c.shape[-1],), p.ln_c_weight, p.ln_c_bias, LN_EPS)
            return {"i": z_i, "f": z_f, "g": z_g, "o": z_o, "cell": c}
        if trace.kind == "gru":
            a_r, a_z, a_n = xp.chunk(3, dim=-1)
            u_r, u_z, u_n = rec.chunk(3, dim=-1)
            z_r = a_r + u_r
            return {"r": z_r, "z": a_z + u_z, "n": a_n + torch.sigmoid(z_r) * u_n}
        return {"pre": xp + rec}


def gate_saturation(
    trace: DirectionTrace, label: str, thresholds: SaturationThresholds | None = None
) -> LayerSaturation:
    """Saturation fractions of one recorded layer/direction over all its samples and steps."""
    th = thresholds or SaturationThresholds()
    tanh_pre = math.atanh(th.tanh_flat)
    closed_pre = math.log(th.gate_closed / (1 - th.gate_closed))  # sigmoid(z) < gate_closed
    z = preactivations(trace)
    out = LayerSaturation(label, trace.kind)
    if trace.kind == "lstm":
        gates = {"input": z["i"], "forget": z["f"], "output": z["o"]}
        out.per_gate = {k: _frac(v.abs() > th.sigmoid_flat) for k, v in gates.items()}
        out.per_gate["cell candidate"] = _frac(z["g"].abs() > tanh_pre)
        out.per_gate["tanh(cell)"] = _frac(z["cell"].abs() > tanh_pre)
        out.sigmoid_saturated = _frac(torch.stack(list(gates.values())).abs() > th.sigmoid_flat)
        out.forget_closed = _frac(z["f"] < closed_pre)
        out.forget_mean = float(torch.sigmoid(z["f"]).mean().item())
        out.tanh_saturated = _frac(torch.stack([z["g"], z["cell"]]).abs() > tanh_pre)
    elif trace.kind == "gru":
        out.per_gate = {
            "reset": _frac(z["r"].abs() > th.sigmoid_flat),
            "update": _frac(z["z"].abs() > th.sigmoid_flat),
            "candidate": _frac(z["n"].abs() > tanh_pre),
        }
        out.sigmoid_saturated = _frac(torch.stack([z["r"], z["z"]]).abs() > th.sigmoid_flat)
        # h = (1 - z) n + z h_prev: the update gate near 0 discards the previous state
        out.forget_closed = _frac(z["z"] < closed_pre)
        out.forget_mean = float(torch.sigmoid(z["z"]).mean().item())
        out.tanh_saturated = _frac(z["n"].abs() > tanh_pre)
    elif trace.fn.options.nonlinearity == "tanh":
        out.tanh_saturated = _frac(z["pre"].abs() > tanh_pre)
        out.per_gate = {"tanh units": out.tanh_saturated}
    else:
        active = z["pre"] > 0
        out.inactive = _frac(~active)
        # a unit is dead when no sample at no step drives it above zero
        out.dead_units = _frac(~active.flatten(0, 1).any(0))
        out.per_gate = {"inactive": out.inactive, "dead units": out.dead_units}
    return out


def measure_saturation(
    model: nn.Module, x: Tensor, thresholds: SaturationThresholds | None = None
) -> dict[str, LayerSaturation]:
    """Saturation of every recurrent layer/direction inside ``model`` on the batch ``x`` (eval mode)."""
    check_module(model)
    check_sequence_batch(x)
    if thresholds is not None and not isinstance(thresholds, SaturationThresholds):
        raise TypeError(f"thresholds must be SaturationThresholds, got {type(thresholds).__name__}")
    with eval_mode(model), torch.no_grad(), trace_recurrent(model) as traces:
        call_model(model, x)
    return {
        mt.label(d): gate_saturation(d, mt.label(d), thresholds)
        for mt in traces
        for d in mt.directions
    }
