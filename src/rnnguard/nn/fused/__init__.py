"""Fused fast paths of the recurrent layers.

:func:`run_direction` has the signature and the results of the reference
:func:`rnnguard.nn.functional.run_direction` (same maths, same masks), but runs each layer's time
loop inside a ``torch.autograd.Function`` with a hand-written backward (see the per-family modules).
Every loop is written in PyTorch operations, so it runs on any device; on CPU in float32 the
per-step product with ``W_hh`` goes through torch's oneDNN packed linear (checked at import, with
``torch.mm`` as the fallback), and on CPU (float32 and float64) the LSTM and IndRNN loops call the optional native kernels of
:mod:`rnnguard.nn.fused.native` (compiled on first use; the PyTorch loops are their fallback and
the tests run both). The hand-written backward gives first-order
gradients (any number of times through a retained graph); for double backward (gradients of
gradients) use ``impl="reference"``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rnnguard.errors import ConfigError
from rnnguard.nn.functional import (
    LN_EPS,
    DirectionMasks,
    HiddenState,
    LayerParams,
    LSTMState,
    State,
    StepOptions,
    check_direction_masks,
    drop_connect,
)
from rnnguard.nn.fused._common import TimeFrame
from rnnguard.nn.fused.gru import gru_recurrence
from rnnguard.nn.fused.indrnn import indrnn_recurrence
from rnnguard.nn.fused.lstm import (
    fold_gate_scale,
    gate_scale,
    lstm_recurrence,
    lstm_recurrence_prescaled,
)
from rnnguard.nn.fused.rnn import rnn_recurrence

__all__ = [
    "gru_recurrence",
    "indrnn_recurrence",
    "lstm_recurrence",
    "rnn_recurrence",
    "run_direction",
]


def run_direction(
    kind: str,
    x: Tensor,
    state0: State,
    params: LayerParams,
    masks: DirectionMasks | None,
    opts: StepOptions,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, State]:
    """Fused drop-in for :func:`rnnguard.nn.functional.run_direction`: (T, B, I) -> ((T, B, H), state)."""
    masks = check_direction_masks(kind, masks, opts)
    if x.dim() != 3:
        raise ConfigError(f"x must be 3-D (T, B, I), got shape {tuple(x.shape)}")
    steps, batch = x.shape[0], x.shape[1]
    frame = TimeFrame(steps, batch, x.device, lengths, reverse)
    w_hh = drop_connect(params.weight_hh, opts.dropconnect, masks.dropconnect, opts.training)
    # The input side of every step in one matrix multiply. b_hh joins b_ih there (so the loop
    # never adds it) except in the GRU, whose reset gate multiplies b_hh's n-part.
    scale = gate_scale(params.weight_ih.shape[0], x) if kind == "lstm" else None
    # The LSTM takes its input LayerNorm into the recurrence (the native kernels fuse it into
    # each step); the others get LN(W_ih x) + b ready-made.
    proj, ln_in, in_bias = _project_input(x, params, kind in ("lstm", "rnn"), scale, kind == "lstm")
    pre = frame.to_frame(proj)
    carry_h = frame.carry(masks.zoneout_h, opts.zoneout, opts.training, x)
    h0 = state0[0]
    final: State
    if kind == "lstm":
        carry_c = frame.carry(masks.zoneout_c, opts.zoneout_cell, opts.training, x)
        c0 = state0[1]  # type: ignore[misc]
        assert scale is not None
        # The fused LSTM wants its g-gate inputs and cell LayerNorm doubled (see lstm.py).
        w_rec, ln_hh, ln_cw, ln_cb = fold_gate_scale(
            scale, w_hh, params.ln_hh, params.ln_c_weight, params.ln_c_bias
        )
        hs, c_last = lstm_recurrence_prescaled(
            pre, h0, c0, w_rec, ln_hh, ln_cw, ln_cb, carry_h, carry_c, ln_in, in_bias
        )
        final = LSTMState(hs[-1], c_last)
    elif kind == "gru":
        hs = gru_recurrence(pre, h0, w_hh, params.bias_hh, params.ln_hh, carry_h)
        final = HiddenState(hs[-1])
    elif kind == "rnn":
        hs = rnn_recurrence(pre, h0, w_hh, params.ln_hh, opts.nonlinearity, opts.residual, carry_h)
        final = HiddenState(hs[-1])
    elif kind == "indrnn":
        hs = indrnn_recurrence(pre, h0, w_hh, opts.nonlinearity, carry_h)
        final = HiddenState(hs[-1])
    else:
        raise ConfigError(f"kind must be one of 'lstm', 'gru', 'rnn', 'indrnn', got {kind!r}")
    return frame.zero_padding(frame.from_frame(hs)), final


def _project_input(
    x: Tensor,
    params: LayerParams,
    fold_bias_hh: bool,
    scale: Tensor | None = None,
    defer_ln: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``LN(W_ih x) + b_ih (+ b_hh)`` for all steps, the bias fused into the matmul or the LayerNorm.

    ``scale`` (G,) multiplies the result's features, folded into the weight (or LayerNorm gain)
    and the bias, so it costs no pass over the (T, B, G) result. Returns ``(result, None, None)``,
    or with ``defer_ln`` and an input LayerNorm ``(W_ih x, gain, bias)`` for the caller to apply.
    """
    bias = params.bias_ih
    if fold_bias_hh and params.bias_hh is not None:
        bias = params.bias_hh if bias is None else bias + params.bias_hh
    if scale is not None and bias is not None:
        bias = bias * scale
    if params.ln_ih is None:
        w = params.weight_ih if scale is None else params.weight_ih * scale.unsqueeze(1)
        return F.linear(x, w, bias), None, None
    gain = params.ln_ih if scale is None else params.ln_ih * scale
    v = F.linear(x, params.weight_ih)
    if defer_ln:
        return v, gain, bias
    return F.layer_norm(v, (v.shape[-1],), gain, bias, LN_EPS), None, None
