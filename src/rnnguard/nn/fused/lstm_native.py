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

from rnnguard.nn.functional import LN_EPS
from rnnguard.nn.fused import native
from rnnguard.nn.fused._common import (
    RecurrentProduct,
    ZoneoutWeight,
    add_scaled_,
    keep_for_double_backward,
    opaque,
    recurrent_weight_grad,
    steps_of,
    times_keep,
    twice_differentiable,
)
from rnnguard.nn.fused.reference import lstm_reference

__all__ = ["lstm_recurrence_native"]

_P = ctypes.c_void_p


class _Args(ctypes.Structure):
    """Mirror of ``LstmArgs`` in kernels.c (same field order)."""

    _fields_ = [
        ("T", ctypes.c_int64), ("B", ctypes.c_int64), ("H", ctypes.c_int64),
        ("eps", ctypes.c_double), ("threads", ctypes.c_int32),
        ("pre", _P), ("ln_in", _P), ("b_in", _P), ("h0", _P), ("c0", _P),
        ("ln_hh", _P), ("ln_cw", _P), ("ln_cb", _P),
        ("zoneout", native.NativeZoneout), ("zoneout_cell", native.NativeZoneout),
        ("mu_in", _P), ("rs_in", _P),
        ("gates", _P), ("xh", _P), ("rs", _P), ("xc", _P), ("rsc", _P), ("tc", _P),
        ("cs", _P), ("hs", _P), ("tmp", _P), ("mbuf", _P), ("tcbuf", _P),
        ("d_hs", _P), ("d_pre", _P), ("dz_all", _P), ("dz_rows", _P), ("d_raw", _P),
        ("dh", _P), ("dh_keep", _P), ("dc", _P),
        ("d_ln_in", _P), ("d_b_in", _P), ("d_ln_hh", _P), ("d_ln_cw", _P), ("d_ln_cb", _P),
    ]  # fmt: skip


