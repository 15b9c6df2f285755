"""The fused recurrences on the Triton kernels of :mod:`.triton_kernels` (CUDA; tests: interpreter).

Same contracts and maths as the PyTorch loops in ``lstm.py`` (prescaled), ``gru.py``, ``rnn.py``
and ``indrnn.py``, which are the fallback and the oracle in the tests. A step is one product with
``W_hh`` (torch: cuBLAS, in the weight's dtype, so under autocast in half precision) and one
kernel launch for everything element-wise, LayerNorms and their backward included; IndRNN has no
product and runs its whole recurrence in one launch each way. All buffers are float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import triton
from torch import Tensor

from rnnguard.nn.functional import LEAKY_SLOPE, LN_EPS
from rnnguard.nn.fused import triton_kernels as K
from rnnguard.nn.fused._common import (
    RecurrentProduct,
    ZoneoutWeight,
    keep_for_double_backward,
    opaque,
    recurrent_weight_grad,
    twice_differentiable,
)
from rnnguard.nn.fused.reference import (
    gru_reference,
    indrnn_reference,
    lstm_reference,
    rnn_reference,
)
from rnnguard.nn.options import RecurrentOptions

__all__ = ["gru_recurrence", "indrnn_recurrence", "lstm_recurrence_prescaled", "rnn_recurrence"]

ACTS = {"tanh": 0, "relu": 1, "leaky_relu": 2}
_INDRNN_BLOCK = 256


def _block(n: int) -> int:
    return int(triton.next_power_of_2(max(n, 1)))


def _carry_args(
    carry: ZoneoutWeight, shape: tuple[int, int, int], dummy: Tensor
) -> tuple[Any, ...]:
    """(tensor, stride_t, stride_b, stride_h, constant, mode) for a zoneout weight (see kernels)."""
    if carry is None:
        return dummy, 0, 0, 0, 0.0, 0
    if not isinstance(carry, Tensor):
        return dummy, 0, 0, 0, float(carry), 1
    v = carry.expand(shape)
    st, sb, sh = v.stride()
    return v, st, sb, sh, 0.0, 2


def _or(v: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if v is None else v.contiguous()


def _weight_grad(d_raw: Tensor, h0: Tensor, hs: Tensor, w: Tensor) -> Tensor:
    """``sum_t d_raw_t^T h_{t-1}`` in the weight's dtype (half precision under autocast)."""
    dt = w.dtype
    if dt == d_raw.dtype:
        return recurrent_weight_grad(d_raw, h0, hs)
    return recurrent_weight_grad(d_raw.to(dt), h0.to(dt), hs.to(dt)).to(d_raw.dtype)


