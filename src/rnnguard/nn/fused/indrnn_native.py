"""The fused IndRNN recurrence on the native kernels: the whole time loop in one C call.

Same contract and maths as ``_IndRNNRecurrence`` in ``indrnn.py``, which is the fallback and the
oracle in the tests. The recurrence is element-wise, so forward and backward are each a single
pass over (T, B, H) with no Python work per step; ``u``'s gradient accumulates in the same pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnguard.nn.functional import LEAKY_SLOPE
from rnnguard.nn.fused import native
from rnnguard.nn.fused._common import (
    ZoneoutWeight,
    keep_for_double_backward,
    opaque,
    twice_differentiable,
)
from rnnguard.nn.fused.reference import indrnn_reference
from rnnguard.nn.options import RecurrentOptions

__all__ = ["NATIVE_ACTS", "indrnn_recurrence_native"]

NATIVE_ACTS = {"tanh": 0, "relu": 1, "leaky_relu": 2}


class _NativeIndRNNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        u: Tensor,
        options: RecurrentOptions,
        zoneout: ZoneoutWeight,
    ) -> Tensor:
        lib = native.library()
        assert lib is not None
        keep_for_double_backward(ctx, indrnn_reference, (pre, h0, u, options, zoneout))
        pre, h0, u = pre.contiguous(), h0.contiguous(), u.contiguous()
        steps, batch, hid = pre.shape
        hs = pre.new_empty(steps, batch, hid)
        acts = hs if zoneout is None else pre.new_empty(steps, batch, hid)  # activations
        zo = native.NativeZoneout.of(zoneout, (steps, batch, hid))
        nt = native.threads(batch)
        mbuf = h0.new_empty(batch, hid)
        native.kernel(lib, "rg_indrnn_forward", pre.dtype)(
            steps, batch, hid, pre.data_ptr(), h0.data_ptr(), u.data_ptr(),
            NATIVE_ACTS[options.nonlinearity], LEAKY_SLOPE, zo, acts.data_ptr(), hs.data_ptr(),
            mbuf.data_ptr(), nt,
        )  # fmt: skip
        ctx.options, ctx.zo = options, zo
        ctx.zoneout = zoneout  # keeps the tensor behind zo's pointer alive until backward
        ctx.save_for_backward(h0, u, acts, hs)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        lib = native.library()
        assert lib is not None
        h0, u, acts, hs = ctx.saved_tensors
        steps, batch, hid = hs.shape
        d_hs = d_hs.contiguous()
        d_a, d_h0 = torch.empty_like(hs), torch.empty_like(h0)
        nt = native.threads(batch)
        d_u = u.new_zeros(nt, hid)  # one row per thread, summed below
        scratch, mbuf = torch.empty_like(h0), torch.empty_like(h0)
        native.kernel(lib, "rg_indrnn_backward", hs.dtype)(
            steps, batch, hid, d_hs.data_ptr(), acts.data_ptr(), hs.data_ptr(), h0.data_ptr(),
            u.data_ptr(), NATIVE_ACTS[ctx.options.nonlinearity], LEAKY_SLOPE, ctx.zo,
            d_a.data_ptr(), d_h0.data_ptr(), d_u.data_ptr(), scratch.data_ptr(), mbuf.data_ptr(), nt,
        )  # fmt: skip
        return d_a, d_h0, (d_u.sum(0) if ctx.needs_input_grad[2] else None), None, None


#: :func:`rnnguard.nn.fused.indrnn.indrnn_recurrence` on the native kernels.
indrnn_recurrence_native = opaque(_NativeIndRNNRecurrence)
