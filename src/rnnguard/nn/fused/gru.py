"""Fused GRU recurrence (optional LayerNorm, zoneout) with a hand-written backward.

A GRU has no cell state: every gradient of step t is ``dh_t`` times factors known after the
forward pass. Backward computes them step by step on (B, H) slices that stay in cache, runs the
LayerNorm backward (when on) and one (B, 3H) x (3H, H) matrix multiply per step, and forms the
recurrent weight gradient in one matrix multiply over all steps after the loop.
"""

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
from rnnguard.nn.fused.reference import gru_reference

__all__ = ["gru_direction", "gru_recurrence"]

_tanh_bwd_into = torch.ops.aten.tanh_backward.grad_input


class _GRURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre: Tensor,
        h0: Tensor,
        w_hh: Tensor,
        b_hh: Tensor | None,
        ln_hh: Tensor | None,
        zoneout: ZoneoutWeight,
    ) -> Tensor:
        steps, batch, g3 = pre.shape
        hid = g3 // 3
        ln = ln_hh is not None
        hs = pre.new_empty(steps, batch, hid)
        rz = pre.new_empty(steps, batch, 2 * hid)  # activated r, z
        n = pre.new_empty(steps, batch, hid)
        raw = pre.new_empty(steps, batch, g3) if ln else None  # W_hh h before LayerNorm
        u_n = pre.new_empty(steps, batch, hid)  # n-part of the recurrent projection (LN, bias)
        stats: list[tuple[Tensor, Tensor]] = []

        pre_rz = pre[:, :, : 2 * hid].unbind(0)
        pre_n = pre[:, :, 2 * hid :].unbind(0)
        rz_l, n_l, hs_l = rz.unbind(0), n.unbind(0), hs.unbind(0)
        r_l, z_l = rz[:, :, :hid].unbind(0), rz[:, :, hid:].unbind(0)
        raw_l = raw.unbind(0) if raw is not None else ()
        zoneout_l = steps_of(zoneout, steps)
        prod = RecurrentProduct(w_hh, batch)  # h @ W_hh^T, packed once for all steps

        h = h0
        for t in range(steps):
            if raw is not None:
                u = normed_product(prod, h, raw_l[t], ln_hh, b_hh, stats)
            elif b_hh is not None:
                u = prod(h).add_(b_hh)
            else:
                u = prod(h)
            torch.add(pre_rz[t], u[:, : 2 * hid], out=rz_l[t]).sigmoid_()
            un = u[:, 2 * hid :]
            u_n[t].copy_(un)  # keep only this part of u alive for backward
            torch.addcmul(pre_n[t], r_l[t], un, out=n_l[t]).tanh_()
            if zoneout is None:
                torch.lerp(n_l[t], h, z_l[t], out=hs_l[t])  # (1 - z) n + z h
            else:
                torch.lerp(torch.lerp(n_l[t], h, z_l[t]), h, zoneout_l[t], out=hs_l[t])  # type: ignore[arg-type]
            h = hs_l[t]

        keep_for_double_backward(ctx, gru_reference, (pre, h0, w_hh, b_hh, ln_hh, zoneout))
        ctx.rz, ctx.n, ctx.raw, ctx.u_n, ctx.zoneout = rz, n, raw, u_n, zoneout
        ctx.stats = stack_stats(stats)
        ctx.save_for_backward(h0, w_hh, ln_hh, hs)
        return hs

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor) -> tuple[Tensor | None, ...]:
        h0, w_hh, ln_hh, hs = ctx.saved_tensors
        rz, n, raw, u_n, zoneout = ctx.rz, ctx.n, ctx.raw, ctx.u_n, ctx.zoneout
        steps, batch, hid = hs.shape
        g3 = 3 * hid

        d_h = d_hs.clone()  # accumulates the gradient of every h_t
        d_pre = hs.new_empty(steps, batch, g3)  # gradient of a = LN(W_ih x) + b_ih
        # Gradient of u = LN(W_hh h) + b_hh: without LayerNorm it is also W_hh h's, kept for the
        # weight gradient; with LayerNorm one step's worth suffices (b_hh's gradient is summed).
        d_raw = hs.new_empty(steps, batch, g3)
        d_u = d_raw if raw is None else hs.new_empty(1, batch, g3).expand(steps, batch, g3)
        d_b_rows = torch.zeros_like(d_u[0]) if raw is not None and ctx.needs_input_grad[3] else None
        d_gains: list[Tensor] = []

        # Per-step views made once; the derivative factors are computed inside the loop on
        # (B, H) slices that stay in cache (cheaper than (T, B, H) temporaries for all steps).
        dh_l, dp_l, du_l, draw_l = d_h.unbind(0), d_pre.unbind(0), d_u.unbind(0), d_raw.unbind(0)
        dpr_l, dpz_l, dpn_l = (d_pre[:, :, k * hid : (k + 1) * hid].unbind(0) for k in range(3))
        dun_l = d_u[:, :, 2 * hid :].unbind(0)
        r_l, z_l, n_l, un_l = (
            rz[:, :, :hid].unbind(0),
            rz[:, :, hid:].unbind(0),
            n.unbind(0),
            u_n.unbind(0),
        )
        hprev_l = (h0, *hs[:-1].unbind(0))
        zoneout_l = steps_of(zoneout, steps)
        if raw is not None:
            raw_l = raw.unbind(0)
            mu_l, rs_l = ctx.stats[0].unbind(0), ctx.stats[1].unbind(0)
        back = RecurrentProduct(w_hh.t(), h0.shape[0])  # d @ W_hh, packed once
        d_h0 = h0.new_empty(0)

        for t in range(steps - 1, -1, -1):
            dh = dh_l[t]
            r, z, nt = r_l[t], z_l[t], n_l[t]
            dht = (
                dh if zoneout is None else times_keep(dh, zoneout_l[t])
            )  # gradient of the candidate h~_t
            # h~ = (1 - z) n + z h_{t-1}
            dz_h = dht * z  # direct path to h_{t-1}
            # d(a_n + r u_n) = dn (1 - n^2) with dn = dh~ (1 - z)
            dn = _tanh_bwd_into(dht - dz_h, nt, grad_input=dpn_l[t])
            # d(a_z + u_z) = dh~ (h_{t-1} - n) z (1 - z)
            torch.mul(dht, hprev_l[t] - nt, out=dpz_l[t]).mul_(torch.addcmul(z, z, z, value=-1.0))
            # d(a_r + u_r) = dn u_n r (1 - r)
            torch.mul(dn, un_l[t], out=dpr_l[t]).mul_(torch.addcmul(r, r, r, value=-1.0))
            du = du_l[t]
            du[:, : 2 * hid].copy_(dp_l[t][:, : 2 * hid])
            torch.mul(dn, r, out=dun_l[t])
            if raw is not None:
                if d_b_rows is not None:
                    d_b_rows.add_(du)
                dr = normed_product_backward(
                    du, raw_l[t], mu_l[t], rs_l[t], ln_hh, draw_l[t], d_gains
                )
            else:
                dr = du
            target = d_h0 = grad_into_previous(back, dr, dh_l, t)
            target.add_(dz_h)
            if zoneout is not None:
                add_scaled_(target, zoneout_l[t], dh)  # type: ignore[arg-type]

        need = ctx.needs_input_grad
        d_w = recurrent_weight_grad(d_raw, h0, hs) if need[2] else None
        if not need[3]:
            d_b = None
        elif d_b_rows is not None:
            d_b = d_b_rows.sum(0)
        else:
            d_b = d_u.sum((0, 1))
        d_ln = torch.stack(d_gains).sum(0) if d_gains and need[4] else None
        return d_pre, d_h0, d_w, d_b, d_ln, None


