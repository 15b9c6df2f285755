"""Zoneout and DropConnect measured through the public layers, against docs/equations.md.

Every family, on the reference loop and on the fused path (native kernels and pure PyTorch):

- the fraction of states zoneout keeps (h, and c for the LSTM) and of recurrent weights
  DropConnect keeps match the configured rates, within a binomial bound, at rates other than 0.5
  (where keeping with p and with 1 - p would look alike);
- eval mode uses the expectation and draws nothing;
- zoneout masks are fresh per step, batch element, unit and call; a DropConnect mask is one per
  call and direction, shared by every step (and batch element).

The layers are set up so that the kept values can be read off the outputs: zoneout runs with a
zero recurrent weight (the candidate state then depends on the input alone and is computed here
from the written equations), DropConnect with zero input weights and one-hot initial states (the
first output is then a column of the masked recurrent matrix).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

RATES = (0.1, 0.3, 0.8)
KINDS = ("lstm", "gru", "rnn", "indrnn")
Z = 5.0  # bounds are Z binomial standard deviations wide


def assert_rate(hits: Tensor, p: float, what: str) -> None:
    """The fraction of true entries of ``hits`` is ``p`` within Z binomial standard deviations."""
    n = hits.numel()
    sd = math.sqrt(p * (1 - p) / n)
    got = hits.float().mean().item()
    assert abs(got - p) <= Z * sd, (
        f"{what}: measured {got:.4f} over {n}, expected {p} +- {Z * sd:.4f}"
    )


def agreement(p: float) -> float:
    """Probability that two independent Bernoulli(p) draws agree."""
    return p * p + (1 - p) * (1 - p)


def _make(kind: str, impl: str, hidden: int, dtype: torch.dtype, nonlinearity: str,
          **extras: float | bool) -> rn.RNN | rn.LSTM | rn.GRU | rn.IndRNN:  # fmt: skip
    kw = dict(impl=impl, dtype=dtype, **extras)
    if kind == "lstm":
        return rn.LSTM(4, hidden, **kw)
    if kind == "gru":
        return rn.GRU(4, hidden, **kw)
    if kind == "rnn":
        return rn.RNN(4, hidden, nonlinearity=nonlinearity, **kw)
    return rn.IndRNN(4, hidden, nonlinearity=nonlinearity, **kw)


def _gates(m: torch.nn.Module, name: str) -> list[Tensor]:
    """The gate blocks (torch.nn order) of parameter ``name``."""
    t = getattr(m, name)
    return list(t.detach().chunk(t.shape[0] // m.hidden_size, 0))


# ----------------------------------------------------------------------------------- zoneout


def _memoryless(m: torch.nn.Module) -> None:
    """Zero the recurrence so the candidate state depends on the input alone.

    The LSTM's forget gate and the GRU's update gate are shut (bias -30, sigmoid ~1e-13), since
    they would carry the previous state into the candidate.
    """
    with torch.no_grad():
        m.weight_hh_l0.zero_()
        if m.kind == "lstm":
            _gates(m, "bias_ih_l0")[1].fill_(-30.0)
            _gates(m, "bias_hh_l0")[1].zero_()
        if m.kind == "gru":
            _gates(m, "bias_ih_l0")[1].fill_(-30.0)
            _gates(m, "bias_hh_l0")[1].zero_()


def _candidates(m: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Candidate h~ (T, B, H) (and c~ for the LSTM) of a memoryless layer, from the equations."""
    w = m.weight_ih_l0.detach()
    a = x @ w.T + m.bias_ih_l0.detach()
    if m.kind == "indrnn":
        return torch.tanh(a), None
    a = a + m.bias_hh_l0.detach()  # W_hh h = 0: only its bias remains
    if m.kind == "rnn":
        return torch.tanh(a), None
    if m.kind == "lstm":
        i, _, g, o = a.chunk(4, -1)
        c = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    # GRU: a (T, B, 3H) already holds a_r + b_hr; the candidate's b_hn sits behind the reset gate.
    a_r, _, _ = a.chunk(3, -1)
    a_n = (x @ w.T + m.bias_ih_l0.detach()).chunk(3, -1)[2]
    b_hn = _gates(m, "bias_hh_l0")[2]
    return torch.tanh(a_n + torch.sigmoid(a_r) * b_hn), None


def _which(out: Tensor, prev: Tensor, cand: Tensor) -> Tensor:
    """True where ``out`` is the previous value, False where it is the candidate.

    Every entry must be one of the two (zoneout selects, it does not blend in training), and the
    two must be told apart (they are, for continuous random inputs, bar a few ties).
    """
    d_prev, d_cand = (out - prev).abs(), (out - cand).abs()
    assert torch.minimum(d_prev, d_cand).max().item() < 1e-5, "an output is neither h_{t-1} nor h~"
    ties = (prev - cand).abs() < 1e-5
    assert ties.float().mean().item() < 1e-3
    return d_prev < d_cand


