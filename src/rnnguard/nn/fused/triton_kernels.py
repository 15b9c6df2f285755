"""Triton kernels of the fused recurrences: one launch per step for all element-wise work.

Imported only when Triton is (see :mod:`rnnguard.nn.fused.dispatch`). Every kernel works on
float32 (the compute dtype of the fused paths, also under autocast) and follows the PyTorch loops
of ``lstm.py``, ``gru.py``, ``rnn.py`` and ``indrnn.py`` line by line, which are its oracle in
the tests. The gated kernels run one program per batch row, so a LayerNorm's statistics are a
reduction inside the program; the matrix product with ``W_hh`` stays outside (cuBLAS). Per-step
tensors arrive as whole (T, B, .) buffers plus the step index, so no two arguments of a launch
alias the same memory.

A carry weight (zoneout mask or rate, padding; see ``_common``) arrives as ``MODE`` 0 (none),
1 (the constant ``k``) or 2 (a tensor read through its strides, broadcast dimensions stride 0).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    # tanh(x) = 2 sigmoid(2x) - 1: exact in float32 to rounding, and portable (no libdevice).
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _act(v, ACT: tl.constexpr, SLOPE: tl.constexpr):
    if ACT == 0:
        out = _tanh(v)
    elif ACT == 1:
        out = tl.maximum(v, 0.0)
    else:
        out = tl.where(v > 0.0, v, v * SLOPE)
    return out


@triton.jit
def _act_grad(a, ACT: tl.constexpr, SLOPE: tl.constexpr):
    """The activation's derivative from its output ``a``."""
    if ACT == 0:
        out = 1.0 - a * a
    elif ACT == 1:
        out = tl.where(a > 0.0, 1.0, 0.0)
    else:
        out = tl.where(a > 0.0, 1.0, SLOPE)
    return out


@triton.jit
def _carry(ptr, t, row, offs, mask, st, sb, sh, k, MODE: tl.constexpr):
    if MODE == 1:
        m = tl.zeros_like(offs.to(tl.float32)) + k
    else:
        m = tl.load(ptr + t * st + row * sb + offs * sh, mask=mask, other=0.0).to(tl.float32)
    return m


@triton.jit
def _row_stats(x, mask, N, eps):
    """Mean and reciprocal standard deviation (biased variance) of the masked row ``x``."""
    mean = tl.sum(x, axis=0) / N
    d = tl.where(mask, x - mean, 0.0)
    var = tl.sum(d * d, axis=0) / N
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit
def _lanes(H, BLOCK_H: tl.constexpr):
    """This program's batch row, its lane offsets, and which lanes hold one of the H features."""
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_H)
    return row, offs, offs < H


@triton.jit
def _ln_stats(r, mu, rs, t, B, row, G, eps, BLOCK_G: tl.constexpr):
    """LayerNorm (mean, rstd) of this row of the product ``r`` (B, G), also stored at step t of
    ``mu`` and ``rs`` (T, B) for backward."""
    og = tl.arange(0, BLOCK_G)
    mg = og < G
    mean, rstd = _row_stats(tl.load(r + row * G + og, mask=mg, other=0.0), mg, G, eps)
    tl.store(mu + t * B + row, mean)
    tl.store(rs + t * B + row, rstd)
    return mean, rstd


@triton.jit
def _before(first, states, t, B, H, row, offs, mask):
    """This row of the state before step t: ``first`` (B, H) at t = 0, else ``states[t - 1]``."""
    if t == 0:
        v = tl.load(first + row * H + offs, mask=mask, other=0.0)
    else:
        v = tl.load(states + (t - 1) * B * H + row * H + offs, mask=mask, other=0.0)
    return v


