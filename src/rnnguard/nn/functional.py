"""Pure recurrent maths: one step per family, the per-direction time loop, regularisers and masks.

Everything here follows ``docs/equations.md``. Cells, layers and
:func:`rnnguard.nn.step_function.layer_step_function` all call the same ``*_step`` functions, so
there is exactly one implementation of each recurrence. What differs between the families is read
from their :class:`~rnnguard.nn.kinds.KindSpec`; the extras come as one
:class:`~rnnguard.nn.options.RecurrentOptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnguard.errors import ConfigError

if TYPE_CHECKING:  # the specs and options are built from this module's functions
    from rnnguard.nn.kinds import KindSpec
    from rnnguard.nn.options import RecurrentOptions

__all__ = [
    "NONLINEARITIES",
    "DirectionMasks",
    "HiddenState",
    "LSTMState",
    "LayerMasks",
    "LayerParams",
    "StepFn",
    "activation",
    "cell_forward",
    "drop_connect",
    "gru_step",
    "indrnn_step",
    "lstm_step",
    "project_input",
    "rnn_step",
    "run_direction",
    "sample_masks",
    "zoneout",
]

NONLINEARITIES = ("tanh", "relu", "leaky_relu")
LN_EPS = 1e-5
LEAKY_SLOPE = 0.01


class HiddenState(NamedTuple):
    """State of an RNN, GRU or IndRNN: ``h`` (B, H)."""

    h: Tensor


class LSTMState(NamedTuple):
    """State of an LSTM: ``h`` and ``c``, each (B, H), in torch.nn's order."""

    h: Tensor
    c: Tensor


State = HiddenState | LSTMState


class LayerParams(NamedTuple):
    """The tensors of one layer and direction (already weight-normed / clamped where configured)."""

    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None = None
    bias_hh: Tensor | None = None
    ln_ih: Tensor | None = None  # LayerNorm gain on W_ih x (G*H,)
    ln_hh: Tensor | None = None  # LayerNorm gain on W_hh h (G*H,)
    ln_c_weight: Tensor | None = None  # LSTM cell-state LayerNorm gain (H,)
    ln_c_bias: Tensor | None = None  # and shift (H,)
    weight_hr: Tensor | None = None  # LSTM projection (P, H): h_t = W_hr (o * tanh(c_t))


class DirectionMasks(NamedTuple):
    """Random masks of one layer and direction for one forward call (None where the rate is 0)."""

    dropconnect: Tensor | None = None  # shape of weight_hh, already scaled by 1 / (1 - p)
    zoneout: Tensor | None = None  # (T, B, H) for layers, (B, H) for cells; 1 keeps h_{t-1}
    zoneout_cell: Tensor | None = None  # likewise for the LSTM cell state


class LayerMasks(NamedTuple):
    """Masks of one layer: one :class:`DirectionMasks` per direction and the output dropout mask."""

    directions: tuple[DirectionMasks, ...]
    dropout: Tensor | None = None  # (T, B, D*H), scaled by 1 / (1 - p); None for the last layer


# --------------------------------------------------------------------------- activations, norms


def activation(v: Tensor, name: str) -> Tensor:
    """The named nonlinearity (one of :data:`NONLINEARITIES`) of ``v``, out of place."""
    if name == "tanh":
        return torch.tanh(v)
    if name == "relu":
        return torch.relu(v)
    if name == "leaky_relu":
        return F.leaky_relu(v, LEAKY_SLOPE)
    raise ConfigError(f"nonlinearity must be one of {NONLINEARITIES}, got {name!r}")


