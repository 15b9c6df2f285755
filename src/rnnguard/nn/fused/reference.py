"""Each fused recurrence written in ordinary autograd operations: the twins that double backward uses.

Same contract, argument order and maths as the autograd Functions of the family modules
(prescaled LSTM parameters, zoneout weights), but every operation is an out-of-place torch op, so
autograd differentiates them to any order. A fused Function's backward recomputes its outputs
through its twin when a graph of the backward is asked for (see ``_common.double_backward``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnguard.nn.functional import LN_EPS, activation
from rnnguard.nn.fused._common import ZoneoutWeight, keep_zoned, recurrent_matmul, stack_steps
from rnnguard.nn.options import RecurrentOptions

__all__ = ["gru_reference", "indrnn_reference", "lstm_reference", "rnn_reference"]


def _ln(v: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return F.layer_norm(v, (v.shape[-1],), weight, bias, LN_EPS)


def rnn_reference(
    pre: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None,
    options: RecurrentOptions,
    zoneout: ZoneoutWeight = None,
) -> Tensor:
    """``a = act(pre_t + LN(W_hh h_{t-1}))``; ``h~_t`` = a, h_{t-1} + a (residual) or
    ``(1 - s) h_{t-1} + s a`` (residual with ``residual_scale`` s); then zoneout; every h_t."""
    scale = options.residual_scale
    h, hs = h0, []
    for t in range(pre.shape[0]):
        r = recurrent_matmul(h, w_hh)
        if ln_hh is not None:
            r = _ln(r, ln_hh)
        new = activation(pre[t] + r, options.nonlinearity)
        if options.residual:
            new = new + h if scale is None else torch.lerp(h, new, scale)
        h = keep_zoned(new, h, zoneout, t)
        hs.append(h)
    return stack_steps(hs, pre, h0)


def gru_reference(
    pre: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None = None,
    ln_hh: Tensor | None = None,
    zoneout: ZoneoutWeight = None,
) -> Tensor:
    """The GRU step (``b_hh`` inside the reset gate's product, or as the LayerNorm's shift)."""
    hid = h0.shape[-1]
    h, hs = h0, []
    for t in range(pre.shape[0]):
        u = recurrent_matmul(h, w_hh)
        if ln_hh is not None:
            u = _ln(u, ln_hh, b_hh)
        elif b_hh is not None:
            u = u + b_hh
        r, z = torch.sigmoid(pre[t, :, : 2 * hid] + u[:, : 2 * hid]).chunk(2, dim=-1)
        n = torch.tanh(pre[t, :, 2 * hid :] + r * u[:, 2 * hid :])
        h = keep_zoned(torch.lerp(n, h, z), h, zoneout, t)  # (1 - z) n + z h, then zoneout
        hs.append(h)
    return stack_steps(hs, pre, h0)


def indrnn_reference(
    pre: Tensor, h0: Tensor, u: Tensor, options: RecurrentOptions, zoneout: ZoneoutWeight = None
) -> Tensor:
    """``h~_t = act(pre_t + u * h_{t-1})`` then zoneout; every h_t."""
    h, hs = h0, []
    for t in range(pre.shape[0]):
        h = keep_zoned(activation(pre[t] + u * h, options.nonlinearity), h, zoneout, t)
        hs.append(h)
    return stack_steps(hs, pre, h0)


def lstm_reference(
    pre: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    zoneout: ZoneoutWeight,
    zoneout_cell: ZoneoutWeight,
    w_hr: Tensor | None = None,
    ln_in: Tensor | None = None,
    in_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The prescaled LSTM (g-gate inputs and cell LayerNorm affine doubled); every h_t and c_T.

    The arguments are those of the LSTM Functions, in their order: the PyTorch loop's and the
    Triton one's are a prefix (they get ``pre`` after the input LayerNorm).
    """
    if ln_in is not None:
        pre = _ln(pre, ln_in, in_bias)
    h, c, hs = h0, c0, []
    for t in range(pre.shape[0]):
        r = recurrent_matmul(h, w_hh)
        if ln_hh is not None:
            r = _ln(r, ln_hh)
        i, f, g, o = torch.sigmoid(pre[t] + r).chunk(4, dim=-1)
        g = 2.0 * g - 1.0  # tanh of the true g input, which arrived doubled
        cn = f * c + i * g
        if ln_c_weight is not None:  # its affine arrived doubled too
            tc = 2.0 * torch.sigmoid(_ln(cn, ln_c_weight, ln_c_bias)) - 1.0
        else:
            tc = torch.tanh(cn)
        new = o * tc
        if w_hr is not None:
            new = recurrent_matmul(new, w_hr)
        h = keep_zoned(new, h, zoneout, t)
        c = keep_zoned(cn, c, zoneout_cell, t)
        hs.append(h)
    return stack_steps(hs, pre, h0), c
