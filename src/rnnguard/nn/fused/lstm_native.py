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
from rnnguard.nn.fused._common import RecurrentProduct, ZoneoutWeight, recurrent_weight_grad

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
        ln_in: Tensor | None,
        b_in: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        lib = native.library()
        assert lib is not None
        steps, batch, g4 = pre.shape
        hid = g4 // 4
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
        args = _Args(
            steps, batch, hid, LN_EPS, native.threads(batch),
            p(pre), p(ln_in), p(b_in), p(h0), p(c0), p(ln_hh), p(ln_c_w), p(ln_c_b),
            native.NativeZoneout.of(zoneout, shape), native.NativeZoneout.of(zoneout_cell, shape),
            p(mu_in), p(rs_in), p(gates), p(xh), p(rs), p(xc), p(rsc), p(tc), p(cs), p(hs),
            p(tmp), p(mbuf), p(tcbuf),
        )  # fmt: skip
        ref = ctypes.byref(args)
        step = native.kernel(lib, "rg_lstm_forward_step", pre.dtype)
        prod = RecurrentProduct(w_hh, batch)
        hs_l = hs.unbind(0)
        h = h0
        for t in range(steps):
            r = prod(h)
            step(ref, t, r.data_ptr())
            h = hs_l[t]
        ctx.args = args
        ctx.zoneouts = (zoneout, zoneout_cell)  # keep the tensors behind the pointers alive
        # The kernel's pointers into these stay valid as long as ctx holds them. ``pre`` is read
        # again by backward only under the input LayerNorm (it is then the raw projection).
        ctx.buffers = (mu_in, rs_in, gates, xh, rs, xc, rsc, tc, cs, tmp, mbuf, tcbuf)
        kept_pre = pre if ln_in is not None else None
        ctx.save_for_backward(h0, c0, w_hh, ln_hh, ln_c_w, ln_c_b, hs, kept_pre, ln_in, b_in)
        return hs, cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_hs: Tensor, d_c_last: Tensor) -> tuple[Tensor | None, ...]:
        lib = native.library()
        assert lib is not None
        h0, _c0, w_hh, ln_hh, ln_c_w, _ln_c_b, hs, _pre, ln_in, b_in = ctx.saved_tensors
        args: _Args = ctx.args
        steps, batch, hid = args.T, args.B, args.H
        g4 = 4 * hid

        def new(*shape: int) -> Tensor:
            return hs.new_empty(shape)

        d_hs = d_hs.contiguous()
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
        mm = 0
        for t in range(steps - 1, -1, -1):
            step(ref, t, mm)
            d_rec = back(draw_l[t])
            mm = d_rec.data_ptr()
        d_h0 = d_rec + keep if args.zoneout.on else d_rec
        need = ctx.needs_input_grad
        d_w = recurrent_weight_grad(d_raw, h0, hs) if need[3] else None

        def total(v: Tensor | None) -> Tensor | None:
            return None if v is None else v.sum(0)

        return (
            d_pre, d_h0, dc, d_w, total(d_ln_hh), total(d_ln_cw), total(d_ln_cb), None, None,
            total(d_ln_in), total(d_b_in),
        )  # fmt: skip


# ctypes calls cannot be traced: under torch.compile this runs eagerly, as one opaque step.
@torch.compiler.disable
def lstm_recurrence_native(
    pre: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    zoneout: ZoneoutWeight,
    zoneout_cell: ZoneoutWeight,
    ln_in: Tensor | None = None,
    in_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`rnnguard.nn.fused.lstm.lstm_recurrence_prescaled` on the native kernels."""
    return _NativeLSTMRecurrence.apply(  # type: ignore[no-any-return]
        pre, h0, c0, w_hh, ln_hh, ln_c_weight, ln_c_bias, zoneout, zoneout_cell, ln_in, in_bias
    )
