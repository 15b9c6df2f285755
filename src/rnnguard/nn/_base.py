"""Parameter bookkeeping shared by recurrent layers and cells: creation, init, gathering, bounds."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

from rnnguard.errors import ConfigError
from rnnguard.nn import _checks
from rnnguard.nn import init as rinit
from rnnguard.nn.functional import GATES, NONLINEARITIES, LayerParams, StepOptions

IMPLS = ("auto", "reference", "fused")
# What ``init=`` accepts: a recipe name, a callable taking the module, or None.
InitArg = str | Callable[..., Any] | None
# Default nonlinearity of the kinds that take one (extra_repr shows only a non-default one).
DEFAULT_NONLINEARITY = {"rnn": "tanh", "indrnn": "relu"}


class RecurrentBase(nn.Module):
    """Common machinery of rnnguard layers and cells (one layer/direction per name suffix)."""

    kind: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False

    def _setup(
        self,
        kind: str,
        hidden_size: int,
        bias: bool,
        *,
        nonlinearity: str,
        layer_norm: bool,
        zoneout: float,
        zoneout_cell: float | None,
        dropconnect: float,
        forget_bias: float | None,
        init: InitArg,
        weight_norm: bool,
        residual: bool,
        recurrent_max: float | None,
        max_length: int | None,
    ) -> None:
        """Validate and store the options every layer kind shares."""
        self.kind = kind
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.bias = _checks.boolean("bias", bias)
        self.nonlinearity = _checks.choice("nonlinearity", nonlinearity, NONLINEARITIES)
        self.layer_norm = _checks.boolean("layer_norm", layer_norm)
        self.zoneout = _checks.probability("zoneout", zoneout)
        if zoneout_cell is not None and kind != "lstm":
            raise ConfigError(
                f"zoneout_cell applies only to LSTM, got zoneout_cell={zoneout_cell} for {kind}"
            )
        self.zoneout_cell = (
            self.zoneout
            if zoneout_cell is None
            else _checks.probability("zoneout_cell", zoneout_cell)
        )
        if kind != "lstm":
            self.zoneout_cell = 0.0
        self.dropconnect = _checks.probability("dropconnect", dropconnect)
        if forget_bias is not None:
            if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
                raise TypeError(
                    f"forget_bias must be a number or None, got {type(forget_bias).__name__}"
                )
            if not math.isfinite(forget_bias):
                raise ConfigError(f"forget_bias must be finite, got {forget_bias}")
            if not self.bias:
                raise ConfigError("forget_bias needs bias=True, got bias=False")
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        if init is not None and not callable(init):
            if not isinstance(init, str):
                raise TypeError(
                    f"init must be a scheme name, a callable or None, got {type(init).__name__}"
                )
            rinit.INIT_SCHEMES.entry(init)  # unknown names fail here, listing the known ones
        self.init = init
        self.weight_norm = _checks.boolean("weight_norm", weight_norm)
        self.residual = _checks.boolean("residual", residual)
        if recurrent_max is not None and max_length is not None:
            raise ConfigError(
                f"give max_length or recurrent_max, not both; got max_length={max_length}, "
                f"recurrent_max={recurrent_max}"
            )
        if max_length is not None:
            recurrent_max = 2.0 ** (1.0 / _checks.positive_int("max_length", max_length))
        self.max_length = max_length
        self.recurrent_max = (
            None
            if recurrent_max is None
            else _checks.positive_float("recurrent_max", recurrent_max)
        )

    # ------------------------------------------------------------------ parameters

    def _suffixes(self) -> list[str]:
        dirs = 2 if self.bidirectional else 1
        return [self._suffix(layer, d) for layer in range(self.num_layers) for d in range(dirs)]

    def _suffix(self, layer: int, direction: int) -> str:
        return ""

    def _make_params(self, in_sizes: list[int], factory: dict[str, Any]) -> None:
        """Register torch.nn-named tensors in torch.nn's order, then the LayerNorm tensors."""
        g, h = GATES[self.kind], self.hidden_size
        for s, in_size in zip(self._suffixes(), in_sizes):
            self.register_parameter(
                "weight_ih" + s, nn.Parameter(torch.empty(g * h, in_size, **factory))
            )
            hh = (h,) if self.kind == "indrnn" else (g * h, h)
            self.register_parameter("weight_hh" + s, nn.Parameter(torch.empty(*hh, **factory)))
            if self.bias:
                self.register_parameter("bias_ih" + s, nn.Parameter(torch.empty(g * h, **factory)))
                if self.kind != "indrnn":
                    self.register_parameter(
                        "bias_hh" + s, nn.Parameter(torch.empty(g * h, **factory))
                    )
        if self.layer_norm:
            for s in self._suffixes():
                self.register_parameter(
                    "layer_norm_ih" + s, nn.Parameter(torch.ones(g * h, **factory))
                )
                if self.kind != "indrnn":
                    self.register_parameter(
                        "layer_norm_hh" + s, nn.Parameter(torch.ones(g * h, **factory))
                    )
                if self.kind == "lstm":
                    self.register_parameter(
                        "layer_norm_c_weight" + s, nn.Parameter(torch.ones(h, **factory))
                    )
                    self.register_parameter(
                        "layer_norm_c_bias" + s, nn.Parameter(torch.zeros(h, **factory))
                    )

    def _finish_init(self) -> None:
        self.reset_parameters()
        if self.weight_norm:
            from torch.nn.utils.parametrizations import weight_norm

            for s in self._suffixes():
                weight_norm(self, "weight_ih" + s, dim=0)
                if self.kind != "indrnn":  # a per-unit vector has nothing to normalise
                    weight_norm(self, "weight_hh" + s, dim=0)
            self._register_load_state_dict_pre_hook(_plain_weights_to_weight_norm, with_module=True)
        if self.recurrent_max is not None:
            track_bounded(self)

    def reset_parameters(self) -> None:
        """Default init (torch.nn's, or the IndRNN paper's), then ``init``, then ``forget_bias``."""
        if self.kind == "indrnn":
            rinit.indrnn_(self)
        else:
            rinit.torch_default_(self)
        for name, p in self.named_parameters():
            if name.startswith("layer_norm_"):
                with torch.no_grad():
                    p.fill_(0.0 if name.startswith("layer_norm_c_bias") else 1.0)
        if self.init is not None:
            rinit.apply(self, self.init)
        if self.forget_bias is not None:
            rinit.forget_bias_(self, self.forget_bias)

    def recurrent_units(self) -> list[rinit.RecurrentUnit]:
        """One :class:`~rnnguard.nn.init.RecurrentUnit` per layer and direction (for initialisers)."""
        return [
            rinit.RecurrentUnit(
                self,
                self.kind,
                self.nonlinearity,
                self.hidden_size,
                "weight_ih" + s,
                "weight_hh" + s,
                "bias_ih" + s if self.bias else None,
                "bias_hh" + s if self.bias and self.kind != "indrnn" else None,
                self.recurrent_max,
            )
            for s in self._suffixes()
        ]

    def layer_params(self, layer: int = 0, direction: int = 0) -> LayerParams:
        """The current tensors of ``layer``/``direction`` (weight-normed, IndRNN bound applied)."""
        s = self._suffix(layer, direction)
        w_hh = getattr(self, "weight_hh" + s)
        if self.recurrent_max is not None:
            if self not in _BOUNDED:  # a deep copy or an unpickled module is not tracked yet
                track_bounded(self)
            w_hh = w_hh.clamp(-self.recurrent_max, self.recurrent_max)
        ln = self.layer_norm
        return LayerParams(
            getattr(self, "weight_ih" + s),
            w_hh,
            getattr(self, "bias_ih" + s) if self.bias else None,
            getattr(self, "bias_hh" + s) if self.bias and self.kind != "indrnn" else None,
            getattr(self, "layer_norm_ih" + s) if ln else None,
            getattr(self, "layer_norm_hh" + s) if ln and self.kind != "indrnn" else None,
            getattr(self, "layer_norm_c_weight" + s) if ln and self.kind == "lstm" else None,
            getattr(self, "layer_norm_c_bias" + s) if ln and self.kind == "lstm" else None,
        )

    def step_options(self, training: bool | None = None) -> StepOptions:
        """The step switches of this module (``training`` defaults to ``self.training``)."""
        return StepOptions(
            nonlinearity=self.nonlinearity,
            residual=self.residual and self.kind == "rnn",
            zoneout=self.zoneout,
            zoneout_cell=self.zoneout_cell,
            dropconnect=self.dropconnect,
            training=self.training if training is None else training,
        )

    def clamp_recurrent_(self, only: set[int] | None = None) -> None:
        """Clamp the stored recurrent vectors into [-recurrent_max, recurrent_max] (IndRNN bound)."""
        if self.recurrent_max is None:
            return
        with torch.no_grad():
            for s in self._suffixes():
                p = getattr(self, "weight_hh" + s)
                if only is None or id(p) in only:
                    p.clamp_(-self.recurrent_max, self.recurrent_max)

    def _extra_options(self) -> list[str]:
        out = []
        if self.layer_norm:
            out.append("layer_norm=True")
        if self.zoneout:
            out.append(f"zoneout={self.zoneout}")
        if self.kind == "lstm" and self.zoneout_cell != self.zoneout:
            out.append(f"zoneout_cell={self.zoneout_cell}")
        if self.dropconnect:
            out.append(f"dropconnect={self.dropconnect}")
        if self.forget_bias is not None:
            out.append(f"forget_bias={self.forget_bias}")
        if self.init is not None:
            out.append(f"init={getattr(self.init, '__name__', self.init)!r}")
        if self.weight_norm:
            out.append("weight_norm=True")
        if self.residual:
            out.append("residual=True")
        if self.max_length is not None:  # what the user gave, not the bound it implies
            out.append(f"max_length={self.max_length}")
        elif self.recurrent_max is not None:
            out.append(f"recurrent_max={self.recurrent_max:.6g}")
        return out