def _ln(v: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return F.layer_norm(v, (v.shape[-1],), weight, bias, LN_EPS)


# --------------------------------------------------------------------------- regularisers


def zoneout(
    prev: Tensor, new: Tensor, p: float, mask: Tensor | None = None, training: bool = True
) -> Tensor:
    """Zoneout: keep ``prev`` where ``mask`` is 1 (train) or mix by the expectation ``p`` (eval).

    ``p`` in [0, 1) is the probability of keeping the previous value. In training, ``mask``
    (broadcastable to ``new``; 1 keeps ``prev``) is drawn as ``Bernoulli(p)`` when not given.
    Module form: :class:`rnnguard.nn.Zoneout`.
    """
    if p == 0.0:
        return new
    _check_rate(p)
    if training:
        if mask is None:
            mask = _bernoulli(new.shape, p, new)
        return mask * prev + (1.0 - mask) * new
    return p * prev + (1.0 - p) * new


def drop_connect(
    weight: Tensor, p: float, mask: Tensor | None = None, training: bool = True
) -> Tensor:
    """DropConnect on a weight tensor, applied functionally (the parameter is never replaced).

    ``p`` in [0, 1) is the drop probability. In training the result is ``weight * mask``, with
    ``mask`` (already scaled by ``1 / (1 - p)``) drawn as ``Bernoulli(1 - p) / (1 - p)`` when not
    given; in eval ``weight`` itself is returned. Module form: :class:`rnnguard.nn.DropConnect`.
    """
    if p == 0.0 or not training:
        return weight
    _check_rate(p)
    if mask is None:
        mask = _bernoulli(weight.shape, 1.0 - p, weight) / (1.0 - p)
    return weight * mask


def _check_rate(p: float) -> None:
    # Only reached for p != 0, so the common no-regulariser path pays nothing.
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"p must be a probability in [0, 1), got {p}")


#: Masks draw 16 random bits per element: a rate is rounded to a multiple of 2**-16.
MASK_BITS = 16


