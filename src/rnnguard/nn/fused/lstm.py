"""Fused LSTM recurrence (optional LayerNorm, zoneout, carry) with a hand-written backward.

The caller hoists the input side, ``pre = LN(W_ih x) + b_ih + b_hh`` for all steps, out of the
loop; DropConnect is folded into ``w_hh`` by the caller. Forward runs the time loop with no
autograd graph and writes every step into preallocated (T, B, .) buffers. Backward walks the steps
in reverse doing only what is truly sequential (one (B, 4H) x (4H, H) matrix multiply and a few
element-wise ops per step); the gate-derivative factors are computed for all steps at once before
the loop, and the recurrent weight and LayerNorm gain gradients after it, each in one operation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnguard.nn.fused._common import (
    Carry,
    add_scaled_,
    keep_of,
    ln_backward,
    ln_forward,
    ln_weight_grad,
    recurrent_weight_grad,
    shifted,
    steps_of,
)

__all__ = ["lstm_recurrence"]


class _LSTMRecurrence(torch.autograd.Function):
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
        steps, batch, g4 = pre.shape
        hid = g4 // 4
        gates = pre.new_empty(steps, batch, g4)  # activated i, f, g, o
        hs = pre.new_empty(steps, batch, hid)
        cs = pre.new_empty(steps, batch, hid)  # c_t after zoneout
        ct = pre.new_empty(steps, batch, hid) if carry_c is not None else cs  # c~_t
        tc = pre.new_empty(steps, batch, hid)  # tanh(LN(c~_t))
        raw = pre.new_empty(steps, batch, g4) if ln_hh is not None else None
        stats_hh: list[tuple[Tensor, Tensor]] = []
        stats_c: list[tuple[Tensor, Tensor]] = []

        pre_l, z_l = pre.unbind(0), gates.unbind(0)
        sig_if = gates[:, :, : 2 * hid].unbind(0)
        tanh_g = gates[:, :, 2 * hid : 3 * hid].unbind(0)
        sig_o = gates[:, :, 3 * hid :].unbind(0)
        gv = gates.view(steps, batch, 4, hid)
        i_l, f_l, g_l, o_l = (gv[:, :, k].unbind(0) for k in range(4))
        hs_l, cs_l, ct_l, tc_l = hs.unbind(0), cs.unbind(0), ct.unbind(0), tc.unbind(0)
        raw_l = raw.unbind(0) if raw is not None else ()
        mh_l, mc_l = steps_of(carry_h, steps), steps_of(carry_c, steps)
        wt = w_hh.t()

        h, c = h0, c0
        for t in range(steps):
            z = z_l[t]
            if raw is not None:
                torch.mm(h, wt, out=raw_l[t])
                y, mu, rs = ln_forward(raw_l[t], ln_hh, None)
                stats_hh.append((mu, rs))
                torch.add(y, pre_l[t], out=z)
            else:
                torch.addmm(pre_l[t], h, wt, out=z)
            sig_if[t].sigmoid_()
            tanh_g[t].tanh_()
            sig_o[t].sigmoid_()
            cn = ct_l[t]
            torch.mul(f_l[t], c, out=cn)
            cn.addcmul_(i_l[t], g_l[t])
            if ln_c_w is not None:
                yc, muc, rsc = ln_forward(cn, ln_c_w, ln_c_b)
                stats_c.append((muc, rsc))
                torch.tanh(yc, out=tc_l[t])
            else:
                torch.tanh(cn, out=tc_l[t])
            if carry_h is None:
                torch.mul(o_l[t], tc_l[t], out=hs_l[t])
            else:
                torch.lerp(o_l[t] * tc_l[t], h, mh_l[t], out=hs_l[t])  # type: ignore[arg-type]
            if carry_c is not None:
                torch.lerp(cn, c, mc_l[t], out=cs_l[t])  # type: ignore[arg-type]
            h, c = hs_l[t], cs_l[t]

        ctx.gates, ctx.cs, ctx.ct, ctx.tc, ctx.raw = gates, cs, ct, tc, raw
        ctx.stats_hh = _stack_stats(stats_hh)
        ctx.stats_c = _stack_stats(stats_c)
        ctx.carry_h, ctx.carry_c = carry_h, carry_c
        ctx.save_for_backward(h0, c0, w_hh, ln_hh, ln_c_w, hs)
        return hs, cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_hs: Tensor, d_c_last: Tensor) -> tuple[Tensor | None, ...]:
        h0, c0, w_hh, ln_hh, ln_c_w, hs = ctx.saved_tensors
        gates, cs, ct, tc, raw = ctx.gates, ctx.cs, ctx.ct, ctx.tc, ctx.raw
        carry_h, carry_c = ctx.carry_h, ctx.carry_c
        steps, batch, g4 = gates.shape
        hid = g4 // 4

        # Factors that turn (dh_t, dc~_t) into gate pre-activation gradients, for all steps at once.
        gv = gates.view(steps, batch, 4, hid)
        i, f, g, o = gv.unbind(2)
        keep_h, keep_c = keep_of(carry_h), keep_of(carry_c)
        k_o = tc * o * (1.0 - o)  # dh -> d z_o
        k_c = o * (1.0 - tc * tc)  # dh -> d LN_c output (or d c~ without LN)
        if keep_h is not None:
            k_o = k_o * keep_h
            k_c = k_c * keep_h
        p_ifg = torch.stack(
            (g * i * (1.0 - i), shifted(c0, cs) * f * (1.0 - f), i * (1.0 - g * g)), dim=2
        )  # dc~ -> d z_i, d z_f, d z_g

        d_h = d_hs.clone()  # accumulates the gradient of every h_t
        d_c = d_c_last.clone()
        d_z = gates.new_empty(steps, batch, g4)
        dzv = d_z.view(steps, batch, 4, hid)
        d_tc = gates.new_empty(steps, batch, hid) if ln_c_w is not None else None
        d_raw: list[Tensor] = [d_z[0]] * steps

        dh_l, dz_l = d_h.unbind(0), d_z.unbind(0)
        dzo_l, dzifg_l = dzv[:, :, 3].unbind(0), dzv[:, :, :3].unbind(0)
        ko_l, kc_l, p_l, f_l = k_o.unbind(0), k_c.unbind(0), p_ifg.unbind(0), f.unbind(0)
        ct_l = ct.unbind(0)
        dtc_l = d_tc.unbind(0) if d_tc is not None else ()
        mh_l, mc_l = steps_of(carry_h, steps), steps_of(carry_c, steps)
        kc_keep_l = steps_of(keep_c, steps)
        if ctx.stats_c is not None:
            muc_l, rsc_l = ctx.stats_c[0].unbind(0), ctx.stats_c[1].unbind(0)
        if ctx.stats_hh is not None:
            mu_l, rs_l = ctx.stats_hh[0].unbind(0), ctx.stats_hh[1].unbind(0)
            raw_l = raw.unbind(0)
        d_h0 = h0.new_empty(0)

        for t in range(steps - 1, -1, -1):
            dh = dh_l[t]
            torch.mul(dh, ko_l[t], out=dzo_l[t])
            if d_tc is not None:
                torch.mul(dh, kc_l[t], out=dtc_l[t])
                dcn = ln_backward(dtc_l[t], ct_l[t], muc_l[t], rsc_l[t], ln_c_w)
            else:
                dcn = dh * kc_l[t]
            if carry_c is None:
                dcn.add_(d_c)
                d_c = f_l[t] * dcn
            else:
                add_scaled_(dcn, kc_keep_l[t], d_c)  # type: ignore[arg-type]
                d_c = d_c * mc_l[t]
                d_c.addcmul_(f_l[t], dcn)
            torch.mul(dcn.unsqueeze(1), p_l[t], out=dzifg_l[t])
            if raw is not None:
                dr = ln_backward(dz_l[t], raw_l[t], mu_l[t], rs_l[t], ln_hh)
                d_raw[t] = dr
            else:
                dr = dz_l[t]
            if t > 0:
                target = dh_l[t - 1]
                target.addmm_(dr, w_hh)
            else:
                target = d_h0 = torch.mm(dr, w_hh)
            if carry_h is not None:
                add_scaled_(target, mh_l[t], dh)  # type: ignore[arg-type]

        need = ctx.needs_input_grad
        d_raw_all = torch.stack(d_raw) if raw is not None else d_z
        d_w = recurrent_weight_grad(d_raw_all, h0, hs) if need[3] else None
        d_ln_hh = d_ln_c_w = d_ln_c_b = None
        if raw is not None and need[4]:
            d_ln_hh = ln_weight_grad(d_z, raw, *ctx.stats_hh)
        if d_tc is not None:
            if need[5]:
                d_ln_c_w = ln_weight_grad(d_tc, ct, *ctx.stats_c)
            if need[6]:
                d_ln_c_b = d_tc.sum((0, 1))
        return d_z, d_h0, d_c, d_w, d_ln_hh, d_ln_c_w, d_ln_c_b, None, None


def _stack_stats(stats: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor] | None:
    if not stats:
        return None
    return torch.stack([m for m, _ in stats]), torch.stack([r for _, r in stats])


def lstm_recurrence(
    pre: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None = None,
    ln_c_weight: Tensor | None = None,
    ln_c_bias: Tensor | None = None,
    carry_h: Carry = None,
    carry_c: Carry = None,
) -> tuple[Tensor, Tensor]:
    """Run the LSTM recurrence over ``pre`` (T, B, 4H) -> (h_t for every t (T, B, H), c_T (B, H)).

    ``pre`` is the input side of the gates including both biases; ``ln_hh`` (4H,) switches on the
    LayerNorm of the recurrent projection and ``ln_c_weight``/``ln_c_bias`` (H,) that of the cell.
    ``carry_h``/``carry_c`` are carry weights (zoneout masks or rate, padding), see ``_common``.
    """
    if (ln_c_weight is None) != (ln_c_bias is None):
        raise ValueError("ln_c_weight and ln_c_bias must be given together")
    return _LSTMRecurrence.apply(pre, h0, c0, w_hh, ln_hh, ln_c_weight, ln_c_bias, carry_h, carry_c)  # type: ignore[no-any-return]