@triton.jit
def _step_grad(
    d_hs, d_rec, direct, m_ptr, t, B, H, row, offs, mask, m_st, m_sb, m_sh, k,
    HAS_REC: tl.constexpr, CARRY: tl.constexpr,
):  # fmt: skip
    """This row's (dh, dh~, m) at step t: dL/dh_t, the candidate's share (1 - m) dL/dh_t, and the
    carry weight m (zeros without a carry).

    dL/dh_t is d_hs[t] plus, below the last step, what came back from step t + 1 through its
    product (``d_rec``) and outside it (``direct``), both (B, H).
    """
    rb = row * H + offs
    dh = tl.load(d_hs + t * B * H + rb, mask=mask, other=0.0)
    if HAS_REC:
        dh += tl.load(d_rec + rb, mask=mask, other=0.0) + tl.load(direct + rb, mask=mask, other=0.0)
    if CARRY != 0:
        m = _carry(m_ptr, t, row, offs, mask, m_st, m_sb, m_sh, k, CARRY)
        dht = dh * (1.0 - m)
    else:
        m = tl.zeros_like(dh)
        dht = dh
    return dh, dht, m


# --------------------------------------------------------------------------------------- LSTM


@triton.jit
def _lstm_gate(pre, r, gain, row, offs, mask, k, H, mean, rs, LN: tl.constexpr):
    """Pre-activation of gate block ``k``: pre + (LN(r) * gain or r)."""
    G = 4 * H
    z = tl.load(pre + row * G + k * H + offs, mask=mask, other=0.0)
    rv = tl.load(r + row * G + k * H + offs, mask=mask, other=0.0)
    if LN:
        g = tl.load(gain + k * H + offs, mask=mask, other=0.0)
        rv = (rv - mean) * rs * g
    return z + rv


@triton.jit
def lstm_forward_step(
    pre, r, ln_hh, h0, c0, ln_cw, ln_cb, mh, mc,
    gates, mu, rs, ct, muc, rsc, tc, hs, cs,
    t, B, H, eps,
    mh_st, mh_sb, mh_sh, kh, mc_st, mc_sb, mc_sh, kc,
    LN_HH: tl.constexpr, LN_C: tl.constexpr, CH: tl.constexpr, CC: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_G: tl.constexpr,
):  # fmt: skip
    """One LSTM step, prescaled as ``_LSTMRecurrence`` (g-gate inputs and cell LayerNorm doubled).

    ``pre`` (B, 4H) and ``r`` (B, 4H) are this step's input side and recurrent product.
    """
    row, offs, mask = _lanes(H, BLOCK_H)
    G = 4 * H
    mean = 0.0
    rstd = 0.0
    if LN_HH:
        mean, rstd = _ln_stats(r, mu, rs, t, B, row, G, eps, BLOCK_G)
    pre = pre + t * B * G  # this step's (B, 4H) input side
    i = tl.sigmoid(_lstm_gate(pre, r, ln_hh, row, offs, mask, 0, H, mean, rstd, LN_HH))
    f = tl.sigmoid(_lstm_gate(pre, r, ln_hh, row, offs, mask, 1, H, mean, rstd, LN_HH))
    g = 2.0 * tl.sigmoid(_lstm_gate(pre, r, ln_hh, row, offs, mask, 2, H, mean, rstd, LN_HH)) - 1.0
    o = tl.sigmoid(_lstm_gate(pre, r, ln_hh, row, offs, mask, 3, H, mean, rstd, LN_HH))
    gbase = gates + t * B * G + row * G
    tl.store(gbase + offs, i, mask=mask)
    tl.store(gbase + H + offs, f, mask=mask)
    tl.store(gbase + 2 * H + offs, g, mask=mask)
    tl.store(gbase + 3 * H + offs, o, mask=mask)
    c_prev = _before(c0, cs, t, B, H, row, offs, mask)
    h_prev = _before(h0, hs, t, B, H, row, offs, mask)
    cn = f * c_prev + i * g
    base = t * B * H + row * H
    tl.store(ct + base + offs, cn, mask=mask)
    if LN_C:
        mc_, rc_ = _row_stats(cn, mask, H, eps)
        tl.store(muc + t * B + row, mc_)
        tl.store(rsc + t * B + row, rc_)
        w = tl.load(ln_cw + offs, mask=mask, other=0.0)
        b = tl.load(ln_cb + offs, mask=mask, other=0.0)
        tct = 2.0 * tl.sigmoid((cn - mc_) * rc_ * w + b) - 1.0  # affine doubled
    else:
        tct = _tanh(cn)
    tl.store(tc + base + offs, tct, mask=mask)
    h = o * tct
    if CH != 0:
        m = _carry(mh, t, row, offs, mask, mh_st, mh_sb, mh_sh, kh, CH)
        h = h + m * (h_prev - h)
    c = cn
    if CC != 0:
        m2 = _carry(mc, t, row, offs, mask, mc_st, mc_sb, mc_sh, kc, CC)
        c = c + m2 * (c_prev - c)
    tl.store(hs + base + offs, h, mask=mask)
    tl.store(cs + base + offs, c, mask=mask)