def _contig(v: Tensor | None) -> Tensor | None:
    return None if v is None else v.contiguous()


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
        zoneout: ZoneoutWeight,
        zoneout_cell: ZoneoutWeight,
        w_hr: Tensor | None,
        ln_in: Tensor | None,
        b_in: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        lib = native.library()
        assert lib is not None
        steps, batch, g4 = pre.shape
        hid = g4 // 4
        keep_for_double_backward(
            ctx, lstm_reference,
            (pre, h0, c0, w_hh, ln_hh, ln_c_w, ln_c_b, zoneout, zoneout_cell, w_hr, ln_in, b_in),
        )  # fmt: skip
        pre, h0, c0 = pre.contiguous(), h0.contiguous(), c0.contiguous()
        ln_hh, ln_c_w, ln_c_b = _contig(ln_hh), _contig(ln_c_w), _contig(ln_c_b)
        ln_in, b_in = _contig(ln_in), _contig(b_in)

        def new(*shape: int) -> Tensor:
            return pre.new_empty(shape)

        def new_if(cond: bool, *shape: int) -> Tensor | None:
            return new(*shape) if cond else None

        mu_in, rs_in = (
            new_if(ln_in is not None, steps, batch),
            new_if(ln_in is not None, steps, batch),
        )
        gates = new(steps, batch, g4)
        xh, rs = (
            new_if(ln_hh is not None, steps, batch, g4),
            new_if(ln_hh is not None, steps, batch),
        )
        xc, rsc = (
            new_if(ln_c_w is not None, steps, batch, hid),
            new_if(ln_c_w is not None, steps, batch),
        )
        # With the cell LayerNorm, backward recomputes tanh(LN(c~)) from xc instead of keeping it.
        tc = new_if(ln_c_w is None, steps, batch, hid)
        cs, hs = new(steps, batch, hid), new(steps, batch, hid)
        tmp, mbuf, tcbuf = new(batch, hid), new(batch, hid), new(batch, hid)
        shape = (steps, batch, hid)
        p = native.ptr
        # With a projection the kernel writes h~_t = o * tanh(.) into ``hs`` and the projection
        # and h's zoneout (on the projected width) run here, around it; the kernel then never
        # reads h_{t-1} (only its zoneout does), so h0 may point at any (B, H) buffer.
        proj = w_hr is not None
        args = _Args(
            steps, batch, hid, LN_EPS, native.threads(batch),
            p(pre), p(ln_in), p(b_in), p(mbuf if proj else h0), p(c0), p(ln_hh), p(ln_c_w),
            p(ln_c_b),
            native.NativeZoneout.of(None if proj else zoneout, shape),
            native.NativeZoneout.of(zoneout_cell, shape),
            p(mu_in), p(rs_in), p(gates), p(xh), p(rs), p(xc), p(rsc), p(tc), p(cs), p(hs),
            p(tmp), p(mbuf), p(tcbuf),
        )  # fmt: skip
        ref = ctypes.byref(args)
        step = native.kernel(lib, "rg_lstm_forward_step", pre.dtype)
        prod = RecurrentProduct(w_hh, batch)
        out = hs if w_hr is None else new(steps, batch, w_hr.shape[0])
        hs_l, out_l = hs.unbind(0), out.unbind(0)
        zoneout_l = steps_of(zoneout, steps)
        h = h0
        for t in range(steps):
            r = prod(h)
            step(ref, t, r.data_ptr())
            if w_hr is not None:
                if zoneout is None:
                    torch.mm(hs_l[t], w_hr.t(), out=out_l[t])
                else:
                    h_new = torch.mm(hs_l[t], w_hr.t())
                    torch.lerp(h_new, h, zoneout_l[t], out=out_l[t])  # type: ignore[arg-type]
            h = out_l[t]
        ctx.args = args
        ctx.zoneouts = (zoneout, zoneout_cell)  # keep the tensors behind the pointers alive
        # The kernel's pointers into these stay valid as long as ctx holds them. ``pre`` is read
        # again by backward only under the input LayerNorm (it is then the raw projection).
        ctx.buffers = (mu_in, rs_in, gates, xh, rs, xc, rsc, tc, cs, tmp, mbuf, tcbuf)
        kept_pre = pre if ln_in is not None else None
        ctx.save_for_backward(
            h0, c0, w_hh, ln_hh, ln_c_w, ln_c_b, hs, kept_pre, ln_in, b_in, w_hr, out
        )
        return out, cs[-1].clone()

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor, d_c_last: Tensor) -> tuple[Tensor | None, ...]:
        lib = native.library()
        assert lib is not None
        h0, _c0, w_hh, ln_hh, ln_c_w, _ln_c_b, hs, _pre, ln_in, b_in, w_hr, out = ctx.saved_tensors
        args: _Args = ctx.args
        steps, batch, hid = args.T, args.B, args.H
        g4 = 4 * hid

        def new(*shape: int) -> Tensor:
            return hs.new_empty(shape)

        d_out = d_hs.contiguous()
        # With a projection the kernel sees the gradient of its h~_t (H features), formed here
        # step by step from the projected one; without, the outputs' gradient itself.
        d_hs = d_out if w_hr is None else new(steps, batch, hid)
        d_pre = new(steps, batch, g4)
        # The gate gradients dz feed the product with W_hh and the weight gradient unless the
        # recurrent LayerNorm stands between (then its backward d_raw does); they are d_pre
        # itself unless the input LayerNorm stands between. Only what is read later is kept.
        dz_all = dz_rows = None
        if ln_hh is not None:
            d_raw = new(steps, batch, g4)
            if ln_in is None:
                dz_all = d_pre
            else:
                dz_rows = new(batch, g4)
        else:
            d_raw = dz_all = d_pre if ln_in is None else new(steps, batch, g4)
        dh, keep = hs.new_empty(batch, hid), hs.new_zeros(batch, hid)
        dc = d_c_last.contiguous().clone()
        # The affine gradients accumulate one row per thread (summed below), so no two threads
        # ever add into the same memory.
        nt = args.threads

        def acc(param: Tensor | None, width: int) -> Tensor | None:
            return None if param is None else hs.new_zeros(nt, width)

        d_ln_in, d_b_in, d_ln_hh = acc(ln_in, g4), acc(b_in, g4), acc(ln_hh, g4)
        d_ln_cw, d_ln_cb = acc(ln_c_w, hid), acc(ln_c_w, hid)
        p = native.ptr
        args.d_hs, args.d_pre, args.dz_all, args.dz_rows = p(d_hs), p(d_pre), p(dz_all), p(dz_rows)
        args.d_raw, args.dh, args.dh_keep, args.dc = p(d_raw), p(dh), p(keep), p(dc)
        args.d_ln_in, args.d_b_in, args.d_ln_hh = p(d_ln_in), p(d_b_in), p(d_ln_hh)
        args.d_ln_cw, args.d_ln_cb = p(d_ln_cw), p(d_ln_cb)
        ref = ctypes.byref(args)
        step = native.kernel(lib, "rg_lstm_backward_step", hs.dtype)
        back = RecurrentProduct(w_hh.t(), batch)  # d @ W_hh, packed once
        draw_l = d_raw.unbind(0)
        need = ctx.needs_input_grad
        d_w_hr = None
        if w_hr is None:
            mm = 0
            for t in range(steps - 1, -1, -1):
                step(ref, t, mm)
                d_rec = back(draw_l[t])
                mm = d_rec.data_ptr()
            d_h0 = d_rec + keep if args.zoneout.on else d_rec
        else:
            d_h0, d_w_hr = _backward_projected(ctx, step, ref, back, d_out, d_hs, draw_l, need[9])
        d_w = recurrent_weight_grad(d_raw, h0, out) if need[3] else None

        def total(v: Tensor | None) -> Tensor | None:
            return None if v is None else v.sum(0)

        return (
            d_pre, d_h0, dc, d_w, total(d_ln_hh), total(d_ln_cw), total(d_ln_cb), None, None,
            d_w_hr, total(d_ln_in), total(d_b_in),
        )  # fmt: skip


