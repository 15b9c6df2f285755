"""The fused fast path of every layer against the reference implementation (``impl="reference"``).

Both paths draw their masks through the same sampler in the same order, so with the same seed
they must agree in the masks (bit for bit) and in every value and gradient (float32 tolerance).
"""

from __future__ import annotations

import zlib

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnguard.nn.fused as fused
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN

# Every test here runs on the native kernels and on the pure-PyTorch fallback.
pytestmark = pytest.mark.usefixtures("fused_backend")

CONFIGS = [
    (LSTM, {}),
    (GRU, {"bias": False}),
    (RNN, {}),
    (LSTM, {"layer_norm": True, "zoneout": 0.2, "dropconnect": 0.3}),
    (LSTM, {"zoneout": 0.3, "zoneout_cell": 0.1}),
    (LSTM, {"layer_norm": True, "bias": False}),
    (LSTM, {"dropconnect": 0.5, "weight_norm": True}),
    (GRU, {"layer_norm": True, "zoneout": 0.2, "dropconnect": 0.3}),
    (GRU, {"zoneout": 0.1}),
    (RNN, {"nonlinearity": "relu", "residual": True, "layer_norm": True, "zoneout": 0.2}),
    (RNN, {"residual": True, "residual_scale": 0.25, "layer_norm": True, "zoneout": 0.2}),
    (RNN, {"nonlinearity": "leaky_relu", "dropconnect": 0.2}),
    (RNN, {"nonlinearity": "tanh", "layer_norm": True, "bias": False}),
    (IndRNN, {}),
    (IndRNN, {"nonlinearity": "tanh", "layer_norm": True, "residual": True, "zoneout": 0.2}),
]
IDS = [
    f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'plain'}"
    for cls, kw in CONFIGS
]


def _pair(cls: type[nn.Module], kw: dict, **shape) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(1)
    ref = cls(impl="reference", **shape, **kw)
    fast = cls(impl="fused", **shape, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(model: nn.Module, x, hx, seed: int):
    torch.manual_seed(seed)
    out, state = model(x, hx)
    rng_after = torch.get_rng_state()
    return out, state, rng_after


def _flat(out, state) -> list[Tensor]:
    if hasattr(out, "data") and not isinstance(out, Tensor):
        out = out.data
    states = list(state) if isinstance(state, tuple) else [state]
    return [out, *states]


def _check_same(ref: nn.Module, fast: nn.Module, x, hx=None, atol: float = 2e-5) -> None:
    inputs = [
        t for t in ([x] + (list(hx) if isinstance(hx, tuple) else [hx])) if isinstance(t, Tensor)
    ]
    results = []
    for model in (ref, fast):
        model.zero_grad()
        for t in inputs:
            t.grad = None
        out, state, rng = _run(model, x, hx, seed=7)
        flat = _flat(out, state)
        torch.manual_seed(3)
        loss = sum((f * torch.randn_like(f)).sum() for f in flat)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        in_grads = [t.grad.clone() for t in inputs if t.requires_grad]
        results.append((flat, rng, grads, in_grads))
    (f_ref, rng_ref, g_ref, i_ref), (f_fast, rng_fast, g_fast, i_fast) = results
    # Same number of random draws in the same order: the generator ends in the same state.
    assert torch.equal(rng_ref, rng_fast)
    for a, b in zip(f_fast, f_ref):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)
    assert g_ref.keys() == g_fast.keys() and g_ref
    for name in g_ref:
        # float32 rounding through LayerNorms over a few units grows with the gradient's size.
        scale = max(1.0, g_ref[name].abs().max().item())
        torch.testing.assert_close(
            g_fast[name], g_ref[name], atol=atol * 20 * scale, rtol=1e-3, msg=name
        )
    for a, b in zip(i_fast, i_ref):
        torch.testing.assert_close(a, b, atol=atol * 20, rtol=1e-3)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_matches_reference_training(cls, kw, bidirectional: bool) -> None:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{cls.__name__}{kw}{bidirectional}".encode()))
    steps, batch = (
        int(torch.randint(3, 9, (1,), generator=gen)),
        int(torch.randint(1, 5, (1,), generator=gen)),
    )
    hidden = int(
        torch.randint(3, 7, (1,), generator=gen)
    )  # LayerNorm over 1-2 units is ill-conditioned
    inp = hidden * (2 if bidirectional else 1) if cls is IndRNN and kw.get("residual") else 5
    ref, fast = _pair(cls, kw, input_size=inp, hidden_size=hidden, num_layers=2,
                      bidirectional=bidirectional, dropout=0.25)  # fmt: skip
    x = torch.randn(steps, batch, inp, requires_grad=True)
    _check_same(ref.train(), fast.train(), x)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_fused_matches_reference_float64_tightly(cls, kw) -> None:
    """In float64 the two paths agree to 1e-9: float32 gaps are rounding, not maths."""
    inp = 4 if cls is IndRNN and kw.get("residual") else 3
    ref, fast = _pair(cls, kw, input_size=inp, hidden_size=2, num_layers=2, bidirectional=True,
                      dtype=torch.float64)  # fmt: skip
    x = torch.randn(5, 3, inp, dtype=torch.float64, requires_grad=True)
    _check_same(ref.train(), fast.train(), x, atol=1e-9)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS[::2], ids=IDS[::2])
