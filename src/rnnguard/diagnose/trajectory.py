"""Unrolling the recurrent layers inside any model, one step at a time, to see their hidden states.

A forward hook on every recurrent submodule (torch.nn.RNN/LSTM/GRU and rnnguard RNN/LSTM/GRU/IndRNN)
replaces its output by an identical one computed step by step with
:func:`rnnguard.nn.step_function.layer_step_function`. Each step's state gets a zero "probe" tensor
added, so autograd returns the total dL/dh_t for every layer and direction, and the states and
inputs of every step are recorded for Jacobian and saturation measurements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnguard.errors import ConfigError
from rnnguard.nn.functional import HiddenState, LSTMState, State
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN
from rnnguard.nn.step_function import StepFunction, layer_step_function
from rnnguard.train.model_call import ModelView

__all__ = [
    "DirectionTrace",
    "ModuleTrace",
    "find_recurrent",
    "flat_step",
    "flatten_state",
    "is_recurrent",
    "supported",
    "trace_recurrent",
]

_RNNGUARD_LAYERS = (RNN, LSTM, GRU, IndRNN)


def is_recurrent(module: nn.Module) -> bool:
    """Whether ``module`` is a recurrent sequence layer the diagnostics can unroll."""
    return isinstance(module, (nn.RNNBase, *_RNNGUARD_LAYERS)) and supported(module)


def find_recurrent(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Recurrent sequence layers inside ``model`` by type, as (qualified name, module).

    Inside a :class:`~rnnguard.train.model_call.ModelView` the names are the user's model's own.
    """
    prefix = model.label_prefix if isinstance(model, ModelView) else ""
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if is_recurrent(m):
            found.append((name.removeprefix(prefix) or type(m).__name__.lower(), m))
    return found


def supported(module: nn.Module) -> bool:
    """Whether a recurrent layer can be unrolled step by step (torch's projected LSTM cannot)."""
    if isinstance(module, nn.RNNBase) and not isinstance(module, _RNNGUARD_LAYERS):
        return module.mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU") and not getattr(
            module, "proj_size", 0
        )
    return True


def flatten_state(state: State) -> Tensor:
    """One (B, D) tensor of a state: h, or [h, c] for LSTMs."""
    return torch.cat(list(state), dim=-1) if len(state) > 1 else state[0]


def flat_step(fn: StepFunction) -> Callable[[Tensor, Tensor], Tensor]:
    """``fn.step`` as a map on flat states (B, D), for the Jacobian machinery."""
    hidden = fn.hidden_size

    def step(x_t: Tensor, s: Tensor) -> Tensor:
        state: State = (
            LSTMState(s[:, :hidden], s[:, hidden:]) if fn.kind == "lstm" else HiddenState(s)
        )
        return flatten_state(fn.step(x_t, state))

    return step


@dataclass
class DirectionTrace:
    """One layer and direction of one recorded forward pass (batch first, in processing order).

    ``inputs`` (B, T, I) are the inputs in the order the direction consumed them (reversed for the
    backward direction), ``states`` the T + 1 states s_0..s_T, ``probe`` the zero tensor (B, T, H)
    whose gradient is dL/dh at each processed step.
    """

    layer: int
    direction: int
    fn: StepFunction
    inputs: Tensor
    states: list[State]
    probe: Tensor

    @property
    def kind(self) -> str:
        """Layer kind: lstm, gru, rnn or indrnn."""
        return self.fn.kind

    def stacked(self, which: int = 0, after: bool = True) -> Tensor:
        """Field ``which`` of the states after (or before) each step, stacked to (B, T, H)."""
        seq = self.states[1:] if after else self.states[:-1]
        return torch.stack([s[which] for s in seq], dim=1)


@dataclass
class ModuleTrace:
    """Everything recorded for one recurrent submodule."""

    name: str
    module: nn.Module
    directions: list[DirectionTrace] = field(default_factory=list)
    max_error: float = 0.0

    def label(self, d: DirectionTrace) -> str:
        """A readable name for one layer/direction, e.g. ``core.l0`` or ``rnn.l1.reverse``."""
        return f"{self.name}.l{d.layer}" + (".reverse" if d.direction else "")


def _initial(hx: Any, index: int, fn: StepFunction, batch: int, like: Tensor) -> State:
    if hx is None:
        return fn.initial_state(batch, device=like.device, dtype=like.dtype)
    if fn.kind == "lstm":
        h0, c0 = hx
        return LSTMState(h0[index], c0[index])
    return HiddenState(hx[index])