def _backward_projected(
    ctx: Any,
    step: Any,
    ref: Any,
    back: RecurrentProduct,
    d_out: Tensor,
    d_unprojected: Tensor,
    draw_l: tuple[Tensor, ...],
    want_w_hr: bool,
) -> tuple[Tensor, Tensor | None]:
    """The time loop of backward with a projection; returns (dL/dh0, dL/dW_hr).

    Per step: ``g`` (dL/dh_t, projected width) -> the candidate's share ``(1 - m) g`` -> through
    W_hr into the kernel's dL/dh~_t; the kernel's recurrent input ``mm`` stays zero, since the
    recurrent part of dL/dh_t is already in ``g``.
    """
    w_hr, unprojected = ctx.saved_tensors[10], ctx.saved_tensors[6]
    zoneout = ctx.zoneouts[0]
    steps, batch = d_out.shape[0], d_out.shape[1]
    zoneout_l = steps_of(zoneout, steps)
    d_cand = d_out.new_empty(d_out.shape)  # dL/d(projected candidate) per step, for W_hr
    zeros = d_unprojected.new_zeros(batch, d_unprojected.shape[-1])
    g = d_out[steps - 1]
    for t in range(steps - 1, -1, -1):
        gc = g if zoneout is None else times_keep(g, zoneout_l[t])
        d_cand[t].copy_(gc)
        torch.mm(gc, w_hr, out=d_unprojected[t])
        step(ref, t, zeros.data_ptr())
        nxt = back(draw_l[t])
        if t > 0:
            nxt.add_(d_out[t - 1])
        if zoneout is not None:
            add_scaled_(nxt, zoneout_l[t], g)
        g = nxt
    d_w_hr = None
    if want_w_hr:
        d_w_hr = torch.mm(d_cand.flatten(0, 1).t(), unprojected.flatten(0, 1))
    return g, d_w_hr


#: :func:`rnnguard.nn.fused.lstm.lstm_recurrence_prescaled` on the native kernels: its twelve
#: arguments, positional, with ``w_hr`` before ``ln_in`` and ``in_bias`` (as ``lstm_reference``).
lstm_recurrence_native = opaque(_NativeLSTMRecurrence)