def test_fused_matches_reference_eval_with_state(cls, kw) -> None:
    ref, fast = _pair(cls, kw, input_size=4, hidden_size=6, num_layers=2, batch_first=True)
    x = torch.randn(3, 5, 4, requires_grad=True)
    h = torch.randn(2, 3, 6, requires_grad=True)
    hx = (h, torch.randn(2, 3, 6, requires_grad=True)) if cls is LSTM else h
    _check_same(ref.eval(), fast.eval(), x, hx)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_fused_matches_reference_packed(cls, kw) -> None:
    ref, fast = _pair(cls, kw, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    lengths = torch.tensor([6, 2, 5, 1])
    padded = torch.randn(6, 4, 3)
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    packed.data.requires_grad_()
    _check_same(ref.train(), fast.train(), packed)
    # padded outputs of the fused path are exactly zero, like torch's
    torch.manual_seed(0)
    out, _ = fast.eval()(packed)
    unpacked, _ = pad_packed_sequence(out)
    assert torch.count_nonzero(unpacked[2:, 1]) == 0


def test_direction_seam_matches_reference_with_lengths() -> None:
    """``fused.run_direction`` is a drop-in for the reference seam, reverse direction included."""
    from rnnguard.nn import functional as Fn

    torch.manual_seed(0)
    model = LSTM(3, 5, layer_norm=True, zoneout=0.3, zoneout_cell=0.2, dropconnect=0.4)
    params, options, spec = model.layer_params(0, 0), model.options, model.spec
    x = torch.randn(7, 4, 3)
    lengths = torch.tensor([7, 3, 1, 5])
    state = Fn.LSTMState(torch.randn(4, 5), torch.randn(4, 5))
    for reverse in (False, True):
        masks = Fn.sample_masks(spec, options, num_layers=1, num_directions=1, hidden_size=5,
                                steps=7, batch=4, like=x)  # fmt: skip
        d = masks[0].directions[0]
        out_r, st_r = Fn.run_direction(spec, x, state, params, d, options, True, lengths, reverse)
        out_f, st_f = fused.run_direction(
            spec, x, state, params, d, options, True, lengths, reverse
        )
        torch.testing.assert_close(out_f, out_r, atol=2e-5, rtol=1e-4)
        for a, b in zip(st_f, st_r):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


GRADCHECK_MODELS = {
    "lstm": lambda **kw: LSTM(**kw, layer_norm=True, zoneout=0.3, dropconnect=0.3),
    "gru": lambda **kw: GRU(**kw, layer_norm=True, zoneout=0.3, dropconnect=0.3),
    "rnn": lambda **kw: RNN(**kw, layer_norm=True, residual=True, zoneout=0.3),
    "indrnn": lambda **kw: IndRNN(**kw, layer_norm=True, zoneout=0.3),
}


def _gradcheck_layer(make, num_layers: int, fast_mode: bool) -> None:
    torch.manual_seed(0)
    model = make(input_size=2, hidden_size=2, num_layers=num_layers, bidirectional=True,
                 dtype=torch.float64, impl="fused").train()  # fmt: skip
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [
        p.detach().clone().requires_grad_() for n, p in model.named_parameters() if p.requires_grad
    ]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x, *ps):
        torch.manual_seed(5)  # the same masks on every call
        return torch.func.functional_call(model, dict(zip(names, ps)), (x,))[0]

    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=fast_mode)


@pytest.mark.parametrize("kind", sorted(GRADCHECK_MODELS))
def test_gradcheck_float64_layers_all_extras(kind: str) -> None:
    _gradcheck_layer(GRADCHECK_MODELS[kind], num_layers=2, fast_mode=True)


@pytest.mark.parametrize("kind", sorted(GRADCHECK_MODELS))
def test_gradcheck_float64_layers_all_extras_full(kind: str) -> None:
    _gradcheck_layer(GRADCHECK_MODELS[kind], num_layers=2, fast_mode=False)


def test_auto_uses_torch_kernel_without_extras_and_fused_with(monkeypatch) -> None:
    calls = []
    original = fused.run_direction

    def spy(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, "run_direction", spy)
    x = torch.randn(5, 2, 3)
    plain = LSTM(3, 4)
    torch_lstm = nn.LSTM(3, 4)
    torch_lstm.load_state_dict(plain.state_dict())
    torch.testing.assert_close(plain(x)[0], torch_lstm(x)[0])
    assert calls == []
    LSTM(3, 4, layer_norm=True)(x)
    IndRNN(3, 4)(x)
    assert calls == ["lstm", "indrnn"]


def test_backward_twice_with_retained_graph_gives_the_same_gradients() -> None:
    """Diagnostics take several gradients through one graph; the fused backward must not consume it."""
    model = LSTM(3, 4, layer_norm=True, zoneout=0.2, impl="fused").train()
    x = torch.randn(6, 2, 3, requires_grad=True)
    out, _ = model(x)
    (g1,) = torch.autograd.grad(out[-1].sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(out[-1].sum(), x, retain_graph=True)
    (g3,) = torch.autograd.grad(out[2].sum(), x)
    assert torch.equal(g1, g2)
    assert torch.count_nonzero(g3[3:]) == 0  # causal: output 2 does not depend on later inputs
    assert torch.count_nonzero(g3[:3]) > 0
