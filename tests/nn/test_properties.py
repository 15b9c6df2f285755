"""Behavioural properties of the layers, regularisers, IndRNN bound, initialisers and step functions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnguard.nn as rn
from rnnguard.errors import ConfigError
from rnnguard.nn import functional as RF
from rnnguard.nn import init as rinit

pytestmark = pytest.mark.usefixtures("single_thread")

F_IN, H, T, B = 3, 5, 6, 4

EXTRAS = {
    "lstm": lambda **kw: rn.LSTM(F_IN, H, 2, layer_norm=True, zoneout=0.3, dropconnect=0.4, dropout=0.2, **kw),
    "gru": lambda **kw: rn.GRU(F_IN, H, 2, layer_norm=True, zoneout=0.3, dropconnect=0.4, dropout=0.2, **kw),
    "rnn": lambda **kw: rn.RNN(F_IN, H, 2, "leaky_relu", layer_norm=True, zoneout=0.3, dropconnect=0.4, residual=True, **kw),
    "indrnn": lambda **kw: rn.IndRNN(F_IN, H, 2, layer_norm=True, zoneout=0.3, dropconnect=0.4, max_length=T, residual=True, **kw),
}  # fmt: skip


def _out(m, x, seed=7):
    torch.manual_seed(seed)
    return m(x)[0]


@pytest.mark.parametrize("kind", sorted(EXTRAS))
@pytest.mark.parametrize("training", [True, False])
def test_outputs_are_causal(kind, training):
    m = EXTRAS[kind]().train(training)
    x = torch.randn(T, B, F_IN)
    x2 = x.clone()
    x2[3] += 1.0
    a, b = _out(m, x), _out(m, x2)
    torch.testing.assert_close(a[:3], b[:3], rtol=0, atol=0)
    assert not torch.allclose(a[3:], b[3:])


@pytest.mark.parametrize("kind", sorted(EXTRAS))
def test_eval_mode_is_deterministic(kind):
    m = EXTRAS[kind]().eval()
    x = torch.randn(T, B, F_IN)
    torch.manual_seed(1)
    a = m(x)[0]
    torch.manual_seed(2)
    torch.testing.assert_close(a, m(x)[0], rtol=0, atol=0)
    m.train()
    torch.manual_seed(1)
    a1 = m(x)[0]
    torch.manual_seed(2)
    assert not torch.allclose(a1, m(x)[0])  # training does draw masks


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: rn.LSTM(F_IN, H, 2, impl="reference", **kw),
        lambda **kw: rn.GRU(F_IN, H, impl="reference", **kw),
        lambda **kw: rn.RNN(F_IN, H, impl="reference", **kw),
        lambda **kw: rn.IndRNN(F_IN, H, **kw),
    ],
)
def test_zero_rates_equal_plain_layer(make):
    torch.manual_seed(0)
    plain = make()
    torch.manual_seed(0)
    zero = make(zoneout=0.0, dropconnect=0.0)
    x = torch.randn(T, B, F_IN)
    torch.testing.assert_close(plain.train()(x)[0], zero.train()(x)[0], rtol=0, atol=0)


# The reference loop must agree bit for bit; the fused path ("auto" with extras) to float rounding.
TOL = {"reference": 0.0, "auto": 1e-6}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("impl", sorted(TOL))
def test_dropconnect_leaves_step_zero_unchanged_from_zero_state(kind, impl):
    cls = {"lstm": rn.LSTM, "gru": rn.GRU, "rnn": rn.RNN}[kind]
    plain = cls(F_IN, H, impl="reference")
    dc = cls(F_IN, H, dropconnect=0.5, impl=impl)
    dc.load_state_dict(plain.state_dict())
    x = torch.randn(T, B, F_IN)
    a, b = plain.train()(x)[0], dc.train()(x)[0]
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=TOL[impl])
    assert not torch.allclose(a[1:], b[1:])


def test_dropconnect_is_functional_and_scaled():
    m = rn.LSTM(F_IN, H, dropconnect=0.5)
    before = m.weight_hh_l0.detach().clone()
    m.train()(torch.randn(T, B, F_IN))
    assert isinstance(m.weight_hh_l0, nn.Parameter)
    torch.testing.assert_close(m.weight_hh_l0.detach(), before, rtol=0, atol=0)
    w = torch.ones(400, 50)
    dropped = RF.drop_connect(w, 0.25, None, training=True)
    assert set(dropped.unique().tolist()) <= {0.0, torch.tensor(1.0 / 0.75).item()}
    assert abs(dropped.mean().item() - 1.0) < 0.05
    assert RF.drop_connect(w, 0.25, None, training=False) is w


def test_zoneout_train_keeps_previous_units_and_eval_uses_expectation():
    cell = rn.RNNCell(F_IN, 64, zoneout=0.5)
    x = torch.randn(8, F_IN)
    h0 = torch.randn(8, 64)
    ref = rn.RNNCell(F_IN, 64)
    ref.load_state_dict(cell.state_dict())
    cand = ref(x, h0)
    out = cell.train()(x, h0)
    kept = out == h0
    updated = out == cand
    assert (kept | updated).all()
    assert 0.3 < kept.float().mean().item() < 0.7
    out_eval = cell.eval()(x, h0)
    torch.testing.assert_close(out_eval, 0.5 * h0 + 0.5 * cand)


def test_lstm_zoneout_cell_rate_is_separate():
    m = rn.LSTM(F_IN, H, zoneout=0.2, zoneout_cell=0.6)
    assert m.zoneout == 0.2 and m.zoneout_cell == 0.6
    assert rn.LSTM(F_IN, H, zoneout=0.2).zoneout_cell == 0.2
    assert m.options.zoneout_cell == 0.6
    assert rn.GRU(F_IN, H, zoneout=0.2).options.zoneout_cell == 0.0  # no cell state


@pytest.mark.parametrize("impl", sorted(TOL))
def test_masks_follow_documented_order(impl):
    """Re-drawing the masks with sample_masks and running run_direction reproduces the layer."""
    m = rn.LSTM(
        F_IN, H, 2, bidirectional=True, dropout=0.3, zoneout=0.2, zoneout_cell=0.4,
        dropconnect=0.5, impl=impl,
    )  # fmt: skip
    x = torch.randn(T, B, F_IN)
    torch.manual_seed(11)
    out, (hn, cn) = m.train()(x)
    torch.manual_seed(11)
    masks = RF.sample_masks(
        m.spec, m.options, num_layers=2, num_directions=2, hidden_size=H, steps=T, batch=B,
        like=x, dropout=0.3,
    )  # fmt: skip
    layer_in = x
    finals = []
    for layer in range(2):
        outs = []
        for d in range(2):
            z = torch.zeros(B, H)
            o, final = RF.run_direction(
                m.spec, layer_in, RF.LSTMState(z, z), m.layer_params(layer, d),
                masks[layer].directions[d], m.options, True, reverse=d == 1,
            )  # fmt: skip
            outs.append(o)
            finals.append(final)
        layer_in = torch.cat(outs, -1)
        if masks[layer].dropout is not None:
            layer_in = layer_in * masks[layer].dropout
    tol = TOL[impl]
    torch.testing.assert_close(out, layer_in, rtol=0, atol=tol)
    torch.testing.assert_close(hn, torch.stack([f.h for f in finals]), rtol=0, atol=tol)
    torch.testing.assert_close(cn, torch.stack([f.c for f in finals]), rtol=0, atol=tol)
    assert masks[1].dropout is None and masks[0].dropout is not None
    assert masks[0].directions[0].zoneout_cell.shape == (T, B, H)


def _manual_ln_lstm(m, x):
    p = m.layer_params(0, 0)
    h = torch.zeros(B, H)
    c = torch.zeros(B, H)
    ln = torch.nn.functional.layer_norm
    outs = []
    for t in range(T):
        z = ln(x[t] @ p.weight_ih.T, (4 * H,), p.ln_ih) + ln(h @ p.weight_hh.T, (4 * H,), p.ln_hh)
        z = z + p.bias_ih + p.bias_hh
        i, f, g, o = z.chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * ln(c, (H,), p.ln_c_weight, p.ln_c_bias).tanh()
        outs.append(h)
    return torch.stack(outs)


def test_layer_norm_lstm_matches_written_equations():
    m = rn.LSTM(F_IN, H, layer_norm=True)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("layer_norm"):
                p.uniform_(0.5, 1.5)
    x = torch.randn(T, B, F_IN)
    torch.testing.assert_close(m(x)[0], _manual_ln_lstm(m, x))


def test_residual_and_leaky_relu_rnn_equations():
    m = rn.RNN(F_IN, H, nonlinearity="leaky_relu", residual=True)
    x = torch.randn(T, B, F_IN)
    h = torch.zeros(B, H)
    outs = []
    for t in range(T):
        pre = x[t] @ m.weight_ih_l0.T + m.bias_ih_l0 + h @ m.weight_hh_l0.T + m.bias_hh_l0
        h = h + torch.nn.functional.leaky_relu(pre, 0.01)
        outs.append(h)
    torch.testing.assert_close(m(x)[0], torch.stack(outs))


def test_indrnn_equation_and_residual_between_layers():
    m = rn.IndRNN(F_IN, H)
    x = torch.randn(T, B, F_IN)
    h = torch.zeros(B, H)
    outs = []
    for t in range(T):
        h = torch.relu(x[t] @ m.weight_ih_l0.T + m.bias_ih_l0 + m.weight_hh_l0 * h)
        outs.append(h)
    torch.testing.assert_close(m(x)[0], torch.stack(outs))
    deep = rn.IndRNN(H, H, 2, residual=True)
    plain = rn.IndRNN(H, H, 2)
    plain.load_state_dict(deep.state_dict())
    x = torch.randn(T, B, H)
    y1 = plain(x)[0]
    # residual adds each layer's input: layer 1 sees layer0(x) + x, output is layer1(...) + (...)
    single0 = rn.IndRNN(H, H)
    single1 = rn.IndRNN(H, H)
    sd = deep.state_dict()
    single0.load_state_dict({k.replace("_l0", "_l0"): v for k, v in sd.items() if "_l0" in k})
    single1.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if "_l1" in k})
    mid = single0(x)[0] + x
    torch.testing.assert_close(deep(x)[0], single1(mid)[0] + mid)
    assert not torch.allclose(y1, deep(x)[0])


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_indrnn_bound_holds_after_huge_steps(opt):
    m = rn.IndRNN(F_IN, H, 2, max_length=50, bidirectional=True)
    cell = rn.IndRNNCell(F_IN, H, recurrent_max=0.7)
    bound = 2.0 ** (1.0 / 50)
    params = list(m.parameters()) + list(cell.parameters())
    o = torch.optim.SGD(params, lr=1e6) if opt == "sgd" else torch.optim.Adam(params, lr=10.0)
    x = torch.randn(T, B, F_IN)
    for _ in range(3):
        o.zero_grad()
        loss = m(x)[0].pow(2).sum() - 1e3 * sum(
            p.sum() for n, p in m.named_parameters() if "weight_hh" in n
        )
        loss = loss + cell(x[0])[0].sum() - 1e3 * cell.weight_hh.sum()
        loss.backward()
        o.step()
        for name, p in m.named_parameters():
            if name.startswith("weight_hh"):
                assert p.abs().max().item() <= bound + 1e-6, name
        assert cell.weight_hh.abs().max().item() <= 0.7 + 1e-6
    assert m.weight_hh_l0.abs().max().item() == pytest.approx(bound)  # pushed to the bound


def test_indrnn_paper_init():
    m = rn.IndRNN(F_IN, 200)
    u = m.weight_hh_l0
    assert u.min() >= 0 and u.max() <= 1 and u.std() > 0.2
    assert m.bias_ih_l0.abs().max() == 0
    small = rn.IndRNN(F_IN, 200, max_length=1000)
    assert small.weight_hh_l0.max().item() <= 2 ** (1 / 1000) + 1e-7


def _blocks_orthogonal(w, gates):
    for blk in w.detach().chunk(gates, 0):
        torch.testing.assert_close(blk.T @ blk, torch.eye(blk.shape[1]), atol=1e-5, rtol=0)


def test_per_gate_orthogonal_init():
    w = torch.empty(4 * 6, 6)
    rinit.orthogonal_gates_(w, 4)
    _blocks_orthogonal(w, 4)
    m = rn.LSTM(F_IN, 6, 2, bidirectional=True, init="safe")
    for name, p in m.named_parameters():
        if name.startswith("weight_hh"):
            _blocks_orthogonal(p, 4)
    g = rn.GRU(F_IN, 6, weight_norm=True)
    rinit.apply(g, "safe")
    _blocks_orthogonal(g.weight_hh_l0, 3)
    t = nn.LSTM(F_IN, 6)
    rinit.apply(t, "safe")
    _blocks_orthogonal(t.weight_hh_l0, 4)
    # Not orthogonal as a whole stacked matrix (that would need 4H <= H rows).
    assert not torch.allclose(t.weight_hh_l0 @ t.weight_hh_l0.T, torch.eye(24), atol=1e-3)


@pytest.mark.parametrize("value", [-1.0, 0.0, 2.5])
def test_total_forget_bias(value):
    for m in (
        rn.LSTM(F_IN, H, 2, bidirectional=True, forget_bias=value),
        rn.LSTMCell(F_IN, H, forget_bias=value),
    ):
        for u in m.recurrent_units():
            total = getattr(m, u.bias_ih) + getattr(m, u.bias_hh)
            torch.testing.assert_close(total[H : 2 * H], torch.full((H,), value))
    t = nn.LSTM(F_IN, H)
    rinit.forget_bias_(t, value)
    torch.testing.assert_close((t.bias_ih_l0 + t.bias_hh_l0)[H : 2 * H], torch.full((H,), value))
    g = rn.GRU(F_IN, H, forget_bias=value)
    torch.testing.assert_close((g.bias_ih_l0 + g.bias_hh_l0)[H : 2 * H], torch.full((H,), value))


def test_chrono_init():
    m = rn.LSTM(F_IN, 100, init=rinit.scheme("chrono", t_max=50))
    bf = (m.bias_ih_l0 + m.bias_hh_l0)[100:200]
    bi = (m.bias_ih_l0 + m.bias_hh_l0)[:100]
    assert bf.min() >= 0 and bf.max() <= torch.log(torch.tensor(49.0)) + 1e-6
    assert bf.std() > 0.3
    torch.testing.assert_close(bi, -bf)


def test_init_callable_and_recipes_listed():
    seen = []
    m = rn.GRU(F_IN, H, init=lambda mod: seen.append(mod))
    assert seen == [m]
    assert {"torch", "safe", "chrono", "irnn"} <= set(rinit.list_init_schemes())
    r = rn.RNN(F_IN, H, nonlinearity="relu", init="irnn")
    torch.testing.assert_close(r.weight_hh_l0.detach(), torch.eye(H))


def test_weight_norm_uses_torch_parametrization():
    torch.manual_seed(0)
    plain = rn.LSTM(F_IN, H, impl="reference")
    torch.manual_seed(0)
    wn = rn.LSTM(F_IN, H, weight_norm=True)
    names = dict(wn.named_parameters())
    assert "parametrizations.weight_hh_l0.original0" in names
    x = torch.randn(T, B, F_IN)
    torch.testing.assert_close(wn(x)[0], plain(x)[0])  # weight norm starts as the same function
    wn(x)[0].sum().backward()
    assert names["parametrizations.weight_hh_l0.original0"].grad is not None


@pytest.mark.parametrize("factory", [lambda: nn.LSTM(F_IN, H, 2, bidirectional=True), lambda: rn.LSTM(F_IN, H, 2, bidirectional=True, layer_norm=True, zoneout=0.3), lambda: nn.GRU(F_IN, H, 2), lambda: rn.IndRNN(F_IN, H, 2, bidirectional=True), lambda: nn.RNN(F_IN, H, nonlinearity="relu")])  # fmt: skip
def test_layer_step_function_reproduces_layer(factory):
    m = factory().eval()
    dirs = 2 if m.bidirectional else 1
    x = torch.randn(T, B, F_IN)
    with torch.no_grad():
        full = m(x)[0]
        layer_in = x
        for layer in range(m.num_layers):
            outs = []
            for d in range(dirs):
                sf = rn.layer_step_function(m, layer, d)
                assert sf.input_size == layer_in.shape[-1] and sf.hidden_size == H
                state = sf.initial_state(B)
                seq: list[torch.Tensor] = [torch.empty(0)] * T
                for t in range(T - 1, -1, -1) if d else range(T):
                    state = sf.step(layer_in[t], state)
                    seq[t] = sf.output(state)
                outs.append(torch.stack(seq))
            layer_in = torch.cat(outs, -1)
    torch.testing.assert_close(layer_in, full)


def test_layer_step_function_gradients_reach_parameters():
    m = rn.GRU(F_IN, H)
    sf = rn.layer_step_function(m)
    s = sf.step(torch.randn(B, F_IN), torch.randn(B, H))  # a bare tensor is taken as HiddenState
    sf.output(s).sum().backward()
    assert m.weight_hh_l0.grad is not None and m.weight_hh_l0.grad.abs().sum() > 0


def test_registry_contract():
    names = set(rn.list_layers())
    assert {"rnn", "lstm", "gru", "indrnn"} <= names
    for name in ("rnn", "lstm", "gru", "indrnn"):
        layer = rn.create_layer(
            name, input_size=F_IN, hidden_size=H, batch_first=True, bidirectional=True
        )
        out, _ = layer(torch.randn(B, T, F_IN))
        assert out.shape == (B, T, layer.output_size) and layer.output_size == 2 * H
        assert rn.list_layers()[name].description


def test_cell_contract():
    for cell in (
        rn.LSTMCell(F_IN, H),
        rn.GRUCell(F_IN, H),
        rn.RNNCell(F_IN, H),
        rn.IndRNNCell(F_IN, H),
    ):
        s = cell.initial_state(B)
        assert isinstance(s, (RF.LSTMState, RF.HiddenState))
        assert all(t.shape == (B, H) for t in s)
        out, new = cell.step(torch.randn(B, F_IN), s)
        assert out.shape == (B, H) and type(new) is type(s)
        out2, _ = cell.step(torch.randn(B, F_IN))  # state defaults to zeros
        assert out2.shape == (B, H)


def test_cell_unrolled_matches_layer_with_extras_in_eval():
    layer = rn.LSTM(F_IN, H, layer_norm=True, zoneout=0.3, zoneout_cell=0.1, dropconnect=0.2).eval()
    cell = rn.LSTMCell(
        F_IN, H, layer_norm=True, zoneout=0.3, zoneout_cell=0.1, dropconnect=0.2
    ).eval()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
    x = torch.randn(T, B, F_IN)
    s = cell.initial_state(B)
    outs = []
    for t in range(T):
        o, s = cell.step(x[t], s)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs), layer(x)[0])


def test_extra_repr_and_flatten_parameters():
    m = rn.LSTM(F_IN, H, 2, layer_norm=True, zoneout=0.1)
    m.flatten_parameters()
    text = repr(m)
    assert "layer_norm=True" in text and "zoneout=0.1" in text and "num_layers=2" in text
    assert len(m.all_weights) == 2 and len(m.all_weights[0]) == 4


def test_indrnn_copy_keeps_its_bound():
    import copy

    m = copy.deepcopy(rn.IndRNN(F_IN, H, recurrent_max=0.5))
    opt = torch.optim.SGD(m.parameters(), lr=1e6)
    m(torch.randn(T, B, F_IN))[0].sum().mul(-1).backward()
    opt.step()
    assert m.weight_hh_l0.abs().max().item() <= 0.5 + 1e-6


@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU, rn.RNN, rn.IndRNN])
def test_factory_kwargs_and_non_contiguous_input(cls):
    m = cls(F_IN, H, 2, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    x = torch.randn(F_IN, B, T, dtype=torch.float64).permute(2, 1, 0)  # (T, B, I), non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(m(x)[0], m(x.contiguous())[0])


def test_weight_normed_layer_loads_a_torch_state_dict():
    ref = nn.GRU(F_IN, H, 2, bidirectional=True)
    wn = rn.GRU(F_IN, H, 2, bidirectional=True, weight_norm=True)
    wn.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, F_IN)
    torch.testing.assert_close(wn(x)[0], ref(x)[0])
    wn.load_state_dict(wn.state_dict())  # its own (parametrized) keys still load


@pytest.mark.parametrize("init", ["torch", "safe", "irnn", None])
def test_every_init_scheme_respects_the_indrnn_bound(init):
    for m in (rn.IndRNN(F_IN, 64, 2, recurrent_max=0.1, init=init), rn.IndRNNCell(F_IN, 64, recurrent_max=0.1, init=init)):  # fmt: skip
        for name, p in m.named_parameters():
            if name.startswith("weight_hh"):
                assert p.abs().max().item() <= 0.1 + 1e-7, (init, name)
                assert p.abs().max().item() > 0.05  # drawn, then clamped, not zeroed


@pytest.mark.parametrize(
    "cell",
    [
        nn.LSTMCell(F_IN, H),
        nn.GRUCell(F_IN, H, bias=False),
        nn.RNNCell(F_IN, H, nonlinearity="relu"),
        rn.LSTMCell(F_IN, H, layer_norm=True),
    ],
    ids=["torch-lstm", "torch-gru-nobias", "torch-rnn-relu", "rnnguard-ln-lstm"],
)
def test_layer_step_function_of_a_cell(cell):
    sf = rn.layer_step_function(cell)
    assert (sf.input_size, sf.hidden_size) == (F_IN, H)
    x = torch.randn(B, F_IN)
    state = type(sf.initial_state(B))(*(torch.randn(B, H) for _ in sf.initial_state(B)))
    got = sf.step(x, state)
    if isinstance(cell, rn.LSTMCell):
        want = cell.eval().step(x, state)[1]
    else:
        out = cell(x, tuple(state) if isinstance(cell, nn.LSTMCell) else state.h)
        want = out if isinstance(out, tuple) else (out,)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    with pytest.raises(ConfigError, match=r"layer must be an int in \[0, 1\)"):
        rn.layer_step_function(cell, layer=1)