def gru_recurrence(
    pre: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None = None,
    ln_hh: Tensor | None = None,
    zoneout: ZoneoutWeight = None,
) -> Tensor:
    """Run the GRU recurrence over ``pre`` = LN(W_ih x) + b_ih (T, B, 3H) -> h_t for every t.

    ``b_hh`` stays inside the loop because the reset gate multiplies its n-part; ``ln_hh`` (3H,)
    switches on the LayerNorm of the recurrent projection; ``zoneout`` is a zoneout weight.
    """
    w_hh = amp.half_weight(w_hh)  # in a mixed-precision run: the products' dtype
    triton = dispatch.triton_for(pre)
    if triton is not None:
        return triton.gru_recurrence(pre, h0, w_hh, b_hh, ln_hh, zoneout)
    return _GRURecurrence.apply(pre, h0, w_hh, b_hh, ln_hh, zoneout)


def gru_direction(d: Direction) -> tuple[Tensor, State]:
    """One direction of a GRU layer (``b_hh`` stays in the loop); h_t in loop order."""
    p = d.params
    with d.input_side(fold_bias_hh=False) as (pre, _, _):
        hs = gru_recurrence(pre, d.state0[0], d.w_hh, p.bias_hh, p.ln_hh, d.zoneout)
    return hs, HiddenState(hs[-1])