@triton.jit
def _xhat(r, row, k, H, G, offs, mask, mean, rstd):
    return tl.where(
        mask, (tl.load(r + row * G + k * H + offs, mask=mask, other=0.0) - mean) * rstd, 0.0
    )


@triton.jit
def _acc(ptr, v, mask):
    tl.store(ptr, tl.load(ptr, mask=mask, other=0.0) + v, mask=mask)


@triton.jit
def lstm_backward_step(
    d_hs, d_rec, keep, dc, gates, c0, cs, ct, muc, rsc, tc, ln_cw, mh, mc,
    r, mu, rs, ln_hh,
    d_z, d_raw, d_ln_hh, d_ln_cw, d_ln_cb,
    t, B, H,
    mh_st, mh_sb, mh_sh, kh, mc_st, mc_sb, mc_sh, kc,
    HAS_REC: tl.constexpr, LN_HH: tl.constexpr, LN_C: tl.constexpr, CH: tl.constexpr,
    CC: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One LSTM step backward: ``dh = d_hs[t] + d_rec + keep`` -> d_z[t] (gates), dc, keep.

    ``dc`` (B, H) carries the cell gradient in place; ``keep`` (B, H) is overwritten with the
    part of dh that flows straight to h_{t-1} through the carry. With the recurrent LayerNorm
    (``r`` this step's product) d_raw[t] gets its input gradient; the LayerNorm gains'
    gradients accumulate in per-row buffers (B, .), summed by the caller.
    """
    row, offs, mask = _lanes(H, BLOCK_H)
    G = 4 * H
    rb = row * H + offs
    base = t * B * H + rb
    dh = tl.load(d_hs + base, mask=mask, other=0.0)
    if HAS_REC:
        dh += tl.load(d_rec + rb, mask=mask, other=0.0)
    if CH != 0:
        dh += tl.load(keep + rb, mask=mask, other=0.0)
        m = _carry(mh, t, row, offs, mask, mh_st, mh_sb, mh_sh, kh, CH)
        dht = dh * (1.0 - m)
        tl.store(keep + rb, m * dh, mask=mask)
    else:
        dht = dh
    gbase = gates + t * B * G + row * G
    i = tl.load(gbase + offs, mask=mask, other=0.0)
    f = tl.load(gbase + H + offs, mask=mask, other=0.0)
    g = tl.load(gbase + 2 * H + offs, mask=mask, other=0.0)
    o = tl.load(gbase + 3 * H + offs, mask=mask, other=0.0)
    tct = tl.load(tc + base, mask=mask, other=0.0)
    dzo = tl.where(mask, dht * tct * o * (1.0 - o), 0.0)
    dt = dht * o * (1.0 - tct * tct)
    if LN_C:
        dt = dt * 0.5  # the LayerNorm output was doubled
        mean_c = tl.load(muc + t * B + row)
        rstd_c = tl.load(rsc + t * B + row)
        xc = tl.where(mask, (tl.load(ct + base, mask=mask, other=0.0) - mean_c) * rstd_c, 0.0)
        w = tl.load(ln_cw + offs, mask=mask, other=0.0)
        gy = tl.where(mask, dt * w, 0.0)
        dcn = rstd_c * (gy - tl.sum(gy, axis=0) / H - xc * (tl.sum(gy * xc, axis=0) / H))
        _acc(d_ln_cw + rb, dt * xc, mask)
        _acc(d_ln_cb + rb, dt, mask)
    else:
        dcn = dt
    d_c = tl.load(dc + rb, mask=mask, other=0.0)
    if CC != 0:
        mcv = _carry(mc, t, row, offs, mask, mc_st, mc_sb, mc_sh, kc, CC)
        kept = d_c * mcv
        dcn = dcn + d_c - kept
        d_c_prev = kept + f * dcn
    else:
        dcn = dcn + d_c
        d_c_prev = f * dcn
    tl.store(dc + rb, d_c_prev, mask=mask)
    if t == 0:
        c_prev = tl.load(c0 + rb, mask=mask, other=0.0)
    else:
        c_prev = tl.load(cs + base - B * H, mask=mask, other=0.0)
    dzi = tl.where(mask, dcn * g * i * (1.0 - i), 0.0)
    dzf = tl.where(mask, dcn * c_prev * f * (1.0 - f), 0.0)
    dzg = tl.where(mask, dcn * i * (1.0 - g * g) * 0.5, 0.0)  # z_g came doubled
    zb = d_z + t * B * G + row * G
    tl.store(zb + offs, dzi, mask=mask)
    tl.store(zb + H + offs, dzf, mask=mask)
    tl.store(zb + 2 * H + offs, dzg, mask=mask)
    tl.store(zb + 3 * H + offs, dzo, mask=mask)
    if LN_HH:
        # LayerNorm backward over the whole 4H row, its four blocks held in registers.
        mean = tl.load(mu + t * B + row)
        rstd = tl.load(rs + t * B + row)
        xi = _xhat(r, row, 0, H, G, offs, mask, mean, rstd)
        xf = _xhat(r, row, 1, H, G, offs, mask, mean, rstd)
        xg = _xhat(r, row, 2, H, G, offs, mask, mean, rstd)
        xo = _xhat(r, row, 3, H, G, offs, mask, mean, rstd)
        gi = dzi * tl.load(ln_hh + offs, mask=mask, other=0.0)
        gf = dzf * tl.load(ln_hh + H + offs, mask=mask, other=0.0)
        gg = dzg * tl.load(ln_hh + 2 * H + offs, mask=mask, other=0.0)
        go = dzo * tl.load(ln_hh + 3 * H + offs, mask=mask, other=0.0)
        m1 = (tl.sum(gi, axis=0) + tl.sum(gf, axis=0) + tl.sum(gg, axis=0) + tl.sum(go, axis=0)) / G
        m2 = (
            tl.sum(gi * xi, axis=0) + tl.sum(gf * xf, axis=0)
            + tl.sum(gg * xg, axis=0) + tl.sum(go * xo, axis=0)
        ) / G  # fmt: skip
        rwb = d_raw + t * B * G + row * G
        tl.store(rwb + offs, rstd * (gi - m1 - xi * m2), mask=mask)
        tl.store(rwb + H + offs, rstd * (gf - m1 - xf * m2), mask=mask)
        tl.store(rwb + 2 * H + offs, rstd * (gg - m1 - xg * m2), mask=mask)
        tl.store(rwb + 3 * H + offs, rstd * (go - m1 - xo * m2), mask=mask)
        lb = d_ln_hh + row * G + offs
        _acc(lb, dzi * xi, mask)
        _acc(lb + H, dzf * xf, mask)
        _acc(lb + 2 * H, dzg * xg, mask)
        _acc(lb + 3 * H, dzo * xo, mask)


# ---------------------------------------------------------------------------------------- GRU


@triton.jit
def _gru_u(r, gain, b_hh, row, offs, mask, k, H, mean, rstd, LN: tl.constexpr, BIAS: tl.constexpr):
    """Block ``k`` of u = LN(r) * gain + b_hh (or r + b_hh)."""
    u = tl.load(r + row * 3 * H + k * H + offs, mask=mask, other=0.0)
    if LN:
        u = (u - mean) * rstd * tl.load(gain + k * H + offs, mask=mask, other=0.0)
    if BIAS:
        u += tl.load(b_hh + k * H + offs, mask=mask, other=0.0)
    return u


@triton.jit
def gru_forward_step(
    pre, r, ln_hh, b_hh, h0, m_ptr, rz, n, u_n, mu, rs, hs,
    t, B, H, eps, m_st, m_sb, m_sh, k,
    LN: tl.constexpr, BIAS: tl.constexpr, CARRY: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_G: tl.constexpr,
):  # fmt: skip
    """One GRU step as ``_GRURecurrence``: ``pre`` (B, 3H) = LN(W_ih x) + b_ih, ``r`` = h W_hh^T."""
    row, offs, mask = _lanes(H, BLOCK_H)
    G = 3 * H
    mean = 0.0
    rstd = 0.0
    if LN:
        mean, rstd = _ln_stats(r, mu, rs, t, B, row, G, eps, BLOCK_G)
    pb = pre + t * B * G + row * G
    ur = _gru_u(r, ln_hh, b_hh, row, offs, mask, 0, H, mean, rstd, LN, BIAS)
    uz = _gru_u(r, ln_hh, b_hh, row, offs, mask, 1, H, mean, rstd, LN, BIAS)
    un = _gru_u(r, ln_hh, b_hh, row, offs, mask, 2, H, mean, rstd, LN, BIAS)
    rg = tl.sigmoid(tl.load(pb + offs, mask=mask, other=0.0) + ur)
    zg = tl.sigmoid(tl.load(pb + H + offs, mask=mask, other=0.0) + uz)
    nv = _tanh(tl.load(pb + 2 * H + offs, mask=mask, other=0.0) + rg * un)
    base = t * B * H + row * H + offs
    h_prev = _before(h0, hs, t, B, H, row, offs, mask)
    h = nv + zg * (h_prev - nv)
    if CARRY != 0:
        m = _carry(m_ptr, t, row, offs, mask, m_st, m_sb, m_sh, k, CARRY)
        h = h + m * (h_prev - h)
    rzb = rz + t * B * 2 * H + row * 2 * H
    tl.store(rzb + offs, rg, mask=mask)
    tl.store(rzb + H + offs, zg, mask=mask)
    tl.store(n + base, nv, mask=mask)
    tl.store(u_n + base, un, mask=mask)
    tl.store(hs + base, h, mask=mask)


@triton.jit
def gru_backward_step(
    d_hs, d_rec, direct, h0, hs, rz, n, u_n, m_ptr, r, mu, rs, ln_hh,
    d_pre, d_raw, d_b_rows, d_ln_rows,
    t, B, H, m_st, m_sb, m_sh, k,
    HAS_REC: tl.constexpr, LN: tl.constexpr, CARRY: tl.constexpr, WANT_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One GRU step backward: ``dh = d_hs[t] + d_rec + direct`` -> d_pre[t], d_raw[t], direct.

    ``direct`` (B, H) is overwritten with the gradient that reaches h_{t-1} outside the product;
    the gradient of u = LN(r) + b_hh accumulates per row into ``d_b_rows`` (B, 3H), and with
    LayerNorm its backward gives d_raw[t] and per-row gain gradients ``d_ln_rows``.
    """
    row, offs, mask = _lanes(H, BLOCK_H)
    rb = row * H + offs
    base = t * B * H + rb
    dh, dht, m = _step_grad(
        d_hs, d_rec, direct, m_ptr, t, B, H, row, offs, mask, m_st, m_sb, m_sh, k, HAS_REC, CARRY
    )
    rzb = rz + t * B * 2 * H + row * 2 * H
    rg = tl.load(rzb + offs, mask=mask, other=0.0)
    zg = tl.load(rzb + H + offs, mask=mask, other=0.0)
    nv = tl.load(n + base, mask=mask, other=0.0)
    un = tl.load(u_n + base, mask=mask, other=0.0)
    h_prev = _before(h0, hs, t, B, H, row, offs, mask)
    dz_h = dht * zg
    dn = tl.where(mask, (dht - dz_h) * (1.0 - nv * nv), 0.0)
    daz = tl.where(mask, dht * (h_prev - nv) * zg * (1.0 - zg), 0.0)
    dar = tl.where(mask, dn * un * rg * (1.0 - rg), 0.0)
    dun = dn * rg
    G = 3 * H
    pb = d_pre + t * B * G + row * G
    tl.store(pb + offs, dar, mask=mask)
    tl.store(pb + H + offs, daz, mask=mask)
    tl.store(pb + 2 * H + offs, dn, mask=mask)
    if WANT_B:
        bb = d_b_rows + row * G + offs
        _acc(bb, dar, mask)
        _acc(bb + H, daz, mask)
        _acc(bb + 2 * H, dun, mask)
    wb = d_raw + t * B * G + row * G
    if LN:
        mean = tl.load(mu + t * B + row)
        rstd = tl.load(rs + t * B + row)
        xr = _xhat(r, row, 0, H, G, offs, mask, mean, rstd)
        xz = _xhat(r, row, 1, H, G, offs, mask, mean, rstd)
        xn = _xhat(r, row, 2, H, G, offs, mask, mean, rstd)
        gr = dar * tl.load(ln_hh + offs, mask=mask, other=0.0)
        gz = daz * tl.load(ln_hh + H + offs, mask=mask, other=0.0)
        gn = dun * tl.load(ln_hh + 2 * H + offs, mask=mask, other=0.0)
        m1 = (tl.sum(gr, axis=0) + tl.sum(gz, axis=0) + tl.sum(gn, axis=0)) / G
        m2 = (tl.sum(gr * xr, axis=0) + tl.sum(gz * xz, axis=0) + tl.sum(gn * xn, axis=0)) / G
        tl.store(wb + offs, rstd * (gr - m1 - xr * m2), mask=mask)
        tl.store(wb + H + offs, rstd * (gz - m1 - xz * m2), mask=mask)
        tl.store(wb + 2 * H + offs, rstd * (gn - m1 - xn * m2), mask=mask)
        lb = d_ln_rows + row * G + offs
        _acc(lb, dar * xr, mask)
        _acc(lb + H, daz * xz, mask)
        _acc(lb + 2 * H, dun * xn, mask)
    else:
        tl.store(wb + offs, dar, mask=mask)
        tl.store(wb + H + offs, daz, mask=mask)
        tl.store(wb + 2 * H + offs, dun, mask=mask)
    out = dz_h
    if CARRY != 0:
        out += m * dh
    tl.store(direct + rb, out, mask=mask)


# ---------------------------------------------------------------------------------------- RNN


@triton.jit
def rnn_forward_step(
    pre, r, ln_hh, h0, m_ptr, a, mu, rs, hs,
    t, B, H, eps, m_st, m_sb, m_sh, k,
    LN: tl.constexpr, ACT: tl.constexpr, SLOPE: tl.constexpr, RESIDUAL: tl.constexpr,
    CARRY: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One Elman step as ``_RNNRecurrence``: h~ = [h_{t-1} +] act(pre + LN(r))."""
    row, offs, mask = _lanes(H, BLOCK_H)
    rv = tl.load(r + row * H + offs, mask=mask, other=0.0)
    if LN:
        mean, rstd = _row_stats(rv, mask, H, eps)
        tl.store(mu + t * B + row, mean)
        tl.store(rs + t * B + row, rstd)
        rv = (rv - mean) * rstd * tl.load(ln_hh + offs, mask=mask, other=0.0)
    base = t * B * H + row * H + offs
    av = _act(tl.load(pre + base, mask=mask, other=0.0) + rv, ACT, SLOPE)
    tl.store(a + base, av, mask=mask)
    h_prev = _before(h0, hs, t, B, H, row, offs, mask)
    h = av
    if RESIDUAL:
        h += h_prev
    if CARRY != 0:
        m = _carry(m_ptr, t, row, offs, mask, m_st, m_sb, m_sh, k, CARRY)
        h = h + m * (h_prev - h)
    tl.store(hs + base, h, mask=mask)


@triton.jit
def rnn_backward_step(
    d_hs, d_rec, direct, a, m_ptr, r, mu, rs, ln_hh, d_a, d_raw, d_ln_rows,
    t, B, H, m_st, m_sb, m_sh, k,
    HAS_REC: tl.constexpr, LN: tl.constexpr, ACT: tl.constexpr, SLOPE: tl.constexpr,
    RESIDUAL: tl.constexpr, CARRY: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One Elman step backward: ``dh = d_hs[t] + d_rec + direct`` -> d_a[t] (d_raw[t]), direct."""
    row, offs, mask = _lanes(H, BLOCK_H)
    rb = row * H + offs
    base = t * B * H + rb
    dh, dht, m = _step_grad(
        d_hs, d_rec, direct, m_ptr, t, B, H, row, offs, mask, m_st, m_sb, m_sh, k, HAS_REC, CARRY
    )
    av = tl.load(a + base, mask=mask, other=0.0)
    da = tl.where(mask, dht * _act_grad(av, ACT, SLOPE), 0.0)
    tl.store(d_a + base, da, mask=mask)
    if LN:
        mean = tl.load(mu + t * B + row)
        rstd = tl.load(rs + t * B + row)
        xh = _xhat(r, row, 0, H, H, offs, mask, mean, rstd)
        gy = da * tl.load(ln_hh + offs, mask=mask, other=0.0)
        dx = rstd * (gy - tl.sum(gy, axis=0) / H - xh * (tl.sum(gy * xh, axis=0) / H))
        tl.store(d_raw + base, dx, mask=mask)
        _acc(d_ln_rows + rb, da * xh, mask)
    # What reaches h_{t-1} outside the product: all of dh through the residual (m + (1 - m)),
    # else the carried share m dh.
    if RESIDUAL:
        out = dh
    elif CARRY != 0:
        out = m * dh
    else:
        out = tl.zeros_like(dh)
    tl.store(direct + rb, out, mask=mask)


# ------------------------------------------------------------------------------------- IndRNN


@triton.jit
def indrnn_forward(
    pre, h0, u, m_ptr, a, hs, T, B, H, m_st, m_sb, m_sh, k,
    ACT: tl.constexpr, SLOPE: tl.constexpr, CARRY: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """IndRNN's whole recurrence: each program runs all steps of BLOCK (row, unit) pairs."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < B * H
    row = idx // H
    col = idx % H
    uv = tl.load(u + col, mask=mask, other=0.0)
    h = tl.load(h0 + idx, mask=mask, other=0.0)
    t = 0
    while t < T:  # a while loop: Triton's interpreter cannot index range() by an argument
        av = _act(tl.load(pre + t * B * H + idx, mask=mask, other=0.0) + uv * h, ACT, SLOPE)
        if CARRY != 0:
            m = _carry(m_ptr, t, row, col, mask, m_st, m_sb, m_sh, k, CARRY)
            tl.store(a + t * B * H + idx, av, mask=mask)
            h = av + m * (h - av)
        else:
            h = av
        tl.store(hs + t * B * H + idx, h, mask=mask)
        t += 1


@triton.jit
def indrnn_backward(
    d_hs, h0, u, m_ptr, a, hs, d_a, d_h0, d_u_rows, T, B, H, m_st, m_sb, m_sh, k,
    ACT: tl.constexpr, SLOPE: tl.constexpr, CARRY: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """IndRNN's whole backward; ``d_u_rows`` (B, H) gets sum_t da_t h_{t-1} per element."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < B * H
    row = idx // H
    col = idx % H
    uv = tl.load(u + col, mask=mask, other=0.0)
    carried = tl.zeros([BLOCK], dtype=tl.float32)
    du = tl.zeros([BLOCK], dtype=tl.float32)
    t = T - 1
    while t >= 0:
        dh = tl.load(d_hs + t * B * H + idx, mask=mask, other=0.0) + carried
        av = tl.load(a + t * B * H + idx, mask=mask, other=0.0)
        if t > 0:
            h_prev = tl.load(hs + (t - 1) * B * H + idx, mask=mask, other=0.0)
        else:
            h_prev = tl.load(h0 + idx, mask=mask, other=0.0)
        if CARRY != 0:
            m = _carry(m_ptr, t, row, col, mask, m_st, m_sb, m_sh, k, CARRY)
            da = dh * (1.0 - m) * _act_grad(av, ACT, SLOPE)
            carried = da * uv + m * dh
        else:
            da = dh * _act_grad(av, ACT, SLOPE)
            carried = da * uv
        tl.store(d_a + t * B * H + idx, da, mask=mask)
        du += da * h_prev
        t -= 1
    tl.store(d_h0 + idx, carried, mask=mask)
    tl.store(d_u_rows + idx, du, mask=mask)