class _Products:
    """The products with ``W_hh`` around a recurrence's per-step kernels, forward and back.

    Forward, step t's kernel gets ``h_{t-1} @ W_hh^T``, kept for backward when a recurrent
    LayerNorm needs it (the kernel recomputes its normalised values from it); backward, step t's
    kernel gets the gradient that reached h_t through step t + 1's product.
    """

    def __init__(self, w_hh: Tensor, hs: Tensor) -> None:
        self.w_hh, self.hs = w_hh, hs
        self.d_h0 = hs

    def forward(self, h0: Tensor, raw: list[Tensor] | None) -> Iterator[tuple[int, Tensor]]:
        """(t, h_{t-1} @ W_hh^T) for every step, appended to ``raw`` unless None; the caller's
        kernel writes hs[t] in between."""
        prod = RecurrentProduct(self.w_hh, h0.shape[0])
        h = h0
        for t in range(self.hs.shape[0]):
            r = prod(h).contiguous()
            if raw is not None:
                raw.append(r)
            yield t, r
            h = self.hs[t]

    def backward(
        self, d_raw: Tensor, raw: list[Tensor] | None
    ) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(t, gradient through step t + 1's product, step t's kept product), last step first.

        The kernel of step t writes d_raw[t]. At the last step there is no such gradient (the
        kernels' HAS_REC is off) and without ``raw`` no product: ``hs`` fills those arguments.
        Afterwards :attr:`d_h0` is h0's gradient through the first product.
        """
        hs = self.hs
        back = RecurrentProduct(self.w_hh.t(), hs.shape[1])
        d_rec = hs
        for t in range(hs.shape[0] - 1, -1, -1):
            yield t, d_rec, (raw[t] if raw is not None else hs)
            d_rec = back(d_raw[t]).contiguous()
        self.d_h0 = d_rec


class _TritonLSTM(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_hh: Tensor,
        ln_hh: Tensor | None,
        ln_c_w: Tensor | None,
        ln_c_b: Tensor | None,
        carry_h: ZoneoutWeight,
        carry_c: ZoneoutWeight,
    ) -> tuple[Tensor, Tensor]:
        keep_for_double_backward(
            ctx, lstm_reference, (pre, h0, c0, w_hh, ln_hh, ln_c_w, ln_c_b, carry_h, carry_c)
        )
        steps, batch, g4 = pre.shape
        hid = g4 // 4
        pre, h0, c0 = pre.contiguous(), h0.contiguous(), c0.contiguous()
        new = pre.new_empty
        gates = new(steps, batch, g4)
        ct, tc, hs, cs = (new(steps, batch, hid) for _ in range(4))
        stats = new(4, steps, batch)  # mean and rstd of the recurrent and the cell LayerNorm
        shape = (steps, batch, hid)
        ch, cc = _carry_args(carry_h, shape, pre), _carry_args(carry_c, shape, pre)
        raw: list[Tensor] | None = [] if ln_hh is not None else None
        products = _Products(w_hh, hs)
        for t, r in products.forward(h0, raw):
            K.lstm_forward_step[(batch,)](
                pre, r, _or(ln_hh, pre), h0, c0, _or(ln_c_w, pre), _or(ln_c_b, pre),
                ch[0], cc[0], gates, stats[0], stats[1], ct, stats[2], stats[3], tc, hs, cs,
                t, batch, hid, LN_EPS, *ch[1:5], *cc[1:5],
                LN_HH=ln_hh is not None, LN_C=ln_c_w is not None, CH=ch[5], CC=cc[5],
                BLOCK_H=_block(hid), BLOCK_G=_block(g4),
            )  # fmt: skip
        ctx.raw, ctx.carries = raw, (ch, cc)
        ctx.save_for_backward(h0, c0, w_hh, ln_hh, ln_c_w, gates, ct, tc, hs, cs, stats)
        return hs, cs[-1].clone()

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor, d_c_last: Tensor) -> tuple[Tensor | None, ...]:
        h0, c0, w_hh, ln_hh, ln_c_w, gates, ct, tc, hs, cs, stats = ctx.saved_tensors
        ch, cc = ctx.carries
        steps, batch, hid = hs.shape
        g4 = 4 * hid
        d_hs = d_hs.contiguous()
        d_z = hs.new_empty(steps, batch, g4)
        d_raw = hs.new_empty(steps, batch, g4) if ln_hh is not None else d_z
        keep = hs.new_zeros(batch, hid)
        dc = d_c_last.contiguous().clone()
        d_ln_hh = hs.new_zeros(batch, g4) if ln_hh is not None else hs
        d_ln_cw = hs.new_zeros(batch, hid) if ln_c_w is not None else hs
        d_ln_cb = hs.new_zeros(batch, hid) if ln_c_w is not None else hs
        products = _Products(w_hh, hs)
        for t, d_rec, r in products.backward(d_raw, ctx.raw):
            K.lstm_backward_step[(batch,)](
                d_hs, d_rec, keep, dc, gates, c0, cs, ct, stats[2], stats[3], tc,
                _or(ln_c_w, hs), ch[0], cc[0], r, stats[0], stats[1], _or(ln_hh, hs),
                d_z, d_raw, d_ln_hh, d_ln_cw, d_ln_cb,
                t, batch, hid, *ch[1:5], *cc[1:5],
                HAS_REC=t < steps - 1, LN_HH=ln_hh is not None, LN_C=ln_c_w is not None,
                CH=ch[5], CC=cc[5], BLOCK_H=_block(hid),
            )  # fmt: skip
        d_h0 = products.d_h0 + keep if ch[5] else products.d_h0
        need = ctx.needs_input_grad
        d_w = _weight_grad(d_raw, h0, hs, w_hh) if need[3] else None
        d_gain = d_ln_hh.sum(0) if ln_hh is not None else None
        d_cw = d_ln_cw.sum(0) if ln_c_w is not None else None
        d_cb = d_ln_cb.sum(0) if ln_c_w is not None else None
        return d_z, d_h0, dc, d_w, d_gain, d_cw, d_cb, None, None


class _TritonGRU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        w_hh: Tensor,
        b_hh: Tensor | None,
        ln_hh: Tensor | None,
        carry: ZoneoutWeight,
    ) -> Tensor:
        keep_for_double_backward(ctx, gru_reference, (pre, h0, w_hh, b_hh, ln_hh, carry))
        steps, batch, g3 = pre.shape
        hid = g3 // 3
        pre, h0 = pre.contiguous(), h0.contiguous()
        rz = pre.new_empty(steps, batch, 2 * hid)
        n, u_n, hs = (pre.new_empty(steps, batch, hid) for _ in range(3))
        stats = pre.new_empty(2, steps, batch)
        m = _carry_args(carry, (steps, batch, hid), pre)
        raw: list[Tensor] | None = [] if ln_hh is not None else None
        products = _Products(w_hh, hs)
        for t, r in products.forward(h0, raw):
            K.gru_forward_step[(batch,)](
                pre, r, _or(ln_hh, pre), _or(b_hh, pre), h0, m[0], rz, n, u_n,
                stats[0], stats[1], hs, t, batch, hid, LN_EPS, *m[1:5],
                LN=ln_hh is not None, BIAS=b_hh is not None, CARRY=m[5],
                BLOCK_H=_block(hid), BLOCK_G=_block(g3),
            )  # fmt: skip
        ctx.raw, ctx.m = raw, m
        ctx.save_for_backward(h0, w_hh, b_hh, ln_hh, rz, n, u_n, hs, stats)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, w_hh, b_hh, ln_hh, rz, n, u_n, hs, stats = ctx.saved_tensors
        m = ctx.m
        steps, batch, hid = hs.shape
        g3 = 3 * hid
        d_hs = d_hs.contiguous()
        d_pre, d_raw = hs.new_empty(steps, batch, g3), hs.new_empty(steps, batch, g3)
        direct = hs.new_zeros(batch, hid)
        want_b = b_hh is not None and ctx.needs_input_grad[3]
        d_b_rows = hs.new_zeros(batch, g3) if want_b else hs
        d_ln_rows = hs.new_zeros(batch, g3) if ln_hh is not None else hs
        products = _Products(w_hh, hs)
        for t, d_rec, r in products.backward(d_raw, ctx.raw):
            K.gru_backward_step[(batch,)](
                d_hs, d_rec, direct, h0, hs, rz, n, u_n, m[0], r, stats[0], stats[1],
                _or(ln_hh, hs), d_pre, d_raw, d_b_rows, d_ln_rows, t, batch, hid, *m[1:5],
                HAS_REC=t < steps - 1, LN=ln_hh is not None, CARRY=m[5], WANT_B=want_b,
                BLOCK_H=_block(hid),
            )  # fmt: skip
        d_h0 = products.d_h0 + direct
        need = ctx.needs_input_grad
        d_w = _weight_grad(d_raw, h0, hs, w_hh) if need[2] else None
        d_b = d_b_rows.sum(0) if want_b else None
        d_ln = d_ln_rows.sum(0) if ln_hh is not None and need[4] else None
        return d_pre, d_h0, d_w, d_b, d_ln, None


class _TritonRNN(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        w_hh: Tensor,
        ln_hh: Tensor | None,
        options: RecurrentOptions,
        carry: ZoneoutWeight,
    ) -> Tensor:
        keep_for_double_backward(ctx, rnn_reference, (pre, h0, w_hh, ln_hh, options, carry))
        act, residual = options.nonlinearity, options.residual
        steps, batch, hid = pre.shape
        pre, h0 = pre.contiguous(), h0.contiguous()
        a, hs = pre.new_empty(steps, batch, hid), pre.new_empty(steps, batch, hid)
        stats = pre.new_empty(2, steps, batch)
        m = _carry_args(carry, (steps, batch, hid), pre)
        raw: list[Tensor] | None = [] if ln_hh is not None else None
        products = _Products(w_hh, hs)
        for t, r in products.forward(h0, raw):
            K.rnn_forward_step[(batch,)](
                pre, r, _or(ln_hh, pre), h0, m[0], a, stats[0], stats[1], hs,
                t, batch, hid, LN_EPS, *m[1:5],
                LN=ln_hh is not None, ACT=ACTS[act], SLOPE=LEAKY_SLOPE, RESIDUAL=residual,
                CARRY=m[5], BLOCK_H=_block(hid),
            )  # fmt: skip
        ctx.raw, ctx.m, ctx.act, ctx.residual = raw, m, act, residual
        ctx.save_for_backward(h0, w_hh, ln_hh, a, hs, stats)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, w_hh, ln_hh, a, hs, stats = ctx.saved_tensors
        m = ctx.m
        steps, batch, hid = hs.shape
        d_hs = d_hs.contiguous()
        d_a = torch.empty_like(hs)
        d_raw = torch.empty_like(hs) if ln_hh is not None else d_a
        direct = hs.new_zeros(batch, hid)
        d_ln_rows = hs.new_zeros(batch, hid) if ln_hh is not None else hs
        products = _Products(w_hh, hs)
        for t, d_rec, r in products.backward(d_raw, ctx.raw):
            K.rnn_backward_step[(batch,)](
                d_hs, d_rec, direct, a, m[0], r, stats[0], stats[1], _or(ln_hh, hs),
                d_a, d_raw, d_ln_rows, t, batch, hid, *m[1:5],
                HAS_REC=t < steps - 1, LN=ln_hh is not None, ACT=ACTS[ctx.act],
                SLOPE=LEAKY_SLOPE, RESIDUAL=ctx.residual, CARRY=m[5], BLOCK_H=_block(hid),
            )  # fmt: skip
        d_h0 = products.d_h0 + direct
        need = ctx.needs_input_grad
        d_w = _weight_grad(d_raw, h0, hs, w_hh) if need[2] else None
        d_ln = d_ln_rows.sum(0) if ln_hh is not None and need[3] else None
        return d_a, d_h0, d_w, d_ln, None, None


class _TritonIndRNN(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        u: Tensor,
        options: RecurrentOptions,
        carry: ZoneoutWeight,
    ) -> Tensor:
        keep_for_double_backward(ctx, indrnn_reference, (pre, h0, u, options, carry))
        act = options.nonlinearity
        steps, batch, hid = pre.shape
        pre, h0, u = pre.contiguous(), h0.contiguous(), u.contiguous()
        hs = torch.empty_like(pre)
        a = hs if carry is None else torch.empty_like(pre)  # activation outputs
        m = _carry_args(carry, (steps, batch, hid), pre)
        grid = (triton.cdiv(batch * hid, _INDRNN_BLOCK),)
        K.indrnn_forward[grid](
            pre, h0, u, m[0], a, hs, steps, batch, hid, *m[1:5],
            ACT=ACTS[act], SLOPE=LEAKY_SLOPE, CARRY=m[5], BLOCK=_INDRNN_BLOCK,
        )  # fmt: skip
        ctx.m, ctx.act = m, act
        ctx.save_for_backward(h0, u, a, hs)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, u, a, hs = ctx.saved_tensors
        m = ctx.m
        steps, batch, hid = hs.shape
        d_a, d_h0, d_u_rows = torch.empty_like(hs), torch.empty_like(h0), torch.empty_like(h0)
        grid = (triton.cdiv(batch * hid, _INDRNN_BLOCK),)
        K.indrnn_backward[grid](
            d_hs.contiguous(), h0, u, m[0], a, hs, d_a, d_h0, d_u_rows, steps, batch, hid,
            *m[1:5], ACT=ACTS[ctx.act], SLOPE=LEAKY_SLOPE, CARRY=m[5], BLOCK=_INDRNN_BLOCK,
        )  # fmt: skip
        d_u = d_u_rows.sum(0) if ctx.needs_input_grad[2] else None
        return d_a, d_h0, d_u, None, None


# The PyTorch loops' contracts (positional arguments) on the Triton kernels.

#: :func:`rnnguard.nn.fused.lstm.lstm_recurrence_prescaled`, input LayerNorm applied, no projection.
lstm_recurrence_prescaled = opaque(_TritonLSTM)
#: :func:`rnnguard.nn.fused.gru.gru_recurrence`.
gru_recurrence = opaque(_TritonGRU)
#: :func:`rnnguard.nn.fused.rnn.rnn_recurrence` (plain residual only).
rnn_recurrence = opaque(_TritonRNN)
#: :func:`rnnguard.nn.fused.indrnn.indrnn_recurrence` (one launch each way).
indrnn_recurrence = opaque(_TritonIndRNN)