def _unbatch_hx(hx: Any) -> Any:
    if hx is None:
        return None
    if isinstance(hx, tuple):
        return tuple(h.unsqueeze(1) for h in hx)
    return hx.unsqueeze(1)


class _Recorder:
    """The forward hook that re-computes a recurrent module step by step with probes."""

    def __init__(self, name: str, module: nn.Module, tol: float) -> None:
        self.trace = ModuleTrace(name, module)
        self.tol = tol

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if isinstance(x, PackedSequence):
            raise ConfigError("hidden-state diagnostics need padded tensors, got a PackedSequence")
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            raise ConfigError(
                f"recurrent layer {self.trace.name!r} got an input that is not a tensor of rank 2 or 3"
            )
        mod: Any = module
        batch_first = bool(mod.batch_first)
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(0 if batch_first else 1)
            hx = _unbatch_hx(hx)
        seq = x if batch_first else x.transpose(0, 1)  # (B, T, I)
        out, hn, cn = self._unroll(mod, seq, hx)
        ref = output[0]
        mine = out if batch_first else out.transpose(0, 1)
        if not batched:
            mine = mine.squeeze(0 if batch_first else 1)
            hn = hn.squeeze(1)
            cn = cn.squeeze(1) if cn is not None else None
        if ref.numel():
            ref_b = ref.detach() if batched else ref.detach().unsqueeze(0 if batch_first else 1)
            ref_b = ref_b if batch_first else ref_b.transpose(0, 1)  # (B, T, F) like ``out``
            diff = (out.detach() - ref_b).abs()
            scale = max(1.0, ref_b.abs().max().item())
            width = int(mod.hidden_size)
            # Step 0 of the forward direction depends on x_0 alone: a mismatch there means the
            # step function differs from the layer. Later differences may be rounding amplified
            # by chaotic dynamics (positive Lyapunov exponent), so they are only recorded.
            first = diff[:, 0, :width].max().item()
            self.trace.max_error = max(self.trace.max_error, diff.max().item())
            if not first <= self.tol * scale:
                raise ConfigError(
                    f"could not reproduce recurrent layer {self.trace.name!r} step by step "
                    f"(difference {first:.3g} at the first step); its hidden states cannot be diagnosed"
                )
        return mine, ((hn, cn) if cn is not None else hn)

    def _unroll(self, mod: Any, seq: Tensor, hx: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        batch, steps = seq.shape[0], seq.shape[1]
        dirs = 2 if mod.bidirectional else 1
        residual = bool(getattr(mod, "residual_between_layers", False))
        layer_in = seq
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(int(mod.num_layers)):
            outs = []
            for d in range(dirs):
                fn = layer_step_function(mod, layer, d)
                state = _initial(hx, layer * dirs + d, fn, batch, seq)
                inputs = layer_in.flip(1) if d == 1 else layer_in
                probe = torch.zeros(
                    batch, steps, fn.hidden_size, dtype=seq.dtype, device=seq.device
                )
                probe.requires_grad_(True)
                states = [state]
                hseq = []
                for t in range(steps):
                    state = fn.step(inputs[:, t], state)
                    # the probe enters the recurrence, so its gradient is the total dL/dh_t
                    state = state._replace(h=state.h + probe[:, t])
                    states.append(state)
                    hseq.append(state.h)
                h_out = torch.stack(hseq, 1)
                outs.append(h_out.flip(1) if d == 1 else h_out)
                hs.append(state.h)
                if isinstance(state, LSTMState):
                    cs.append(state.c)
                self.trace.directions.append(
                    DirectionTrace(
                        layer, d, fn, inputs.detach(), [_detach(s) for s in states], probe
                    )
                )
            out = outs[0] if dirs == 1 else torch.cat(outs, dim=-1)
            if residual and out.shape[-1] == layer_in.shape[-1]:
                out = out + layer_in
            layer_in = out
        return layer_in, torch.stack(hs), (torch.stack(cs) if cs else None)


def _detach(state: State) -> State:
    return type(state)(*(t.detach() for t in state))


@contextlib.contextmanager
def trace_recurrent(model: nn.Module, tol: float = 1e-4) -> Iterator[list[ModuleTrace]]:
    """Within the block, every forward of a recurrent submodule of ``model`` is recorded.

    Yields the list of :class:`ModuleTrace` (filled by the forward passes run inside the block).
    Use it in eval mode: training-time noise (dropout, zoneout masks) is not reproduced.
    """
    recorders = [_Recorder(name, m, tol) for name, m in find_recurrent(model)]
    handles = [r.trace.module.register_forward_hook(r, with_kwargs=True) for r in recorders]
    try:
        yield [r.trace for r in recorders]
    finally:
        for h in handles:
            h.remove()
