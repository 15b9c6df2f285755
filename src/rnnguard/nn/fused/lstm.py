"""Fused LSTM recurrence (optional LayerNorm, zoneout) with a hand-written backward.

The caller hoists the input side, ``pre = LN(W_ih x) + b_ih + b_hh`` for all steps, out of the
loop; DropConnect is folded into ``w_hh`` by the caller. Forward runs the time loop with no
autograd graph; it writes h_t into one (T, B, H) buffer and keeps everything else a step's backward
needs as the per-step tensors the ops return, which reuse freed heap memory where fresh (T, B, .)
buffers would cost a page fault at every first touch. Backward walks the steps
in reverse doing only what is truly sequential: one (B, 4H) x (4H, H) matrix multiply and a few
element-wise ops per step, on (B, H) slices that stay in cache. The LayerNorm gain gradients come
out of the per-step LayerNorm backward; the recurrent weight gradient is one matrix multiply over
all steps after the loop, and the input-side gradients flow through ``pre`` to ordinary autograd.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from rnnguard.nn.functional import LSTMState, State
from rnnguard.nn.fused import amp, dispatch, native
from rnnguard.nn.fused._common import (
    Direction,
    RecurrentProduct,
    ZoneoutWeight,
    add_scaled_,
    current_rebuild,
    keep_for_double_backward,
    ln_backward_affine,
    ln_forward,
    normed_product_backward,
    rebuilding,
    recurrent_weight_grad,
    stack_stats,
    steps_of,
    times_keep,
    twice_differentiable,
)
from rnnguard.nn.fused.lstm_native import lstm_recurrence_native
from rnnguard.nn.fused.reference import lstm_reference

__all__ = [
    "fold_gate_scale",
    "gate_scale",
    "lstm_direction",
    "lstm_recurrence",
    "lstm_recurrence_prescaled",
]

# One aten call each for grad * s (1 - s) and grad * (1 - t^2), from the activation's output.
_sigmoid_bwd = torch.ops.aten.sigmoid_backward.grad_input
_tanh_bwd = torch.ops.aten.tanh_backward.default
_tanh_bwd_into = torch.ops.aten.tanh_backward.grad_input


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
        zoneout: ZoneoutWeight,
        zoneout_cell: ZoneoutWeight,
        w_hr: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        keep_for_double_backward(
            ctx, lstm_reference,
            (pre, h0, c0, w_hh, ln_hh, ln_c_w, ln_c_b, zoneout, zoneout_cell, w_hr),
        )  # fmt: skip
        steps, batch, g4 = pre.shape
        hid = g4 // 4
        # Activated i, f, g, o of each step, one fresh (B, 4H) tensor per step: writing them into
        # one (T, B, 4H) buffer costs a pass over fresh memory every step.
        gates: list[Tensor] = []
        hs = pre.new_empty(steps, batch, hid if w_hr is None else w_hr.shape[0])
        # With a projection, h~_t before it (o * tanh(.)), for W_hr's gradient.
        unprojected: list[Tensor] = []
        # Per step, fresh tensors for the same reason: c_t after zoneout, c~_t, tanh(LN(c~_t)).
        cs: list[Tensor] = []
        ct: list[Tensor] = []
        tc: list[Tensor] = []
        # The recurrent projection of each step, kept as the product returned it (copying it
        # into one (T, B, 4H) buffer costs a pass over fresh memory every step).
        raw: list[Tensor] | None = [] if ln_hh is not None else None
        stats_hh: list[tuple[Tensor, Tensor]] = []
        stats_c: list[tuple[Tensor, Tensor]] = []

        pre_l = pre.unbind(0)
        hs_l = hs.unbind(0)
        zoneout_l, zoneout_cell_l = steps_of(zoneout, steps), steps_of(zoneout_cell, steps)
        prod = RecurrentProduct(w_hh, batch)  # h @ W_hh^T, packed once for all steps

        h, c = h0, c0
        for t in range(steps):
            if raw is not None:
                r = prod(h)
                raw.append(r)
                z, mu, rs = ln_forward(r, ln_hh, None)
                stats_hh.append((mu, rs))
                z.add_(pre_l[t])
            else:
                z = prod.add_into(pre_l[t], h, pre.new_empty(batch, g4))
            gates.append(z)
            i, f, g, o = z.view(batch, 4, hid).unbind(1)
            # One sigmoid over all four gates; the g-gate arrives doubled, so that
            # tanh(z_g) = 2 sigmoid(2 z_g) - 1 (torch's tanh is several times slower on CPU).
            z.sigmoid_()
            g.mul_(2.0).sub_(1.0)
            cn = torch.mul(f, c).addcmul_(i, g)
            ct.append(cn)
            if ln_c_w is not None:
                yc, muc, rsc = ln_forward(cn, ln_c_w, ln_c_b)  # affine doubled, as for g
                stats_c.append((muc, rsc))
                tct = yc.sigmoid_().mul_(2.0).sub_(1.0)
            else:
                tct = torch.tanh(cn)
            tc.append(tct)
            if w_hr is not None:
                unprojected.append(o * tct)
                if zoneout is None:
                    torch.mm(unprojected[t], w_hr.t(), out=hs_l[t])
                else:
                    h_new = torch.mm(unprojected[t], w_hr.t())
                    torch.lerp(h_new, h, zoneout_l[t], out=hs_l[t])  # type: ignore[arg-type]
            elif zoneout is None:
                torch.mul(o, tct, out=hs_l[t])
            else:
                torch.lerp(o * tct, h, zoneout_l[t], out=hs_l[t])  # type: ignore[arg-type]
            c = (
                cn if zoneout_cell is None else torch.lerp(cn, c, zoneout_cell_l[t])  # type: ignore[arg-type]
            )
            cs.append(c)
            h = hs_l[t]

        ctx.gates, ctx.cs, ctx.ct, ctx.tc, ctx.raw = gates, cs, ct, tc, raw
        ctx.stats_hh = stack_stats(stats_hh)
        ctx.stats_c = stack_stats(stats_c)
        ctx.zoneout, ctx.zoneout_cell = zoneout, zoneout_cell
        ctx.unprojected = unprojected
        ctx.save_for_backward(h0, c0, w_hh, ln_hh, ln_c_w, hs, w_hr)
        return hs, c.clone()

    @staticmethod
    @twice_differentiable
    def backward(ctx: Any, d_hs: Tensor, d_c_last: Tensor) -> tuple[Tensor | None, ...]:
        h0, c0, w_hh, ln_hh, ln_c_w, hs, w_hr = ctx.saved_tensors
        gates, cs, ct, tc, raw = ctx.gates, ctx.cs, ctx.ct, ctx.tc, ctx.raw
        zoneout, zoneout_cell = ctx.zoneout, ctx.zoneout_cell
        steps, batch, g4 = len(gates), gates[0].shape[0], gates[0].shape[1]
        hid = g4 // 4

        d_c = d_c_last.clone()
        d_z = hs.new_empty(steps, batch, g4)  # gradient of the gate pre-activations
        d_raw = hs.new_empty(steps, batch, g4) if raw is not None else d_z
        draw_l = d_raw.unbind(0)
        d_gains: list[Tensor] = []  # per-step gradients of ln_hh
        d_c_gains: list[Tensor] = []  # per-step gradients of ln_c_weight
        d_c_shifts: list[Tensor] = []  # and of ln_c_bias

        # Per-step views, made once. The derivative factors are computed inside the loop, on
        # (B, H) slices that stay in cache: precomputing them for all steps at once costs more
        # (every temporary is a fresh (T, B, H) allocation streamed through memory).
        dzv = d_z.view(steps, batch, 4, hid)
        dzi_l, dzf_l, dzg_l, dzo_l = (dzv[:, :, k].unbind(0) for k in range(4))
        dh_l, dz_l, tc_l, ct_l = d_hs.unbind(0), d_z.unbind(0), tc, ct
        cprev_l = (c0, *cs[:-1])
        zoneout_l, zoneout_cell_l = steps_of(zoneout, steps), steps_of(zoneout_cell, steps)
        if ctx.stats_c is not None:
            muc_l, rsc_l = ctx.stats_c[0].unbind(0), ctx.stats_c[1].unbind(0)
        if ctx.stats_hh is not None:
            mu_l, rs_l = ctx.stats_hh[0].unbind(0), ctx.stats_hh[1].unbind(0)
            raw_l = raw
        back = RecurrentProduct(w_hh.t(), h0.shape[0])  # d @ W_hh, packed once
        # The gradient of h_t: d_hs[t] plus what flows back from step t + 1, a fresh (B, H)
        # tensor per step (no (T, B, H) copy of d_hs to accumulate into).
        dh = dh_l[steps - 1] if steps > 0 else h0.new_empty(0)
        # With a projection: the gradient of each step's projected candidate, for W_hr's.
        d_projected: list[Tensor] = []

        for t in range(steps - 1, -1, -1):
            dht = (
                dh if zoneout is None else times_keep(dh, zoneout_l[t])
            )  # gradient of the candidate h~_t
            if w_hr is not None:
                d_projected.append(dht)
                dht = torch.mm(dht, w_hr)  # through h~_t = W_hr (o * tanh(.))
            i, f, g, o = gates[t].view(batch, 4, hid).unbind(1)
            tct = tc_l[t]
            # o: dz_o = dh~ * tanh(.) * o (1 - o); the tanh input: dh~ * o * (1 - tanh^2)
            _sigmoid_bwd(dht * tct, o, grad_input=dzo_l[t])
            dt = _tanh_bwd(dht * o, tct)
            if ln_c_w is not None:
                dt.mul_(0.5)  # the LayerNorm output was doubled
                dcn, dgc, dbc = ln_backward_affine(dt, ct_l[t], muc_l[t], rsc_l[t], ln_c_w, True)
                d_c_gains.append(dgc)
                d_c_shifts.append(dbc)  # type: ignore[arg-type]
            else:
                dcn = dt
            if zoneout_cell is None:
                dcn.add_(d_c)
                d_c = f * dcn
            else:
                kept = d_c * zoneout_cell_l[t]  # the part of dc_t that flows straight to c_{t-1}
                dcn.add_(d_c).sub_(kept)  # + (1 - m) dc_t
                d_c = kept.addcmul_(f, dcn)
            # c~ = f c_{t-1} + i g
            _sigmoid_bwd(dcn * g, i, grad_input=dzi_l[t])
            _sigmoid_bwd(dcn * cprev_l[t], f, grad_input=dzf_l[t])
            _tanh_bwd_into(dcn * i, g, grad_input=dzg_l[t]).mul_(0.5)  # z_g came doubled
            if raw is not None:
                dr = normed_product_backward(
                    dz_l[t], raw_l[t], mu_l[t], rs_l[t], ln_hh, draw_l[t], d_gains
                )
            else:
                dr = dz_l[t]
            target = back(dr)
            if t > 0:
                target.add_(dh_l[t - 1])
            if zoneout is not None:
                add_scaled_(target, zoneout_l[t], dh)  # type: ignore[arg-type]
            dh = target

        need = ctx.needs_input_grad
        d_w = recurrent_weight_grad(d_raw, h0, hs) if need[3] else None
        d_ln_hh = torch.stack(d_gains).sum(0) if d_gains else None
        d_ln_c_w = d_ln_c_b = None
        if d_c_gains:
            d_ln_c_w, d_ln_c_b = torch.stack(d_c_gains).sum(0), torch.stack(d_c_shifts).sum(0)
        d_w_hr = None
        if w_hr is not None and need[9]:
            d_proj = torch.stack(d_projected[::-1]).flatten(0, 1)
            d_w_hr = torch.mm(d_proj.t(), torch.stack(ctx.unprojected).flatten(0, 1))
        return d_z, dh, d_c, d_w, d_ln_hh, d_ln_c_w, d_ln_c_b, None, None, d_w_hr


def _normalised_input(
    ln_in: Tensor, in_bias: Tensor | None
) -> contextlib.AbstractContextManager[None]:
    """Rebuild ``pre`` for double backward with the input LayerNorm applied, as it was here."""
    raw = current_rebuild()
    if raw is None:
        return contextlib.nullcontext()
    return rebuilding(lambda: ln_forward(raw(), ln_in, in_bias)[0])


def gate_scale(gates: int, like: Tensor) -> Tensor:
    """(4H,) ones with 2 on the g-gate block: the factor the fused loop wants its g inputs scaled by."""
    scale = torch.ones(gates, device=like.device, dtype=like.dtype)
    scale[gates // 2 : 3 * gates // 4] = 2.0
    return scale


def fold_gate_scale(
    scale: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The recurrent parameters as :func:`lstm_recurrence_prescaled` wants them.

    ``scale`` (from :func:`gate_scale`) goes into ``w_hh``'s rows, or into ``ln_hh`` with
    LayerNorm; the cell LayerNorm's weight and bias are doubled.
    """
    if ln_hh is None:
        w_hh = w_hh * scale.unsqueeze(1)
    else:
        ln_hh = ln_hh * scale
    ln_c_weight = 2.0 * ln_c_weight if ln_c_weight is not None else None
    ln_c_bias = 2.0 * ln_c_bias if ln_c_bias is not None else None
    return w_hh, ln_hh, ln_c_weight, ln_c_bias


