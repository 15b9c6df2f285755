"""Fused fast paths of the recurrent layers.

:func:`run_direction` has the signature and the results of the reference
:func:`rnnguard.nn.functional.run_direction` (same maths, same masks), but runs each layer's time
loop inside a ``torch.autograd.Function`` with a hand-written backward (see the per-family modules).
Every loop is written in PyTorch operations, so it runs on any device; on CPU in float32 the
per-step product with ``W_hh`` goes through torch's oneDNN packed linear (checked at import, with
``torch.mm`` as the fallback), and on CPU (float32 and float64) the LSTM and IndRNN loops call the optional native kernels of
:mod:`rnnguard.nn.fused.native` (compiled on first use; the PyTorch loops are their fallback and
the tests run both). The hand-written backward gives first-order gradients; when a graph of the
backward is asked for (``create_graph=True``: gradient penalties, Hessian-vector products), each
Function recomputes its outputs through its twin in :mod:`rnnguard.nn.fused.reference` and
differentiates that, so gradients of every order are exact on every backend. Under ``torch.autocast`` the same loops run in mixed
precision (:mod:`rnnguard.nn.fused.amp`): products in the autocast dtype, the rest in float32.
On CUDA the element-wise work of each step runs in Triton kernels where triton imports
(:mod:`rnnguard.nn.fused.dispatch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from rnnguard.errors import ShapeError
from rnnguard.nn.functional import (
    DirectionMasks,
    LayerParams,
    State,
    check_direction_masks,
    drop_connect,
)
from rnnguard.nn.fused import amp
from rnnguard.nn.fused._common import Direction, FusedFn, TimeFrame, ZoneoutWeight
from rnnguard.nn.fused.gru import gru_direction, gru_recurrence
from rnnguard.nn.fused.indrnn import indrnn_direction, indrnn_recurrence
from rnnguard.nn.fused.lstm import lstm_direction, lstm_recurrence
from rnnguard.nn.fused.rnn import rnn_direction, rnn_recurrence
from rnnguard.nn.options import RecurrentOptions

if TYPE_CHECKING:  # the specs are built from this package's functions
    from rnnguard.nn.kinds import KindSpec

__all__ = [
    "Direction",
    "FusedFn",
    "gru_direction",
    "gru_recurrence",
    "indrnn_direction",
    "indrnn_recurrence",
    "lstm_direction",
    "lstm_recurrence",
    "rnn_direction",
    "rnn_recurrence",
    "run_direction",
]


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
    """Fused drop-in for :func:`rnnguard.nn.functional.run_direction`: (T, B, I) -> ((T, B, H), state).

    Under autocast (float32 parameters) the products run in the autocast dtype and everything
    else, the outputs and the final state included, in float32 (see :mod:`.amp`).
    """
    masks = check_direction_masks(spec, masks, options, training)
    if x.dim() != 3:
        raise ShapeError(f"x must be 3-D (T, B, I), got shape {tuple(x.shape)}")
    half = amp.matmul_dtype(x.device.type, params.weight_ih)
    if half is None:
        return _run(spec, x, state0, params, masks, options, training, lengths, reverse)
    with amp.mixed(x.device.type, half):
        # The state and the zoneout weights in the float32 compute dtype (a half-precision
        # input under autocast would otherwise set theirs).
        state0 = type(state0)(*(s.float() for s in state0))
        return _run(spec, x, state0, params, masks, options, training, lengths, reverse)


def _run(
    spec: KindSpec,
    x: Tensor,
    state0: State,
    params: LayerParams,
    masks: DirectionMasks,
    options: RecurrentOptions,
    training: bool,
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, State]:
    like = x if amp.current() is None else state0[0]  # the dtype of the zoneout weights
    frame = TimeFrame(x.shape[0], x.shape[1], x.device, lengths, reverse)
    w_hh = drop_connect(params.weight_hh, options.dropconnect, masks.dropconnect, training)
    zoneout = _as(frame.zoneout_weight(masks.zoneout, options.zoneout, training, like), like)
    zoneout_cell = (
        _as(frame.zoneout_weight(masks.zoneout_cell, options.zoneout_cell, training, like), like)
        if spec.has_cell
        else None
    )
    direction = Direction(frame, x, state0, params, w_hh, options, zoneout, zoneout_cell)
    hs, final = spec.fused(direction)
    return frame.zero_padding(frame.from_frame(hs)), final


def _as(weight: ZoneoutWeight, like: Tensor) -> ZoneoutWeight:
    """A zoneout weight tensor in ``like``'s dtype (masks drawn for a half-precision input)."""
    return weight.to(like.dtype) if isinstance(weight, Tensor) else weight