def _plain_weights_to_weight_norm(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Let a weight-normed layer load a plain (e.g. torch.nn) state dict: w -> (g = |w| per row, v = w)."""
    for key in list(state_dict):
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is None or "." in name or not parametrize.is_parametrized(module, name):
            continue
        w = state_dict.pop(key)
        state_dict[f"{prefix}parametrizations.{name}.original0"] = w.norm(dim=1, keepdim=True)
        state_dict[f"{prefix}parametrizations.{name}.original1"] = w


# The IndRNN bound must hold after every optimizer step without the user doing anything: a global
# post-step hook clamps the bounded modules whose parameters that optimizer just updated.
_BOUNDED: weakref.WeakSet[RecurrentBase] = weakref.WeakSet()
_HOOK: Any = None


def _clamp_after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _BOUNDED:
        return
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in list(_BOUNDED):
        module.clamp_recurrent_(ids)


def track_bounded(module: RecurrentBase) -> None:
    """Keep ``module``'s recurrent bound after every optimizer step (weakly referenced)."""
    global _HOOK
    _BOUNDED.add(module)
    if _HOOK is None:
        _HOOK = register_optimizer_step_post_hook(_clamp_after_step)


def check_impl(impl: Any) -> str:
    return _checks.choice("impl", impl, IMPLS)
