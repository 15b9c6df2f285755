"""Fused IndRNN recurrence: ``h~_t = act(pre_t + u * h_{t-1})`` with a per-unit vector ``u``.

The recurrence is element-wise, so a step costs two element-wise ops forward and two backward;
the input projection (the only matrix multiply) is hoisted out by the caller and ``u``'s gradient
is one reduction over all steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnguard.nn.functional import HiddenState, State
from rnnguard.nn.fused import dispatch, native
from rnnguard.nn.fused._common import (
    Direction,
    ZoneoutWeight,
    act_,
    act_backward_into,
    add_scaled_,
    keep_for_double_backward,
    steps_of,
    times_keep,
    twice_differentiable,
)
from rnnguard.nn.fused.indrnn_native import NATIVE_ACTS, indrnn_recurrence_native
from rnnguard.nn.fused.reference import indrnn_reference
from rnnguard.nn.options import RecurrentOptions

__all__ = ["indrnn_direction", "indrnn_recurrence"]


class _IndRNNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        u: Tensor,
        options: RecurrentOptions,
        zoneout: ZoneoutWeight,
    ) -> Tensor:
        steps = pre.shape[0]
        hs = torch.empty_like(pre)
        a = hs if zoneout is None else torch.empty_like(pre)  # activation outputs
        pre_l, a_l, hs_l = pre.unbind(0), a.unbind(0), hs.unbind(0)
        zoneout_l = steps_of(zoneout, steps)
        h = h0
        for t in range(steps):
            act_(torch.addcmul(pre_l[t], u, h, out=a_l[t]), options.nonlinearity)
            if zoneout is not None:
                torch.lerp(a_l[t], h, zoneout_l[t], out=hs_l[t])  # type: ignore[arg-type]
            h = hs_l[t]
        keep_for_double_backward(ctx, indrnn_reference, (pre, h0, u, options, zoneout))
        ctx.a, ctx.options, ctx.zoneout = a, options, zoneout
        ctx.save_for_backward(h0, u, hs)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, u, hs = ctx.saved_tensors
        zoneout, nonlinearity = ctx.zoneout, ctx.options.nonlinearity
        steps = hs.shape[0]
        d_h = d_hs.clone()
        d_a = torch.empty_like(hs)
        dh_l, da_l, a_l = d_h.unbind(0), d_a.unbind(0), ctx.a.unbind(0)
        zoneout_l = steps_of(zoneout, steps)
        d_h0 = h0.new_empty(0)
        # u's gradient sum_t da_t * h_{t-1}, accumulated while both are in cache.
        want_u = ctx.needs_input_grad[2]
        d_u_rows = torch.zeros_like(h0) if want_u else None
        hprev_l = (h0, *hs[:-1].unbind(0))
        for t in range(steps - 1, -1, -1):
            dh = dh_l[t]
            dht = dh if zoneout is None else times_keep(dh, zoneout_l[t])
            da = act_backward_into(dht, a_l[t], nonlinearity, da_l[t])
            if d_u_rows is not None:
                d_u_rows.addcmul_(da, hprev_l[t])
            if t > 0:
                target = dh_l[t - 1]
                target.addcmul_(da, u)
            else:
                target = d_h0 = da * u
            if zoneout is not None:
                add_scaled_(target, zoneout_l[t], dh)  # type: ignore[arg-type]
        d_u = d_u_rows.sum(0) if d_u_rows is not None else None
        return d_a, d_h0, d_u, None, None


def indrnn_recurrence(
    pre: Tensor, h0: Tensor, u: Tensor, options: RecurrentOptions, zoneout: ZoneoutWeight = None
) -> Tensor:
    """Run the IndRNN recurrence over ``pre`` = LN(W_ih x) + b (T, B, H) -> h_t for every t.

    ``options`` gives the nonlinearity; ``zoneout`` is a zoneout weight. On CPU (float32,
    float64) the native kernels run the loop when available (:mod:`rnnguard.nn.fused.native`).
    """
    triton = dispatch.triton_for(pre)
    if triton is not None:
        return triton.indrnn_recurrence(pre, h0, u, options, zoneout)
    if (
        pre.shape[0] > 0
        and options.nonlinearity in NATIVE_ACTS
        and native.usable(pre, h0, u, zoneout)
    ):
        return indrnn_recurrence_native(pre, h0, u, options, zoneout)
    return _IndRNNRecurrence.apply(pre, h0, u, options, zoneout)


def indrnn_direction(d: Direction) -> tuple[Tensor, State]:
    """One direction of an IndRNN layer (``w_hh`` is the per-unit vector ``u``); h_t in loop order."""
    with d.input_side(fold_bias_hh=False) as (pre, _, _):
        hs = indrnn_recurrence(pre, d.state0[0], d.w_hh, d.options, d.zoneout)
    return hs, HiddenState(hs[-1])
