"""The fused recurrences against a plain autograd loop of the same equations (docs/equations.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnguard.nn.fused.gru import gru_recurrence
from rnnguard.nn.fused.indrnn import indrnn_recurrence
from rnnguard.nn.fused.lstm import lstm_recurrence
from rnnguard.nn.fused.rnn import rnn_recurrence
from rnnguard.nn.options import RecurrentOptions

# Every test here runs on the native kernels and on the pure-PyTorch fallback.
pytestmark = pytest.mark.usefixtures("fused_backend")

EPS = 1e-5


def _ln(v: Tensor, w: Tensor | None, b: Tensor | None = None) -> Tensor:
    return F.layer_norm(v, (v.shape[-1],), w, b, EPS) if w is not None else v


def _mix(m, prev: Tensor, new: Tensor, t: int) -> Tensor:
    if m is None:
        return new
    mt = m[t] if isinstance(m, Tensor) else m
    return mt * prev + (1 - mt) * new


def _act(v: Tensor, name: str) -> Tensor:
    return {"tanh": torch.tanh, "relu": torch.relu, "leaky_relu": lambda a: F.leaky_relu(a, 0.01)}[
        name
    ](v)


def loop_lstm(pre, h0, c0, w, ln_hh=None, ln_cw=None, ln_cb=None, mh=None, mc=None):
    h, c, hs = h0, c0, []
    for t in range(pre.shape[0]):
        z = pre[t] + _ln(h @ w.t(), ln_hh)
        i, f, g, o = z.chunk(4, -1)
        cn = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        hn = torch.sigmoid(o) * torch.tanh(_ln(cn, ln_cw, ln_cb))
        h, c = _mix(mh, h, hn, t), _mix(mc, c, cn, t)
        hs.append(h)
    return torch.stack(hs), c


def loop_gru(pre, h0, w, b_hh=None, ln_hh=None, mh=None):
    h, hs = h0, []
    for t in range(pre.shape[0]):
        u = _ln(h @ w.t(), ln_hh)
        if b_hh is not None:
            u = u + b_hh
        a_r, a_z, a_n = pre[t].chunk(3, -1)
        u_r, u_z, u_n = u.chunk(3, -1)
        r, z = torch.sigmoid(a_r + u_r), torch.sigmoid(a_z + u_z)
        n = torch.tanh(a_n + r * u_n)
        h = _mix(mh, h, (1 - z) * n + z * h, t)
        hs.append(h)
    return torch.stack(hs)


def loop_rnn(pre, h0, w, ln_hh=None, act="tanh", residual=False, mh=None):
    h, hs = h0, []
    for t in range(pre.shape[0]):
        a = _act(pre[t] + _ln(h @ w.t(), ln_hh), act)
        h = _mix(mh, h, h + a if residual else a, t)
        hs.append(h)
    return torch.stack(hs)


def loop_indrnn(pre, h0, u, act="relu", mh=None):
    h, hs = h0, []
    for t in range(pre.shape[0]):
        h = _mix(mh, h, _act(pre[t] + u * h, act), t)
        hs.append(h)
    return torch.stack(hs)


def _carry(kind: str, steps: int, batch: int, hid: int, dtype) -> Tensor | float | None:
    if kind == "none":
        return None
    if kind == "rate":
        return 0.3
    if kind == "mask":
        return torch.empty(steps, batch, hid, dtype=dtype).bernoulli_(0.3)
    # padding-style carry: (T, B, 1), ones after a per-sequence length
    lengths = torch.randint(1, steps + 1, (batch,))
    return (torch.arange(steps).unsqueeze(1) >= lengths).unsqueeze(-1).to(dtype)


def _compare(fused_out, ref_out, inputs, atol=2e-5):
    fused_out = [o for o in fused_out if o is not None]
    ref_out = [o for o in ref_out if o is not None]
    for a, b in zip(fused_out, ref_out):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)
    seeds = [torch.randn_like(o) for o in ref_out]
    leaves = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    g_fused = torch.autograd.grad(fused_out, leaves, seeds)
    g_ref = torch.autograd.grad(ref_out, leaves, seeds)
    for k, (a, b) in enumerate(zip(g_fused, g_ref)):
        torch.testing.assert_close(
            a, b, atol=atol * 10, rtol=1e-3, msg=lambda m, k=k: f"grad {k}: {m}"
        )


def _params(*shapes, dtype=torch.float32, scale=0.5):
    return [(torch.randn(*s, dtype=dtype) * scale).requires_grad_() for s in shapes]


def _gain(n, dtype):
    return (1 + 0.2 * torch.randn(n, dtype=dtype)).requires_grad_()


@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "rate", "pad"])
def test_lstm_matches_loop(ln: bool, carry: str) -> None:
    steps, batch, hid = 7, 3, 5
    pre, h0, c0, w = _params((steps, batch, 4 * hid), (batch, hid), (batch, hid), (4 * hid, hid))
    ln_hh = _gain(4 * hid, pre.dtype) if ln else None
    ln_cw = _gain(hid, pre.dtype) if ln else None
    ln_cb = (0.1 * torch.randn(hid)).requires_grad_() if ln else None
    mh = _carry(carry, steps, batch, hid, pre.dtype)
    mc = _carry(carry, steps, batch, hid, pre.dtype) if carry != "pad" else mh
    out = lstm_recurrence(pre, h0, c0, w, ln_hh, ln_cw, ln_cb, mh, mc)
    ref = loop_lstm(pre, h0, c0, w, ln_hh, ln_cw, ln_cb, mh, mc)
    _compare(out, ref, [pre, h0, c0, w, ln_hh, ln_cw, ln_cb])


@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "rate", "pad"])
@pytest.mark.parametrize("bias", [False, True])
def test_gru_matches_loop(ln: bool, carry: str, bias: bool) -> None:
    steps, batch, hid = 6, 4, 5
    pre, h0, w = _params((steps, batch, 3 * hid), (batch, hid), (3 * hid, hid))
    b_hh = (0.3 * torch.randn(3 * hid)).requires_grad_() if bias else None
    ln_hh = _gain(3 * hid, pre.dtype) if ln else None
    mh = _carry(carry, steps, batch, hid, pre.dtype)
    out = gru_recurrence(pre, h0, w, b_hh, ln_hh, mh)
    ref = loop_gru(pre, h0, w, b_hh, ln_hh, mh)
    _compare([out], [ref], [pre, h0, w, b_hh, ln_hh])


@pytest.mark.parametrize("act", ["tanh", "relu", "leaky_relu"])
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "pad"])
def test_rnn_matches_loop(act: str, ln: bool, residual: bool, carry: str) -> None:
    steps, batch, hid = 6, 3, 4
    pre, h0, w = _params((steps, batch, hid), (batch, hid), (hid, hid))
    ln_hh = _gain(hid, pre.dtype) if ln else None
    mh = _carry(carry, steps, batch, hid, pre.dtype)
    out = rnn_recurrence(
        pre, h0, w, ln_hh, RecurrentOptions(nonlinearity=act, residual=residual), mh
    )
    ref = loop_rnn(pre, h0, w, ln_hh, act, residual, mh)
    _compare([out], [ref], [pre, h0, w, ln_hh])


@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "pad"])
def test_convex_residual_rnn_matches_loop(ln: bool, carry: str) -> None:
    steps, batch, hid, scale = 6, 3, 4, 0.3
    pre, h0, w = _params((steps, batch, hid), (batch, hid), (hid, hid))
    ln_hh = _gain(hid, pre.dtype) if ln else None
    mh = _carry(carry, steps, batch, hid, pre.dtype)
    opts = RecurrentOptions(residual=True, residual_scale=scale)
    out = rnn_recurrence(pre, h0, w, ln_hh, opts, mh)
    h, hs = h0, []
    for t in range(steps):
        a = _act(pre[t] + _ln(h @ w.t(), ln_hh), "tanh")
        h = _mix(mh, h, (1 - scale) * h + scale * a, t)
        hs.append(h)
    _compare([out], [torch.stack(hs)], [pre, h0, w, ln_hh])
    pre64, h64, w64 = (t.detach().double().requires_grad_() for t in (pre, h0, w))
    mask = torch.empty(steps, batch, hid, dtype=torch.float64).bernoulli_(0.4)
    assert torch.autograd.gradcheck(
        lambda *a: rnn_recurrence(*a, None, opts, mask), (pre64, h64, w64)
    )


def test_convex_residual_never_takes_the_triton_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Triton RNN kernel has no residual_scale: wherever Triton would run, the loop runs."""
    from rnnguard.nn.fused import dispatch

    monkeypatch.setattr(dispatch, "use_triton", lambda like: True)
    steps, batch, hid = 5, 2, 3
    pre, h0, w = _params((steps, batch, hid), (batch, hid), (hid, hid))
    opts = RecurrentOptions(residual=True, residual_scale=0.5)
    out = rnn_recurrence(pre, h0, w, None, opts)  # Triton (absent here) would raise or differ
    h, hs = h0, []
    for t in range(steps):
        h = 0.5 * h + 0.5 * torch.tanh(pre[t] + h @ w.t())
        hs.append(h)
    torch.testing.assert_close(out, torch.stack(hs))