def _zoneout_layer(kind: str, impl: str, p: float, p_c: float | None = None,
                   hidden: int = 32) -> torch.nn.Module:  # fmt: skip
    extras: dict = {"zoneout": p}
    if p_c is not None:
        extras["zoneout_cell"] = p_c
    m = _make(kind, impl, hidden, torch.float32, "tanh", **extras)
    _memoryless(m)
    return m


def _state0(kind: str, batch: int, hidden: int) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(3)
    h0 = torch.randn(1, batch, hidden, generator=g).tanh()
    if kind == "lstm":
        return h0, (h0, torch.randn(1, batch, hidden, generator=g))
    return h0, h0


def _kept_h(m: torch.nn.Module, x: Tensor, hx) -> Tensor:  # type: ignore[no-untyped-def]
    """Which (t, b, unit) entries of h kept h_{t-1}, from one training-mode call."""
    out, _ = m.train()(x, hx)
    h0 = hx[0] if isinstance(hx, tuple) else hx
    cand, _ = _candidates(m, x)
    prev = torch.cat([h0, out[:-1]], 0)
    return _which(out, prev, cand)


@pytest.mark.parametrize("kind", KINDS)
def test_zoneout_keeps_h_at_the_configured_rate(kind: str, layer_impl: str) -> None:
    T, B, H = 10, 64, 32
    x = torch.randn(T, B, 4)
    _, hx = _state0(kind, B, H)
    for p in RATES:
        kept = _kept_h(_zoneout_layer(kind, layer_impl, p, hidden=H), x, hx)
        assert_rate(kept, p, f"{kind} zoneout={p}: fraction of h kept")


@pytest.mark.parametrize(("p_h", "p_c"), [(0.1, 0.8), (0.8, 0.3)])
def test_lstm_zoneout_keeps_h_and_c_at_their_own_rates(p_h: float, p_c: float,
                                                         layer_impl: str) -> None:  # fmt: skip
    T, B, H = 6, 256, 32
    m = _zoneout_layer("lstm", layer_impl, p_h, p_c, hidden=H)
    x = torch.randn(T, B, 4)
    h0, (_, c0) = _state0("lstm", B, H)
    out, (_, c_n) = m.train()(x, (h0, c0))
    _, c_cand = _candidates(m, x)
    kept_h = _which(out, torch.cat([h0, out[:-1]], 0), _candidates(m, x)[0])
    assert_rate(kept_h, p_h, f"LSTM zoneout={p_h}: fraction of h kept")
    # c is seen only at the end: c_n is the candidate of the last step whose c was not kept
    # (or c_0). Steps back from the end are geometric: k with probability p_c**k (1 - p_c).
    options = torch.cat([c0, c_cand], 0)  # index 0: c_0, index t + 1: c~_t
    dist = (options - c_n).abs()
    assert dist.min(0).values.max().item() < 1e-5, "c_n is not any step's candidate"
    back = T - dist.argmin(0)  # 0: updated at the last step
    assert_rate(back == 0, 1 - p_c, f"LSTM zoneout_cell={p_c}: c updated at the last step")
    assert_rate(
        back == 1, p_c * (1 - p_c), f"LSTM zoneout_cell={p_c}: c last updated one step back"
    )
    # The h and c masks are independent draws.
    both = kept_h[-1] & (back > 0)
    assert_rate(both, p_h * p_c, "h and c both kept at the last step")


@pytest.mark.parametrize("kind", KINDS)
def test_zoneout_masks_are_fresh_per_step_row_unit_and_call(kind: str, layer_impl: str) -> None:
    T, B, H, p = 8, 64, 32, 0.3
    m = _zoneout_layer(kind, layer_impl, p, hidden=H)
    x = torch.randn(T, B, 4)
    _, hx = _state0(kind, B, H)
    kept = _kept_h(m, x, hx)
    again = _kept_h(m, x, hx)
    want = agreement(p)
    assert_rate(kept[1:] == kept[:-1], want, "same mask decision at consecutive steps")
    assert_rate(kept[:, 1:] == kept[:, :-1], want, "same mask decision in neighbouring rows")
    assert_rate(kept[..., 1:] == kept[..., :-1], want, "same mask decision in neighbouring units")
    assert_rate(kept == again, want, "same mask decision in two calls")


