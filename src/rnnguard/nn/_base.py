"""Parameter bookkeeping shared by recurrent layers and cells: creation, init, gathering, bounds."""

from __future__ import annotations

import weakref
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

from rnnguard.errors import ConfigError, DeviceError
from rnnguard.nn import init as rinit
from rnnguard.nn.functional import LayerParams
from rnnguard.nn.kinds import KindSpec, kind_spec
from rnnguard.nn.options import InitArg, RecurrentOptions
from rnnguard.utils import checks as _checks

IMPLS = ("auto", "reference", "fused")
__all__ = [
    "IMPLS",
    "InitArg",
    "RecurrentBase",
    "autocast_on",
    "check_impl",
    "check_state_like",
    "track_bounded",
]

#: The extras a module exposes as read-only attributes (``module.zoneout`` is ``module.options.zoneout``).
OPTION_NAMES = tuple(f.name for f in fields(RecurrentOptions))


class RecurrentBase(nn.Module):
    """Common machinery of rnnguard layers and cells (one layer/direction per name suffix)."""

    kind: str
    spec: KindSpec
    options: RecurrentOptions
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0  # LSTM: width of h (0: no projection, h has hidden_size features)
    # Read-only views of ``options`` (set below), so ``layer.zoneout`` reads as before.
    nonlinearity: str
    layer_norm: bool
    zoneout: float
    zoneout_cell: float
    dropconnect: float
    forget_bias: float | None
    init: InitArg
    weight_norm: bool
    residual: bool
    residual_scale: float | None
    recurrent_max: float | None
    max_length: int | None

    def _setup(
        self, kind: str, hidden_size: int, bias: bool, *, zero_ok: bool = False, **extras: Any
    ) -> None:
        """Validate and store what every family shares: sizes, bias and the extras' options.

        ``zero_ok``: a hidden size of 0 is accepted (torch.nn's cells accept it, its layers not).
        """
        self.spec = kind_spec(kind)
        self.kind = kind
        self.hidden_size = (
            _checks.integer("hidden_size", hidden_size, minimum=0)
            if zero_ok
            else _checks.positive_int("hidden_size", hidden_size)
        )
        self.bias = _checks.boolean("bias", bias)
        self.options = self.spec.options(bias=self.bias, **extras)

    # ------------------------------------------------------------------ parameters

    def _suffixes(self) -> list[str]:
        dirs = 2 if self.bidirectional else 1
        return [self._suffix(layer, d) for layer in range(self.num_layers) for d in range(dirs)]

    def _suffix(self, layer: int, direction: int) -> str:
        return ""

    def _make_params(self, in_sizes: list[int], factory: dict[str, Any]) -> None:
        """Register torch.nn-named tensors in torch.nn's order, then the LayerNorm tensors."""
        spec, h = self.spec, self.hidden_size
        g = spec.gates
        for s, in_size in zip(self._suffixes(), in_sizes):
            self.register_parameter(
                "weight_ih" + s, nn.Parameter(torch.empty(g * h, in_size, **factory))
            )
            hh = spec.hh_shape(h, self.proj_size)
            self.register_parameter("weight_hh" + s, nn.Parameter(torch.empty(*hh, **factory)))
            if self.bias:
                self.register_parameter("bias_ih" + s, nn.Parameter(torch.empty(g * h, **factory)))
                if not spec.vector_recurrence:
                    self.register_parameter(
                        "bias_hh" + s, nn.Parameter(torch.empty(g * h, **factory))
                    )
            if self.proj_size:
                self.register_parameter(
                    "weight_hr" + s, nn.Parameter(torch.empty(self.proj_size, h, **factory))
                )
        if self.options.layer_norm:
            for s in self._suffixes():
                self.register_parameter(
                    "layer_norm_ih" + s, nn.Parameter(torch.ones(g * h, **factory))
                )
                if not spec.vector_recurrence:
                    self.register_parameter(
                        "layer_norm_hh" + s, nn.Parameter(torch.ones(g * h, **factory))
                    )
                if spec.cell_layer_norm:
                    self.register_parameter(
                        "layer_norm_c_weight" + s, nn.Parameter(torch.ones(h, **factory))
                    )
                    self.register_parameter(
                        "layer_norm_c_bias" + s, nn.Parameter(torch.zeros(h, **factory))
                    )

    def _finish_init(self) -> None:
        self.reset_parameters()
        if self.options.weight_norm:
            names = ["weight_ih"]
            if not self.spec.vector_recurrence:  # a per-unit vector has nothing to normalise
                names.append("weight_hh")
            if self.proj_size:
                names.append("weight_hr")
            for s in self._suffixes():
                for name in names:
                    parametrize.register_parametrization(self, name + s, WeightNorm())
            self._register_load_state_dict_pre_hook(_plain_weights_to_weight_norm, with_module=True)
        if self.options.recurrent_max is not None:
            track_bounded(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # torch refuses to pickle a parametrized module (weight_norm=True): pickle the plain
        # class and the parametrizations' own tensors, and hang them back on when unpickling.
        if not parametrize.is_parametrized(self):
            return super().__reduce_ex__(protocol)
        plain = type(self).__bases__[0]  # parametrize subclassed the module's own class once
        return (_unpickle_parametrized, (plain, dict(self.__dict__)))

    def reset_parameters(self) -> None:
        """Default init (torch.nn's, or the IndRNN paper's), then ``init``, then ``forget_bias``."""
        self.spec.default_init(self)
        for name, p in self.named_parameters():
            if name.startswith("layer_norm_"):
                with torch.no_grad():
                    p.fill_(0.0 if name.startswith("layer_norm_c_bias") else 1.0)
        if self.options.init is not None:
            rinit.apply(self, self.options.init)
        if self.options.forget_bias is not None:
            rinit.forget_bias_(self, self.options.forget_bias)

    def recurrent_units(self) -> list[rinit.RecurrentUnit]:
        """One :class:`~rnnguard.nn.init.RecurrentUnit` per layer and direction (for initialisers)."""
        has_bias_hh = self.bias and not self.spec.vector_recurrence
        return [
            rinit.RecurrentUnit(
                self,
                self.kind,
                self.options.nonlinearity,
                self.hidden_size,
                "weight_ih" + s,
                "weight_hh" + s,
                "bias_ih" + s if self.bias else None,
                "bias_hh" + s if has_bias_hh else None,
                self.options.recurrent_max,
                "weight_hr" + s if self.proj_size else None,
            )
            for s in self._suffixes()
        ]

    def layer_params(self, layer: int = 0, direction: int = 0) -> LayerParams:
        """The current tensors of ``layer``/``direction`` (weight-normed, IndRNN bound applied)."""
        s = self._suffix(layer, direction)
        w_hh = getattr(self, "weight_hh" + s)
        bound = self.options.recurrent_max
        if bound is not None:
            if self not in _BOUNDED:  # a deep copy or an unpickled module is not tracked yet
                track_bounded(self)
            w_hh = w_hh.clamp(-bound, bound)

        def get(name: str, present: bool = True) -> Any:
            return getattr(self, name + s) if present else None

        ln, vector, cell_ln = (
            self.options.layer_norm,
            self.spec.vector_recurrence,
            self.spec.cell_layer_norm,
        )
        return LayerParams(
            get("weight_ih"),
            w_hh,
            get("bias_ih", self.bias),
            get("bias_hh", self.bias and not vector),
            get("layer_norm_ih", ln),
            get("layer_norm_hh", ln and not vector),
            get("layer_norm_c_weight", ln and cell_ln),
            get("layer_norm_c_bias", ln and cell_ln),
            get("weight_hr", self.proj_size > 0),
        )

    # ------------------------------------------------------------------ torch.nn interop

    def to_torch(self) -> nn.Module:
        """The torch.nn module computing exactly this one, sharing its parameters.

        For tools that dispatch on torch.nn's classes (TorchScript, quantization, exporters):
        possible for RNN/LSTM/GRU modules whose extras leave the maths unchanged (``init``,
        ``forget_bias``); any other extra raises :class:`~rnnguard.errors.ConfigError`, because
        torch.nn's class would compute something else. The parameters are the same objects, so
        training either module trains both.
        """
        why = self._torch_twin_blocker()
        if why:
            raise ConfigError(f"to_torch needs a module torch.nn can compute exactly; {why}")
        twin = self._torch_twin()
        for name, _ in list(twin.named_parameters()):
            setattr(twin, name, getattr(self, name))  # the same Parameter objects
        return twin.train(self.training)

    def _torch_twin_blocker(self) -> str:
        """Why :meth:`to_torch` cannot convert this module ("" when it can)."""
        torch_acts = ("tanh", "relu") if self.kind == "rnn" else ("tanh",)
        if self.spec.torch_kernel is None:
            return f"torch.nn has no {type(self).__name__}"
        changed = [
            f for f in ("layer_norm", "zoneout", "zoneout_cell", "dropconnect", "residual")
            if getattr(self.options, f)
        ]  # fmt: skip
        if self.options.nonlinearity not in torch_acts:
            changed.append(f"nonlinearity={self.options.nonlinearity!r}")
        if changed:
            return f"{', '.join(changed)} change(s) the recurrence"
        if self.options.weight_norm:
            return (
                "weight_norm=True parametrizes the weights (remove it with "
                "torch.nn.utils.parametrize.remove_parametrizations first)"
            )
        return ""

    def _torch_twin(self) -> nn.Module:
        """A fresh torch.nn module of this one's shape, device and dtype."""
        raise NotImplementedError

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this on every submodule and scripts what it returns: a module
        # without extras scripts as its torch.nn twin (same numbers, same parameters); with extras
        # there is no TorchScript form, and torch's own error would not say why.
        why = self._torch_twin_blocker()
        if why:
            raise RuntimeError(
                f"{type(self).__name__} cannot be compiled with TorchScript: {why}, and its "
                "Python paths are not scriptable. Use torch.compile or torch.export instead."
            )
        return self.to_torch()

    def clamp_recurrent_(self, only: set[int] | None = None) -> None:
        """Clamp the stored recurrent vectors into [-recurrent_max, recurrent_max] (IndRNN bound)."""
        bound = self.options.recurrent_max
        if bound is None:
            return
        with torch.no_grad():
            for s in self._suffixes():
                p = getattr(self, "weight_hh" + s)
                if only is None or id(p) in only:
                    p.clamp_(-bound, bound)

    def _extra_options(self) -> list[str]:
        return self.options.describe(self.spec.default_options(self.options))


def _option_view(name: str) -> property:
    return property(lambda self: getattr(self.options, name), doc=f"``options.{name}``")


for _name in OPTION_NAMES:
    setattr(RecurrentBase, _name, _option_view(_name))


class WeightNorm(nn.Module):
    """``w = g * v / |v|`` per output row: torch's ``weight_norm(dim=0)``, same state-dict names.

    Written in plain operations because torch's fused weight-norm kernel gets second derivatives
    wrong (a gradient penalty through it is silently off); these are exact to any order.
    """

    def forward(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v * (g / torch.linalg.vector_norm(v, dim=1, keepdim=True))

    def right_inverse(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linalg.vector_norm(w, dim=1, keepdim=True), w


def _unpickle_parametrized(cls: type[RecurrentBase], state: dict[str, Any]) -> RecurrentBase:
    """Rebuild a pickled weight-normed module: the plain object, then its parametrizations."""
    saved = state["_modules"]["parametrizations"]
    module = cls.__new__(cls)
    module.__dict__.update(state)
    module._modules = {k: v for k, v in state["_modules"].items() if k != "parametrizations"}
    for name, plist in saved.items():
        # Register on a placeholder of the right shape, then put the saved tensors in its place.
        module.register_parameter(name, nn.Parameter(plist.original1.detach().clone()))
        parametrize.register_parametrization(module, name, WeightNorm(), unsafe=True)
        module.parametrizations[name] = plist  # type: ignore[index, operator]
    return module


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


def check_state_like(name: str, state: Tensor, like: Tensor) -> None:
    """A state tensor must share the input's device and (outside autocast) its dtype."""
    if state.device != like.device:
        raise DeviceError(
            f"{name} must be on the input's device ({like.device}), got {state.device}"
        )
    if state.dtype != like.dtype and not autocast_on(like.device.type):
        raise DeviceError(f"{name} dtype must match the input's ({like.dtype}), got {state.dtype}")


def autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``."""
    try:
        return bool(torch.is_autocast_enabled(device_type))  # type: ignore[call-arg]
    except TypeError:  # torch < 2.4 takes no device type
        return bool(torch.is_autocast_enabled())
    except RuntimeError:  # a device autocast does not know ("meta"): no autocast there
        return False
