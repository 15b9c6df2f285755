"""Fused IndRNN recurrence: ``h~_t = act(pre_t + u * h_{t-1})`` with a per-unit vector ``u``.

The recurrence is element-wise, so a step costs two element-wise ops forward and two backward;
the input projection (the only matrix multiply) is hoisted out by the caller and ``u``'s gradient
is one reduction over all steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnguard.nn.fused import native
from rnnguard.nn.fused._common import (
    Carry,
    act_,
    act_backward_into,
    add_scaled_,
    steps_of,
    times_keep,
)
from rnnguard.nn.fused.indrnn_native import NATIVE_ACTS, indrnn_recurrence_native

__all__ = ["indrnn_recurrence"]


class _IndRNNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, pre: Tensor, h0: Tensor, u: Tensor, act: str, carry: Carry
    ) -> Tensor:
        steps = pre.shape[0]
        hs = torch.empty_like(pre)
        a = hs if carry is None else torch.empty_like(pre)  # activation outputs
        pre_l, a_l, hs_l = pre.unbind(0), a.unbind(0), hs.unbind(0)
        m_l = steps_of(carry, steps)
        h = h0
        for t in range(steps):
            act_(torch.addcmul(pre_l[t], u, h, out=a_l[t]), act)
            if carry is not None:
                torch.lerp(a_l[t], h, m_l[t], out=hs_l[t])  # type: ignore[arg-type]
            h = hs_l[t]
        ctx.a, ctx.act, ctx.carry = a, act, carry
        ctx.save_for_backward(h0, u, hs)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, u, hs = ctx.saved_tensors
        carry, act = ctx.carry, ctx.act
        steps = hs.shape[0]
        d_h = d_hs.clone()
        d_a = torch.empty_like(hs)
        dh_l, da_l, a_l = d_h.unbind(0), d_a.unbind(0), ctx.a.unbind(0)
        m_l = steps_of(carry, steps)
        d_h0 = h0.new_empty(0)
        # u's gradient sum_t da_t * h_{t-1}, accumulated while both are in cache.
        want_u = ctx.needs_input_grad[2]
        d_u_rows = torch.zeros_like(h0) if want_u else None
        hprev_l = (h0, *hs[:-1].unbind(0))
        for t in range(steps - 1, -1, -1):
            dh = dh_l[t]
            dht = dh if carry is None else times_keep(dh, m_l[t])
            da = act_backward_into(dht, a_l[t], act, da_l[t])
            if d_u_rows is not None:
                d_u_rows.addcmul_(da, hprev_l[t])
            if t > 0:
                target = dh_l[t - 1]
                target.addcmul_(da, u)
            else:
                target = d_h0 = da * u
            if carry is not None:
                add_scaled_(target, m_l[t], dh)  # type: ignore[arg-type]
        d_u = d_u_rows.sum(0) if d_u_rows is not None else None
        return d_a, d_h0, d_u, None, None


def indrnn_recurrence(
    pre: Tensor, h0: Tensor, u: Tensor, nonlinearity: str = "relu", carry: Carry = None
) -> Tensor:
    """Run the IndRNN recurrence over ``pre`` = LN(W_ih x) + b (T, B, H) -> h_t for every t.

    On CPU (float32, float64) the native kernels run the loop when available (:mod:`rnnguard.nn.fused.native`).
    """
    if pre.shape[0] > 0 and nonlinearity in NATIVE_ACTS and native.usable(pre, h0, u, carry):
        return indrnn_recurrence_native(pre, h0, u, nonlinearity, carry)
    return _IndRNNRecurrence.apply(pre, h0, u, nonlinearity, carry)  # type: ignore[no-any-return]