@pytest.mark.parametrize("act", ["relu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("carry", ["none", "mask", "rate", "pad"])
def test_indrnn_matches_loop(act: str, carry: str) -> None:
    steps, batch, hid = 8, 3, 6
    pre, h0, u = _params((steps, batch, hid), (batch, hid), (hid,))
    mh = _carry(carry, steps, batch, hid, pre.dtype)
    out = indrnn_recurrence(pre, h0, u, RecurrentOptions(nonlinearity=act), mh)
    ref = loop_indrnn(pre, h0, u, act, mh)
    _compare([out], [ref], [pre, h0, u])


def test_gradcheck_float64_all_extras() -> None:
    dt = torch.float64
    steps, batch, hid = 4, 2, 3
    mask = torch.empty(steps, batch, hid, dtype=dt).bernoulli_(0.4)
    pre, h0, c0, w = _params(
        (steps, batch, 4 * hid), (batch, hid), (batch, hid), (4 * hid, hid), dtype=dt
    )
    g1, g2, cb = (
        _gain(4 * hid, dt),
        _gain(hid, dt),
        (0.1 * torch.randn(hid, dtype=dt)).requires_grad_(),
    )
    assert torch.autograd.gradcheck(
        lambda *a: lstm_recurrence(*a, mask, mask.flip(0)), (pre, h0, c0, w, g1, g2, cb)
    )
    pre3, w3, b3 = _params((steps, batch, 3 * hid), (3 * hid, hid), (3 * hid,), dtype=dt)
    g3 = _gain(3 * hid, dt)
    assert torch.autograd.gradcheck(lambda *a: gru_recurrence(*a, mask), (pre3, h0, w3, b3, g3))
    pre1, w1 = _params((steps, batch, hid), (hid, hid), dtype=dt)
    g4 = _gain(hid, dt)
    assert torch.autograd.gradcheck(
        lambda *a: rnn_recurrence(*a, RecurrentOptions(residual=True), mask), (pre1, h0, w1, g4)
    )
    u = _params((hid,), dtype=dt)[0]
    assert torch.autograd.gradcheck(
        lambda *a: indrnn_recurrence(*a, RecurrentOptions(), mask), (pre1, h0, u)
    )


def test_unused_outputs_and_frozen_inputs() -> None:
    steps, batch, hid = 5, 2, 3
    pre, h0, c0 = _params((steps, batch, 4 * hid), (batch, hid), (batch, hid))
    w = torch.randn(4 * hid, hid)  # frozen: no gradient wanted
    hs, _ = lstm_recurrence(pre, h0, c0, w)
    hs[-1].sum().backward()  # the final cell state is unused
    pre_ref = pre.detach().clone().requires_grad_()
    ref_hs, _ = loop_lstm(pre_ref, h0.detach(), c0.detach(), w)
    ref_hs[-1].sum().backward()
    torch.testing.assert_close(pre.grad, pre_ref.grad)
    assert w.grad is None


def test_recurrent_product_packed_and_plain_agree(monkeypatch) -> None:
    """The oneDNN-packed product (CPU float32) and the torch.mm fallback give the same numbers."""
    from rnnguard.nn.fused import _common

    w, x, d = torch.randn(12, 5), torch.randn(3, 5), torch.randn(3, 12)
    packed = _common.RecurrentProduct(w, 3)
    monkeypatch.setattr(_common, "_DNNL", None)
    plain = _common.RecurrentProduct(w, 3)
    assert plain.packed is None
    for prod in (packed, plain):
        torch.testing.assert_close(prod(x), x @ w.t())
        out = torch.empty(3, 12)
        torch.testing.assert_close(prod.into(x, out), x @ w.t())
        torch.testing.assert_close(prod.add_into(d, x, out), d + x @ w.t())
        target = torch.ones(3, 5)
        back = _common.RecurrentProduct(w.t(), 3)  # packed or plain, as the module now says
        torch.testing.assert_close(back.accumulate(target, d), 1 + d @ w)
    # a whole fused recurrence through the fallback matches the loop too
    pre, h0, c0, w4 = _params((6, 3, 8), (3, 2), (3, 2), (8, 2))
    hs, c_last = lstm_recurrence(pre, h0, c0, w4)
    ref_hs, ref_c = loop_lstm(pre, h0, c0, w4)
    torch.testing.assert_close(hs, ref_hs)
    torch.testing.assert_close(c_last, ref_c)
