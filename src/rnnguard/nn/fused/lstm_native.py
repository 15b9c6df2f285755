"""The fused LSTM recurrence on the native kernels: one C call per step around torch's product.

Same contract and maths as ``_LSTMRecurrence`` in ``lstm.py`` (prescaled parameters, carries),
which is the fallback and the oracle in the tests. Per step the loop here makes two calls: the
product with ``W_hh`` (torch, oneDNN-packed) and one kernel that does every element-wise part of
the step, LayerNorms included, in one pass per row. All (T, B, .) results live in buffers
allocated once per call; the kernel writes them in place.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnguard.nn.functional import LN_EPS
from rnnguard.nn.fused import native
from rnnguard.nn.fused._common import Carry, RecurrentProduct, recurrent_weight_grad

__all__ = ["lstm_recurrence_native"]

_P = ctypes.c_void_p


class _Args(ctypes.Structure):
    """Mirror of ``LstmArgs`` in kernels.c (same field order)."""

    _fields_ = [
        ("T", ctypes.c_int64), ("B", ctypes.c_int64), ("H", ctypes.c_int64),
        ("eps", ctypes.c_float), ("threads", ctypes.c_int32),
        ("pre", _P), ("h0", _P), ("c0", _P), ("ln_hh", _P), ("ln_cw", _P), ("ln_cb", _P),
        ("ch", native.NativeCarry), ("cc", native.NativeCarry),
        ("gates", _P), ("xh", _P), ("rs", _P), ("xc", _P), ("rsc", _P), ("tc", _P),
        ("cs", _P), ("hs", _P), ("tmp", _P), ("mbuf", _P),
        ("d_hs", _P), ("d_z", _P), ("d_raw", _P), ("dh", _P), ("dh_keep", _P), ("dc", _P),
        ("d_ln_hh", _P), ("d_ln_cw", _P), ("d_ln_cb", _P),
    ]  # fmt: skip


class _NativeLSTMRecurrence(torch.autograd.Function):
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
        carry_h: Carry,
        carry_c: Carry,
    ) -> tuple[Tensor, Tensor]:
        lib = native.library()
        assert lib is not None
        steps, batch, g4 = pre.shape
        hid = g4 // 4
        pre, h0, c0 = pre.contiguous(), h0.contiguous(), c0.contiguous()
        ln_hh = None if ln_hh is None else ln_hh.contiguous()
        ln_c_w = None if ln_c_w is None else ln_c_w.contiguous()
        ln_c_b = None if ln_c_b is None else ln_c_b.contiguous()

        def new(*shape: int) -> Tensor:
            return native.empty(lib, pre, *shape)

        gates = new(steps, batch, g4)
        xh = new(steps, batch, g4) if ln_hh is not None else None
        rs = new(steps, batch) if ln_hh is not None else None
        xc = new(steps, batch, hid) if ln_c_w is not None else None
        rsc = new(steps, batch) if ln_c_w is not None else None
        tc, cs, hs = new(steps, batch, hid), new(steps, batch, hid), new(steps, batch, hid)
        tmp, mbuf = new(batch, hid), new(batch, hid)
        shape = (steps, batch, hid)
        p = native.ptr
        args = _Args(
            steps, batch, hid, LN_EPS, native.threads(batch), p(pre), p(h0), p(c0), p(ln_hh), p(ln_c_w), p(ln_c_b),
            native.NativeCarry.of(carry_h, shape), native.NativeCarry.of(carry_c, shape),
            p(gates), p(xh), p(rs), p(xc), p(rsc), p(tc), p(cs), p(hs), p(tmp), p(mbuf),
        )  # fmt: skip
        step = lib.rg_lstm_forward_step
        prod = RecurrentProduct(w_hh, batch)
        ref = ctypes.byref(args)
        hs_l = hs.unbind(0)
        h = h0
        for t in range(steps):
            r = prod(h)
            step(ref, t, r.data_ptr())
            h = hs_l[t]
        ctx.args, ctx.carries = args, (carry_h, carry_c)
        ctx.save_for_backward(pre, h0, c0, w_hh, ln_hh, ln_c_w, ln_c_b, gates, xh, rs, xc, rsc, tc, cs, hs, tmp, mbuf)  # fmt: skip
        return hs, cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_hs: Tensor, d_c_last: Tensor) -> tuple[Tensor | None, ...]:
        lib = native.library()
        assert lib is not None
        saved = ctx.saved_tensors
        h0, w_hh, ln_hh, ln_c_w, hs = saved[1], saved[3], saved[4], saved[5], saved[14]
        args: _Args = ctx.args
        steps, batch, hid = args.T, args.B, args.H
        d_hs = d_hs.contiguous()
        d_z = native.empty(lib, hs, steps, batch, 4 * hid)
        d_raw = native.empty(lib, hs, steps, batch, 4 * hid) if ln_hh is not None else d_z
        dh, keep = hs.new_empty(batch, hid), hs.new_zeros(batch, hid)
        dc = d_c_last.contiguous().clone()
        # The affine gradients accumulate one row per thread (summed below), so no two threads
        # ever add into the same memory.
        nt = args.threads
        d_ln_hh = hs.new_zeros(nt, 4 * hid) if ln_hh is not None else None
        d_ln_cw = hs.new_zeros(nt, hid) if ln_c_w is not None else None
        d_ln_cb = hs.new_zeros(nt, hid) if ln_c_w is not None else None
        p = native.ptr
        args.d_hs, args.d_z, args.d_raw = p(d_hs), p(d_z), p(d_raw)
        args.dh, args.dh_keep, args.dc = p(dh), p(keep), p(dc)
        args.d_ln_hh, args.d_ln_cw, args.d_ln_cb = p(d_ln_hh), p(d_ln_cw), p(d_ln_cb)
        step = lib.rg_lstm_backward_step
        back = RecurrentProduct(w_hh.t(), batch)  # d @ W_hh, packed once
        ref = ctypes.byref(args)
        draw_l = d_raw.unbind(0)
        mm = 0
        for t in range(steps - 1, -1, -1):
            step(ref, t, mm)
            d_rec = back(draw_l[t])
            mm = d_rec.data_ptr()
        d_h0 = d_rec + keep if args.ch.on else d_rec
        need = ctx.needs_input_grad
        d_w = recurrent_weight_grad(d_raw, h0, hs) if need[3] else None
        return (
            d_z, d_h0, dc, d_w,
            None if d_ln_hh is None else d_ln_hh.sum(0),
            None if d_ln_cw is None else d_ln_cw.sum(0),
            None if d_ln_cb is None else d_ln_cb.sum(0),
            None, None,
        )  # fmt: skip


def lstm_recurrence_native(
    pre: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    carry_h: Carry,
    carry_c: Carry,
) -> tuple[Tensor, Tensor]:
    """:func:`rnnguard.nn.fused.lstm.lstm_recurrence_prescaled` on the native kernels."""
    return _NativeLSTMRecurrence.apply(  # type: ignore[no-any-return]
        pre, h0, c0, w_hh, ln_hh, ln_c_weight, ln_c_bias, carry_h, carry_c
    )
