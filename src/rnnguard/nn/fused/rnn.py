"""Fused Elman RNN recurrence (tanh / relu / leaky_relu, residual, LayerNorm, zoneout)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnguard.nn.functional import HiddenState, State
from rnnguard.nn.fused import amp, dispatch
from rnnguard.nn.fused._common import (
    Direction,
    RecurrentProduct,
    ZoneoutWeight,
    act_,
    act_backward_into,
    add_scaled_,
    grad_into_previous,
    keep_for_double_backward,
    normed_product,
    normed_product_backward,
    recurrent_weight_grad,
    stack_stats,
    steps_of,
    times_keep,
    twice_differentiable,
)
from rnnguard.nn.fused.reference import rnn_reference
from rnnguard.nn.options import RecurrentOptions

__all__ = ["rnn_direction", "rnn_recurrence"]


class _RNNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        w_hh: Tensor,
        ln_hh: Tensor | None,
        options: RecurrentOptions,
        zoneout: ZoneoutWeight,
    ) -> Tensor:
        nonlinearity, residual = options.nonlinearity, options.residual
        scale = options.residual_scale
        steps, batch, hid = pre.shape
        hs = pre.new_empty(steps, batch, hid)
        # Without residual or zoneout the activation output is the state itself: one buffer.
        a = hs if not residual and zoneout is None else pre.new_empty(steps, batch, hid)
        raw = pre.new_empty(steps, batch, hid) if ln_hh is not None else None
        stats: list[tuple[Tensor, Tensor]] = []
        pre_l, a_l, hs_l = pre.unbind(0), a.unbind(0), hs.unbind(0)
        raw_l = raw.unbind(0) if raw is not None else ()
        zoneout_l = steps_of(zoneout, steps)
        prod = RecurrentProduct(w_hh, batch)  # h @ W_hh^T, packed once for all steps

        h = h0
        for t in range(steps):
            if raw is not None:
                y = normed_product(prod, h, raw_l[t], ln_hh, None, stats)
                torch.add(y, pre_l[t], out=a_l[t])
            else:
                prod.add_into(pre_l[t], h, a_l[t])
            act_(a_l[t], nonlinearity)
            if zoneout is None:
                if residual and scale is not None:
                    torch.lerp(h, a_l[t], scale, out=hs_l[t])
                elif residual:
                    torch.add(a_l[t], h, out=hs_l[t])
            else:
                if not residual:
                    new = a_l[t]
                else:
                    new = a_l[t] + h if scale is None else torch.lerp(h, a_l[t], scale)
                torch.lerp(new, h, zoneout_l[t], out=hs_l[t])  # type: ignore[arg-type]
            h = hs_l[t]

        keep_for_double_backward(ctx, rnn_reference, (pre, h0, w_hh, ln_hh, options, zoneout))
        ctx.a, ctx.raw, ctx.options, ctx.zoneout = a, raw, options, zoneout
        ctx.stats = stack_stats(stats)
        ctx.save_for_backward(h0, w_hh, ln_hh, hs)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, w_hh, ln_hh, hs = ctx.saved_tensors
        a, raw, zoneout, options = ctx.a, ctx.raw, ctx.zoneout, ctx.options
        steps = hs.shape[0]
        d_h = d_hs.clone()
        d_a = torch.empty_like(hs)  # gradient of the activation's input
        d_raw = torch.empty_like(hs) if raw is not None else d_a
        dh_l, da_l, draw_l, a_l = d_h.unbind(0), d_a.unbind(0), d_raw.unbind(0), a.unbind(0)
        zoneout_l = steps_of(zoneout, steps)
        d_gains: list[Tensor] = []
        if raw is not None:
            raw_l = raw.unbind(0)
            mu_l, rs_l = ctx.stats[0].unbind(0), ctx.stats[1].unbind(0)
        back = RecurrentProduct(w_hh.t(), h0.shape[0])  # d @ W_hh, packed once
        d_h0 = h0.new_empty(0)

        scale = options.residual_scale if options.residual else None
        for t in range(steps - 1, -1, -1):
            dh = dh_l[t]
            dht = dh if zoneout is None else times_keep(dh, zoneout_l[t])
            if scale is not None:
                dht = dht * scale  # the convex residual weighs the activation by s
            dr = act_backward_into(dht, a_l[t], options.nonlinearity, da_l[t])
            if raw is not None:
                dr = normed_product_backward(
                    dr, raw_l[t], mu_l[t], rs_l[t], ln_hh, draw_l[t], d_gains
                )
            target = d_h0 = grad_into_previous(back, dr, dh_l, t)
            # Direct path to h_{t-1}: m + (1 - m) through the residual, i.e. 1; else m. The
            # convex residual takes off what went to the activation: m + (1 - m)(1 - s).
            if options.residual:
                target.add_(dh)
                if scale is not None:
                    target.sub_(dht)
            elif zoneout is not None:
                add_scaled_(target, zoneout_l[t], dh)  # type: ignore[arg-type]

        need = ctx.needs_input_grad
        d_w = recurrent_weight_grad(d_raw, h0, hs) if need[2] else None
        d_ln = torch.stack(d_gains).sum(0) if d_gains and need[3] else None
        return d_a, d_h0, d_w, d_ln, None, None


def rnn_recurrence(
    pre: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None,
    options: RecurrentOptions,
    zoneout: ZoneoutWeight = None,
) -> Tensor:
    """Run ``h~_t = [h_{t-1} +] act(pre_t + LN(W_hh h_{t-1}))`` over ``pre`` (T, B, H) -> every h_t.

    ``pre`` holds the input side including both biases; ``options`` gives the nonlinearity and
    ``residual``; ``zoneout`` is a zoneout weight (see ``_common``).
    """
    w_hh = amp.half_weight(w_hh)  # in a mixed-precision run: the products' dtype
    # The Triton kernel knows only the plain residual: a convex one takes this loop, even forced.
    triton = dispatch.triton_for(pre) if options.residual_scale is None else None
    if triton is not None:
        return triton.rnn_recurrence(pre, h0, w_hh, ln_hh, options, zoneout)
    return _RNNRecurrence.apply(pre, h0, w_hh, ln_hh, options, zoneout)


def rnn_direction(d: Direction) -> tuple[Tensor, State]:
    """One direction of an RNN layer (both biases join the input side); h_t in loop order."""
    with d.input_side(fold_bias_hh=True) as (pre, _, _):
        hs = rnn_recurrence(pre, d.state0[0], d.w_hh, d.params.ln_hh, d.options, d.zoneout)
    return hs, HiddenState(hs[-1])