def graph_capture() -> bool:
    """Whether torch.compile or torch.export is tracing this call (not running it eagerly)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is None:
        return False
    exporting = getattr(compiler, "is_exporting", None)
    return bool(compiler.is_compiling() or (exporting is not None and exporting()))


def _bernoulli(shape: Sequence[int], keep: float, like: Tensor) -> Tensor:
    """A {0, 1} mask of ``like``'s dtype, each entry 1 with probability ``keep`` (to 2**-16).

    One sampling primitive for every mask, so reference and fused paths draw identical numbers.
    Each element takes 16 bits of 64-bit integer draws, four elements a draw: the random number
    generator is the main cost of a (T, B, H) zoneout mask on CPU, and ``torch.rand`` spends a
    whole draw on each element.
    """
    span = 1 << MASK_BITS
    threshold = round(keep * span)
    if threshold >= span:
        return torch.ones(tuple(shape), device=like.device, dtype=like.dtype)
    if graph_capture():  # the same law; a traced graph cannot hold the 64-bit bound below
        bits = torch.randint(-span // 2, span // 2, tuple(shape), device=like.device)
        return torch.lt(bits, threshold - span // 2).to(like.dtype)
    size = math.prod(int(d) for d in shape)
    words = torch.empty((size + 3) // 4, device=like.device, dtype=torch.int64)
    words.random_(-(1 << 63), None)  # all 64 bits uniform
    bits = words.view(torch.int16)[:size].view(tuple(shape))  # uniform on [-2**15, 2**15)
    if like.device.type != "cpu":  # the plain form everywhere it was not measured
        return torch.lt(bits, threshold - span // 2).to(like.dtype)
    out = torch.empty(tuple(shape), device=like.device, dtype=like.dtype)
    return torch.lt(bits, threshold - span // 2, out=out)  # on CPU 10x faster than lt().to()


def sample_masks(
    spec: KindSpec,
    options: RecurrentOptions,
    *,
    num_layers: int,
    num_directions: int,
    hidden_size: int,
    steps: int,
    batch: int,
    like: Tensor,
    dropout: float = 0.0,
    training: bool = True,
    proj_size: int = 0,
) -> list[LayerMasks]:
    """Draw every random mask of one forward call in the documented order (docs/equations.md).

    For each layer, for each direction: DropConnect mask, zoneout masks of h, zoneout masks of c;
    then that layer's output dropout mask (all layers but the last). Masks take ``like``'s device
    and dtype and come from that device's default generator. In eval mode all masks are None.
    With ``proj_size`` (LSTM) the masks of h and of the output have that width.
    """
    out_size = proj_size or hidden_size
    out: list[LayerMasks] = []
    for layer in range(num_layers):
        dirs = []
        for _ in range(num_directions):
            dc = zh = zc = None
            if training and options.dropconnect > 0.0:
                keep = 1.0 - options.dropconnect
                dc = _bernoulli(spec.hh_shape(hidden_size, proj_size), keep, like) / keep
            if training and options.zoneout > 0.0:
                zh = _bernoulli((steps, batch, out_size), options.zoneout, like)
            if training and spec.has_cell and options.zoneout_cell > 0.0:
                zc = _bernoulli((steps, batch, hidden_size), options.zoneout_cell, like)
            dirs.append(DirectionMasks(dc, zh, zc))
        drop = None
        if training and dropout > 0.0 and layer < num_layers - 1:
            shape = (steps, batch, num_directions * out_size)
            if dropout >= 1.0:  # drops everything and, as torch.nn's dropout, draws nothing
                drop = torch.zeros(shape, device=like.device, dtype=like.dtype)
            else:
                drop = _bernoulli(shape, 1.0 - dropout, like) / (1.0 - dropout)
        out.append(LayerMasks(tuple(dirs), drop))
    return out


# --------------------------------------------------------------------------- the steps


def project_input(x: Tensor, p: LayerParams) -> Tensor:
    """``LN(W_ih x) + b_ih`` for any leading shape of ``x``; hoisted out of the time loop."""
    v = F.linear(x, p.weight_ih)
    if p.ln_ih is not None:
        v = _ln(v, p.ln_ih)
    if p.bias_ih is not None:
        v = v + p.bias_ih
    return v


def _recurrent(h: Tensor, w_hh: Tensor, p: LayerParams) -> Tensor:
    u = F.linear(h, w_hh)
    if p.ln_hh is not None:
        u = _ln(u, p.ln_hh)
    if p.bias_hh is not None:
        u = u + p.bias_hh
    return u


def lstm_step(
    xp: Tensor, state: State, w_hh: Tensor, p: LayerParams, options: RecurrentOptions
) -> LSTMState:
    """One LSTM step from the projected input ``xp`` (B, 4H); returns the candidate (h~, c~).

    With ``p.weight_hr`` (P, H) the candidate h~ is projected to P features, as torch.nn's
    ``proj_size``.
    """
    h, c = state  # type: ignore[misc]
    z = xp + _recurrent(h, w_hh, p)
    i, f, g, o = z.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    c_out = _ln(c_new, p.ln_c_weight, p.ln_c_bias) if p.ln_c_weight is not None else c_new
    h_new = torch.sigmoid(o) * torch.tanh(c_out)
    if p.weight_hr is not None:
        h_new = F.linear(h_new, p.weight_hr)
    return LSTMState(h_new, c_new)


def gru_step(
    xp: Tensor, state: State, w_hh: Tensor, p: LayerParams, options: RecurrentOptions
) -> HiddenState:
    """One GRU step from the projected input ``xp`` (B, 3H); returns the candidate h~."""
    h = state[0]
    u = _recurrent(h, w_hh, p)
    a_r, a_z, a_n = xp.chunk(3, dim=-1)
    u_r, u_z, u_n = u.chunk(3, dim=-1)
    r = torch.sigmoid(a_r + u_r)
    z = torch.sigmoid(a_z + u_z)
    n = torch.tanh(a_n + r * u_n)
    return HiddenState((1.0 - z) * n + z * h)


def rnn_step(
    xp: Tensor, state: State, w_hh: Tensor, p: LayerParams, options: RecurrentOptions
) -> HiddenState:
    """One Elman RNN step (optionally residual: h_{t-1} + act(...), or the convex
    (1 - s) h_{t-1} + s act(...) with ``residual_scale``); returns the candidate h~."""
    h = state[0]
    a = activation(xp + _recurrent(h, w_hh, p), options.nonlinearity)
    if not options.residual:
        return HiddenState(a)
    scale = options.residual_scale
    return HiddenState(h + a if scale is None else torch.lerp(h, a, scale))


def indrnn_step(
    xp: Tensor, state: State, w_hh: Tensor, p: LayerParams, options: RecurrentOptions
) -> HiddenState:
    """One IndRNN step: act(xp + u * h_{t-1}) with the per-unit recurrent vector ``u``."""
    h = state[0]
    return HiddenState(activation(xp + w_hh * h, options.nonlinearity))


#: A reference step: (projected input, state, recurrent weight, params, options) -> candidate state.
StepFn = Callable[[Tensor, State, Tensor, LayerParams, "RecurrentOptions"], State]


def _zoneout_state(
    prev: State,
    new: State,
    options: RecurrentOptions,
    training: bool,
    zoneout_h: Tensor | None,
    zoneout_cell: Tensor | None,
) -> State:
    if options.zoneout == 0.0 and options.zoneout_cell == 0.0:
        return new
    h = zoneout(prev[0], new[0], options.zoneout, zoneout_h, training)
    if isinstance(new, LSTMState) and isinstance(prev, LSTMState):
        c = zoneout(prev.c, new.c, options.zoneout_cell, zoneout_cell, training)
        return LSTMState(h, c)
    return HiddenState(h)


def cell_forward(
    spec: KindSpec,
    x_t: Tensor,
    state: State,
    params: LayerParams,
    options: RecurrentOptions,
    training: bool,
    masks: DirectionMasks | None = None,
) -> State:
    """One full step (projection, recurrence, zoneout) on ``x_t`` (B, I); masks are per step (B, H)."""
    masks = masks or DirectionMasks()
    w_hh = drop_connect(params.weight_hh, options.dropconnect, masks.dropconnect, training)
    new = spec.step(project_input(x_t, params), state, w_hh, params, options)
    return _zoneout_state(state, new, options, training, masks.zoneout, masks.zoneout_cell)


def check_direction_masks(
    spec: KindSpec, masks: DirectionMasks | None, options: RecurrentOptions, training: bool
) -> DirectionMasks:
    """``masks`` (empty when None), checked to hold every mask a training-mode run needs."""
    masks = masks or DirectionMasks()
    if training:
        if options.dropconnect > 0.0 and masks.dropconnect is None:
            raise ConfigError("run_direction: dropconnect > 0 in training needs masks.dropconnect")
        if options.zoneout > 0.0 and masks.zoneout is None:
            raise ConfigError("run_direction: zoneout > 0 in training needs masks.zoneout")
        if spec.has_cell and options.zoneout_cell > 0.0 and masks.zoneout_cell is None:
            raise ConfigError(
                "run_direction: zoneout_cell > 0 in training needs masks.zoneout_cell"
            )
    return masks


def run_direction(
    spec: KindSpec,
    x: Tensor,
    state0: State,
    params: LayerParams,
    masks: DirectionMasks | None,
    options: RecurrentOptions,
    training: bool,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, State]:
    """Run one layer in one direction over ``x`` (T, B, I) -> (outputs (T, B, H), final state).

    ``lengths`` (B,) marks valid steps: a sequence updates its state only at t < length, padded
    outputs are zero, and the reverse direction starts at its own last valid step. In training
    mode with a zoneout/DropConnect rate > 0, ``masks`` must come from :func:`sample_masks`.
    """
    masks = check_direction_masks(spec, masks, options, training)
    steps = x.shape[0]
    xp = project_input(x, params)  # (T, B, G*H): the input projection leaves the loop
    w_hh = drop_connect(params.weight_hh, options.dropconnect, masks.dropconnect, training)
    valid = None
    if lengths is not None:
        t_idx = torch.arange(steps, device=x.device).unsqueeze(1)
        valid = (t_idx < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
    outputs: list[Tensor] = [x.new_empty(0)] * steps
    state = state0
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        new = spec.step(xp[t], state, w_hh, params, options)
        zh = masks.zoneout[t] if masks.zoneout is not None else None
        zc = masks.zoneout_cell[t] if masks.zoneout_cell is not None else None
        new = _zoneout_state(state, new, options, training, zh, zc)
        if valid is not None:
            v = valid[t]
            new = type(new)(*(torch.where(v, n, s) for n, s in zip(new, state)))
            outputs[t] = torch.where(v, new[0], torch.zeros_like(new[0]))
        else:
            outputs[t] = new[0]
        state = new
    return torch.stack(outputs, 0), state


# --------------------------------------------------------------------------- torch.nn's names

# torch.nn's recurrent modules in rnnguard's terms: mode -> (kind, nonlinearity), and their names.
TORCH_MODES = {
    "LSTM": ("lstm", "tanh"),
    "GRU": ("gru", "tanh"),
    "RNN_TANH": ("rnn", "tanh"),
    "RNN_RELU": ("rnn", "relu"),
}


def torch_suffix(layer: int, direction: int) -> str:
    """torch.nn's parameter-name suffix of ``layer``/``direction``: ``_l0``, ``_l1_reverse``."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def torch_cell_kind(cell: nn.RNNCellBase) -> str:
    """The kind of a torch.nn cell: ``"lstm"``, ``"gru"`` or ``"rnn"``."""
    return {nn.LSTMCell: "lstm", nn.GRUCell: "gru"}.get(type(cell), "rnn")