@pytest.mark.parametrize("kind", KINDS)
def test_zoneout_eval_uses_the_expectation_and_draws_nothing(kind: str, layer_impl: str) -> None:
    T, B, H, p, p_c = 7, 5, 16, 0.3, 0.8
    m = _zoneout_layer(kind, layer_impl, p, p_c if kind == "lstm" else None, hidden=H).eval()
    x = torch.randn(T, B, 4)
    h0, hx = _state0(kind, B, H)
    rng = torch.get_rng_state()
    out, hn = m(x, hx)
    assert torch.equal(rng, torch.get_rng_state()), "eval mode consumed random numbers"
    cand, c_cand = _candidates(m, x)
    h, want = h0[0], []
    for t in range(T):
        h = p * h + (1 - p) * cand[t]
        want.append(h)
    torch.testing.assert_close(out, torch.stack(want), atol=1e-5, rtol=1e-5)
    if kind == "lstm":
        assert c_cand is not None
        c = hx[1][0]
        for t in range(T):
            c = p_c * c + (1 - p_c) * c_cand[t]
        torch.testing.assert_close(hn[1][0], c, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- DropConnect

# The recurrent block whose masked columns one step exposes: (block index, blocks).
_SHOWN = {"rnn": 0, "gru": 2, "lstm": 2}


def _exposing(kind: str, impl: str, p: float, hidden: int, bidirectional: bool = False):  # type: ignore[no-untyped-def]
    """A float64 layer whose first step from one-hot states shows its masked recurrent weights.

    Input weights and biases are zero, one recurrent block (RNN: all of W_hh; GRU: the candidate
    block n; LSTM: the cell block g) holds positive weights, and the gates around it are pinned
    open (sigmoid(30)) or shut. IndRNN's recurrent vector shows with h_0 = 1.
    """
    extra = {"bidirectional": bidirectional} if kind != "indrnn" else {}
    act = "relu"
    m = _make(kind, impl, hidden, torch.float64, act, dropconnect=p, **extra)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, t in m.named_parameters():
            if name.startswith("weight_ih") or name.startswith("bias"):
                t.zero_()
            elif name.startswith("weight_hh"):
                t.zero_()
                if kind == "indrnn":
                    t.copy_(0.2 + 0.7 * torch.rand(t.shape, generator=g, dtype=t.dtype))
                else:
                    block = t.chunk(t.shape[0] // hidden, 0)[_SHOWN[kind]]
                    block.copy_(0.1 + 0.4 * torch.rand(block.shape, generator=g, dtype=t.dtype))
            if kind == "lstm" and name.startswith("bias_ih"):
                blocks = t.chunk(4, 0)
                blocks[0].fill_(30.0)  # input gate open
                blocks[3].fill_(30.0)  # output gate open
            if kind == "gru" and name.startswith("bias_ih"):
                blocks = t.chunk(3, 0)
                blocks[0].fill_(30.0)  # reset gate open: n sees W_hn h in full
                blocks[1].fill_(-30.0)  # update gate shut: h = n
    return m


def _shown_weights(m, dirs: int, h0: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:  # type: ignore[no-untyped-def]
    """One training step from one-hot states: the masked recurrent block of each direction."""
    hidden = m.hidden_size
    if m.kind == "indrnn":
        x = torch.zeros(1, 2, 4, dtype=torch.float64)
        out, _ = m(x, torch.ones(1, 2, hidden, dtype=torch.float64))
        assert torch.equal(out[0, 0], out[0, 1]), "DropConnect mask differs across batch rows"
        return x, [out[0, 0]]
    x = torch.zeros(1, hidden, 4, dtype=torch.float64)
    eye = torch.eye(hidden, dtype=torch.float64).expand(dirs, hidden, hidden).contiguous()
    hx = (eye, torch.zeros_like(eye)) if m.kind == "lstm" else eye
    out, hn = m(x, hx)
    shown = []
    for d in range(dirs):
        o = out[0, :, d * hidden : (d + 1) * hidden]  # row b: the block's column b
        if m.kind == "rnn":
            w = o.T
        elif m.kind == "gru":
            w = torch.atanh(o).T
        else:  # LSTM: c_1 = i * tanh(W~_g e_b) with i = 1
            w = torch.atanh(hn[1][d]).T
        shown.append(w)
    return x, shown


def _true_block(m, d: int = 0) -> Tensor:  # type: ignore[no-untyped-def]
    suffix = "_l0" + ("_reverse" if d else "")
    w = getattr(m, "weight_hh" + suffix).detach()
    if m.kind == "indrnn":
        return w
    return w.chunk(w.shape[0] // m.hidden_size, 0)[_SHOWN[m.kind]]


def _kept_weights(m, dirs: int) -> list[Tensor]:  # type: ignore[no-untyped-def]
    """Which recurrent weights one training call kept, checking kept ones are scaled by 1/(1-p)."""
    _, shown = _shown_weights(m.train(), dirs)
    kept = []
    for d, w in enumerate(shown):
        k = w.abs() > 1e-9
        scaled = _true_block(m, d) / (1 - m.dropconnect)
        torch.testing.assert_close(w[k], scaled[k], rtol=1e-7, atol=1e-9)
        kept.append(k)
    return kept


_HIDDEN = {"indrnn": 4096, "lstm": 64, "gru": 64, "rnn": 64}


@pytest.mark.parametrize("kind", KINDS)
def test_dropconnect_keeps_weights_at_the_configured_rate(kind: str, layer_impl: str) -> None:
    dirs = 1 if kind == "indrnn" else 2
    for p in RATES:
        m = _exposing(kind, layer_impl, p, _HIDDEN[kind], bidirectional=dirs == 2)
        first = _kept_weights(m, dirs)
        second = _kept_weights(m, dirs)
        for d in range(dirs):
            assert_rate(first[d], 1 - p, f"{kind} dropconnect={p}: fraction of weights kept")
            assert_rate(first[d] == second[d], agreement(1 - p), "same weight kept in two calls")
        if dirs == 2:
            assert_rate(
                first[0] == first[1], agreement(1 - p), "same weight kept in both directions"
            )


@pytest.mark.parametrize("kind", KINDS)
def test_dropconnect_mask_is_shared_by_every_step_of_a_call(kind: str, layer_impl: str) -> None:
    """Step 2 recomputed with the mask step 1 showed gives the layer's step 2."""
    hidden, p = 16, 0.3
    m = _exposing(kind, layer_impl, p, hidden).train()
    if kind == "indrnn":
        out, _ = m(
            torch.zeros(2, 1, 4, dtype=torch.float64), torch.ones(1, 1, hidden, dtype=torch.float64)
        )
        u = out[0, 0]
        torch.testing.assert_close(out[1, 0], torch.relu(u * out[0, 0]))
        return
    x = torch.zeros(2, hidden, 4, dtype=torch.float64)
    eye = torch.eye(hidden, dtype=torch.float64).unsqueeze(0)
    hx = (eye, torch.zeros_like(eye)) if kind == "lstm" else eye
    out, _ = m(x, hx)
    h1 = out[0]
    if kind == "rnn":
        w = h1.T
        torch.testing.assert_close(out[1], torch.relu(h1 @ w.T))
    elif kind == "gru":
        w = torch.atanh(h1).T
        torch.testing.assert_close(out[1], torch.tanh(h1 @ w.T))
    else:  # c_1 = tanh(W~_g e_b), h_1 = tanh(c_1); step 2: f = sigmoid(0) = 1/2, i = o = 1
        c1 = torch.atanh(h1)
        w = torch.atanh(c1).T
        c2 = 0.5 * c1 + torch.tanh(h1 @ w.T)
        torch.testing.assert_close(out[1], torch.tanh(c2))
    assert ((w == 0).float().mean() - p).abs() < 0.2  # the step really was masked


@pytest.mark.parametrize("kind", KINDS)
def test_dropconnect_eval_uses_the_weights_and_draws_nothing(kind: str, layer_impl: str) -> None:
    m = _exposing(kind, layer_impl, 0.8, 16).eval()
    rng = torch.get_rng_state()
    _, shown = _shown_weights(m, 1)
    assert torch.equal(rng, torch.get_rng_state()), "eval mode consumed random numbers"
    torch.testing.assert_close(shown[0], _true_block(m), rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- dropout between layers


@pytest.mark.parametrize("p", RATES)
def test_dropout_between_layers_keeps_at_the_configured_rate_and_scales(
    p: float, layer_impl: str
) -> None:
    """Layer 1 passes its input through (identity input weights, no recurrence, ReLU on positive
    values), so its output divided by layer 0's shows the dropout mask between them."""
    T, B, H = 8, 64, 32
    m = rn.RNN(4, H, 2, nonlinearity="relu", dropout=p, impl=layer_impl, dtype=torch.float64)
    with torch.no_grad():
        for name, t in m.named_parameters():
            if name.startswith(("weight_hh", "bias")):
                t.zero_()
        m.weight_ih_l0.abs_().add_(0.1)
        m.weight_ih_l1.copy_(torch.eye(H))
    x = torch.rand(T, B, 4, dtype=torch.float64) + 0.1
    first = torch.relu(x @ m.weight_ih_l0.detach().T)  # layer 0's output: no recurrence
    ratio = m.train()(x)[0] / first
    kept = ratio > 0
    assert_rate(kept, 1 - p, f"dropout={p}: fraction of layer-0 outputs kept")
    torch.testing.assert_close(ratio[kept], torch.full_like(ratio[kept], 1 / (1 - p)))
    torch.testing.assert_close(m.eval()(x)[0], first)  # eval: no dropout