def lstm_recurrence_prescaled(
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
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`lstm_recurrence` with the doubling already folded into the parameters.

    The g-gate rows of ``pre`` and of the recurrent term (``w_hh``'s rows, or ``ln_hh`` with
    LayerNorm) and the cell LayerNorm's ``ln_c_weight``/``ln_c_bias`` are twice their true values.
    Folding the factor into the (small) parameters costs nothing per step. With ``ln_in`` (4H,),
    ``pre`` is the raw input projection and the input side is ``LN(pre) * ln_in + in_bias``
    (both prescaled too). On CPU (float32, float64) the native kernels run the loop, the input LayerNorm
    included, when they are available (see :mod:`rnnguard.nn.fused.native`).
    """
    if in_bias is not None and ln_in is None:
        raise ValueError("in_bias needs ln_in")
    if (ln_c_weight is None) != (ln_c_bias is None):
        raise ValueError("ln_c_weight and ln_c_bias must be given together")
    w_hh = amp.half_weight(w_hh)  # in a mixed-precision run: the products' dtype
    rest = (h0, c0, w_hh, ln_hh, ln_c_weight, ln_c_bias, zoneout, zoneout_cell)
    triton = dispatch.triton_for(pre) if w_hr is None else None
    if triton is not None:
        if ln_in is None:
            return triton.lstm_recurrence_prescaled(pre, *rest)
        with _normalised_input(ln_in, in_bias):
            return triton.lstm_recurrence_prescaled(ln_forward(pre, ln_in, in_bias)[0], *rest)
    # w_hh only meets the product, which casts (mixed precision): the kernels need its device.
    if (
        pre.shape[0] > 0
        and w_hh.device == pre.device
        and native.usable(pre, *rest[:2], *rest[3:], ln_in, in_bias, w_hr)
    ):
        return lstm_recurrence_native(pre, *rest, w_hr, ln_in, in_bias)
    if ln_in is None:
        return _LSTMRecurrence.apply(pre, *rest, w_hr)
    with _normalised_input(ln_in, in_bias):
        return _LSTMRecurrence.apply(ln_forward(pre, ln_in, in_bias)[0], *rest, w_hr)


def lstm_recurrence(
    pre: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    ln_hh: Tensor | None = None,
    ln_c_weight: Tensor | None = None,
    ln_c_bias: Tensor | None = None,
    zoneout: ZoneoutWeight = None,
    zoneout_cell: ZoneoutWeight = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the LSTM recurrence over ``pre`` (T, B, 4H) -> (h_t for every t (T, B, H), c_T (B, H)).

    ``pre`` is the input side of the gates including both biases; ``ln_hh`` (4H,) switches on the
    LayerNorm of the recurrent projection and ``ln_c_weight``/``ln_c_bias`` (H,) that of the cell.
    ``zoneout``/``zoneout_cell`` are the zoneout weights of h and c (masks or rate, padding), see
    ``_common``. ``w_hr`` (P, H) projects each h~_t to P features (torch.nn's ``proj_size``);
    ``h0``, ``w_hh``'s columns and the returned h_t then have P features.
    """
    if (ln_c_weight is None) != (ln_c_bias is None):
        raise ValueError("ln_c_weight and ln_c_bias must be given together")
    scale = gate_scale(pre.shape[-1], pre)
    w_hh, ln_hh, ln_c_weight, ln_c_bias = fold_gate_scale(
        scale, w_hh, ln_hh, ln_c_weight, ln_c_bias
    )
    return lstm_recurrence_prescaled(
        pre * scale, h0, c0, w_hh, ln_hh, ln_c_weight, ln_c_bias, zoneout, zoneout_cell,
        w_hr=w_hr,
    )  # fmt: skip


def lstm_direction(d: Direction) -> tuple[Tensor, State]:
    """One direction of an LSTM layer; h_t in loop order and the final (h, c).

    Both biases join the input side; the input LayerNorm goes into the recurrence (the native
    kernels fuse it into each step), and the g-gate doubling is folded into the parameters.
    """
    params = d.params
    scale = gate_scale(params.weight_ih.shape[0], params.weight_ih)
    w_rec, ln_hh, ln_cw, ln_cb = fold_gate_scale(
        scale, d.w_hh, params.ln_hh, params.ln_c_weight, params.ln_c_bias
    )
    h0, c0 = d.state0  # type: ignore[misc]
    with d.input_side(True, scale, defer_ln=True) as (pre, ln_in, in_bias):
        hs, c_last = lstm_recurrence_prescaled(
            pre, h0, c0, w_rec, ln_hh, ln_cw, ln_cb, d.zoneout, d.zoneout_cell,
            ln_in, in_bias, params.weight_hr,
        )  # fmt: skip
    return hs, LSTMState(hs[-1], c_last)
