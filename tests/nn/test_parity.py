"""With no extras, rnnguard layers and cells give torch.nn's numbers: outputs, states, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = {"rnn": (rn.RNN, nn.RNN), "lstm": (rn.LSTM, nn.LSTM), "gru": (rn.GRU, nn.GRU)}
F_IN, H, T, B = 3, 4, 5, 3


def _pair(kind: str, impl: str = "reference", **kw):
    ours_cls, torch_cls = KINDS[kind]
    ref = torch_cls(F_IN, H, **kw)
    ours = ours_cls(F_IN, H, impl=impl, **kw)
    ours.load_state_dict(ref.state_dict())  # strict: same parameter names and shapes
    return ours, ref


def _states(out):
    return out[1] if isinstance(out[1], tuple) else (out[1],)


def _hx(kind: str, n: int, batch: int | None):
    shape = (n, batch, H) if batch is not None else (n, H)
    h = torch.randn(*shape)
    return (h, torch.randn(*shape)) if kind == "lstm" else h


def _compare(ours, ref, run, atol=1e-5):
    a, b = run(ours), run(ref)
    oa = a[0].data if hasattr(a[0], "batch_sizes") else a[0]
    ob = b[0].data if hasattr(b[0], "batch_sizes") else b[0]
    torch.testing.assert_close(oa, ob, atol=atol, rtol=1e-5)
    for sa, sb in zip(_states(a), _states(b)):
        torch.testing.assert_close(sa, sb, atol=atol, rtol=1e-5)
    loss_a = (oa * torch.linspace(-1, 1, oa.numel()).view_as(oa)).sum() + sum(
        s.sum() for s in _states(a)
    )
    loss_b = (ob * torch.linspace(-1, 1, ob.numel()).view_as(ob)).sum() + sum(
        s.sum() for s in _states(b)
    )
    loss_a.backward()
    loss_b.backward()
    pa, pb = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        torch.testing.assert_close(pa[name].grad, pb[name].grad, atol=atol, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_parity_batched(kind, num_layers, bidirectional, batch_first):
    ours, ref = _pair(
        kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
    )
    x = torch.randn((B, T, F_IN) if batch_first else (T, B, F_IN), requires_grad=True)
    hx = _hx(kind, num_layers * (1 + bidirectional), B)
    _compare(ours, ref, lambda m: m(x))
    _compare(ours, ref, lambda m: m(x, hx))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("with_state", [False, True])
def test_parity_packed_mixed_lengths(kind, impl, with_state):
    ours, ref = _pair(kind, impl, num_layers=2, bidirectional=True)
    seqs = [torch.randn(n, F_IN) for n in (3, 6, 1, 6, 4)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    hx = _hx(kind, 4, len(seqs)) if with_state else None
    _compare(ours, ref, lambda m: m(packed, hx))
    out, _ = ours(packed, hx)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.unsorted_indices, packed.unsorted_indices)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_parity_packed_sorted_without_indices(kind):
    ours, ref = _pair(kind)
    packed = pack_sequence([torch.randn(n, F_IN) for n in (6, 4, 2)], enforce_sorted=True)
    _compare(ours, ref, lambda m: m(packed))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_parity_unbatched(kind, batch_first):
    ours, ref = _pair(kind, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(T, F_IN)
    _compare(ours, ref, lambda m: m(x))
    hx = _hx(kind, 4, None)
    _compare(ours, ref, lambda m: m(x, hx))
    assert ours(x)[0].shape == (T, 2 * H)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_auto_impl_matches_torch_in_training_with_dropout(kind):
    ours, ref = _pair(kind, "auto", num_layers=2, dropout=0.5)
    x = torch.randn(T, B, F_IN)
    torch.manual_seed(3)
    a = ours(x)[0]
    torch.manual_seed(3)
    b = ref(x)[0]
    torch.testing.assert_close(a, b)


def test_relu_rnn_and_no_bias_parity():
    ours, ref = _pair("rnn", nonlinearity="relu", bias=False, num_layers=2)
    x = torch.randn(T, B, F_IN)
    _compare(ours, ref, lambda m: m(x))
    ours = rn.RNN(F_IN, H, 1, "relu")  # torch.nn.RNN's positional nonlinearity
    assert ours.nonlinearity == "relu" and ours.mode == "RNN_RELU"


@pytest.mark.parametrize(
    ("ours_cls", "torch_cls", "kind"),
    [
        (rn.LSTMCell, nn.LSTMCell, "lstm"),
        (rn.GRUCell, nn.GRUCell, "gru"),
        (rn.RNNCell, nn.RNNCell, "rnn"),
    ],
)
def test_cells_match_torch_cells(ours_cls, torch_cls, kind):
    ref = torch_cls(F_IN, H)
    cell = ours_cls(F_IN, H)
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(B, F_IN)
    h, c = torch.randn(B, H), torch.randn(B, H)
    hx = (h, c) if kind == "lstm" else h
    # torch.nn's call: h' = cell(x, h) / (h', c') = cell(x, (h, c)), with hx=None and unbatched
    for args in ((x, hx), (x,), (x, None), (x[0], (h[0], c[0]) if kind == "lstm" else h[0])):
        got, want = cell(*args), ref(*args)
        assert type(got) is type(want)
        for g, w in zip(got if kind == "lstm" else (got,), want if kind == "lstm" else (want,)):
            torch.testing.assert_close(g, w)
    # the step contract: (out, state) with the state a NamedTuple
    state = cell.initial_state(B)
    state = type(state)(*(h, c)[: len(state)])
    out, new = cell.step(x, state)
    want = ref(x, hx)
    torch.testing.assert_close(out, want[0] if kind == "lstm" else want)
    assert type(new) is type(state)


@pytest.mark.parametrize("cls", [rn.LSTMCell, rn.GRUCell, rn.RNNCell, rn.IndRNNCell])
def test_cells_accept_zero_sizes_as_torch(cls):
    for size in ((10, 0), (0, 4), (0, 0)):
        cell = cls(*size)
        out = cell(torch.randn(2, size[0]))
        for t in out if isinstance(out, tuple) else (out,):
            assert t.shape == (2, size[1])
    out = cls(3, 4)(torch.randn(0, 3))  # an empty batch
    assert (out[0] if isinstance(out, tuple) else out).shape == (0, 4)
    torch_cls = {rn.LSTMCell: nn.LSTMCell, rn.GRUCell: nn.GRUCell, rn.RNNCell: nn.RNNCell}.get(cls)
    if torch_cls is not None:
        assert [n for n, _ in cls(10, 0).named_parameters()] == [
            n for n, _ in torch_cls(10, 0).named_parameters()
        ]


def test_state_dict_round_trip_into_torch():
    ours = rn.LSTM(F_IN, H, 2, bidirectional=True)
    ref = nn.LSTM(F_IN, H, 2, bidirectional=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, F_IN)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_dropout_one_matches_torch_in_training(kind, impl):
    ours, ref = _pair(kind, impl, num_layers=2, dropout=1.0)
    x = torch.randn(T, B, F_IN, requires_grad=True)
    torch.manual_seed(3)
    a = ours(x)[0]
    after_ours = torch.rand(4)
    torch.manual_seed(3)
    b = ref(x)[0]
    after_torch = torch.rand(4)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(after_ours, after_torch, rtol=0, atol=0)  # nothing drawn
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))  # the last layer sees only zeros


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_dropout_one_with_extras_zeroes_the_inner_layer_outputs(impl):
    m = rn.LSTM(F_IN, H, 3, dropout=1.0, layer_norm=True, zoneout=0.2, impl=impl)
    x = torch.randn(T, B, F_IN, requires_grad=True)
    out, (hn, cn) = m(x)
    assert torch.isfinite(out).all() and torch.isfinite(hn).all() and torch.isfinite(cn).all()
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))
    m.eval()  # eval: dropout is off, the input matters again
    (grad,) = torch.autograd.grad(m(x)[0].sum(), x)
    assert grad.abs().sum() > 0
