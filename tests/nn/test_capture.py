"""Layers with extras under torch's whole-model tooling: meta/to_empty, export, compile, copies.

The fused paths run native or Triton kernels on raw pointers; under ``torch.export`` and
``torch.compile`` the layers trace the plain loop instead, and on ``meta`` tensors (shapes only)
they take it too. Each test checks the result against eager execution, not just that it runs.
"""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

EXTRAS: dict[str, dict[str, Any]] = {
    "LSTM": {"layer_norm": True, "zoneout": 0.2, "dropconnect": 0.2, "forget_bias": 1.0, "weight_norm": True},
    "GRU": {"layer_norm": True, "zoneout": 0.2, "dropconnect": 0.2, "weight_norm": True},
    "RNN": {"layer_norm": True, "zoneout": 0.2, "dropconnect": 0.2, "residual": True, "weight_norm": True},
    "IndRNN": {"layer_norm": True, "zoneout": 0.2, "dropconnect": 0.2, "recurrent_max": 0.9, "weight_norm": True},
}  # fmt: skip
FAMILIES = sorted(EXTRAS)


def make(family: str, **kwargs: Any) -> nn.Module:
    return getattr(rn, family)(3, 4, 2, bidirectional=True, **EXTRAS[family], **kwargs)


def first(out: Any) -> Tensor:
    return out[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_meta_forward_and_to_empty(family: str) -> None:
    m = make(family, device="meta")
    out, _ = m(torch.randn(5, 2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 2, 8)
    m.to_empty(device="cpu")
    m.reset_parameters()
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in m.parameters())
    out, _ = m.eval()(torch.randn(5, 2, 3))
    assert torch.isfinite(out).all()


# Exporting takes seconds a layer here: one family by default, the rest under -m slow.
@pytest.mark.parametrize(
    "family", ["LSTM", *(pytest.param(f, marks=pytest.mark.slow) for f in ("GRU", "RNN", "IndRNN"))]
)
def test_export_runs_as_eager(family: str) -> None:
    """The exported program computes what the eager layer does (eval), and trains (train)."""
    torch.manual_seed(0)
    m = make(family).eval()
    x = torch.randn(5, 2, 3)
    program = torch.export.export(m, (x,))
    x2 = torch.randn(5, 2, 3)  # other values than the ones it was traced with
    for got, want in zip(program.module()(x2), (first(m(x2)), m(x2)[1])):
        for g, w in zip(
            got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
        ):
            torch.testing.assert_close(g, w)
    m.train()
    program = torch.export.export(m, (x,))
    out = first(program.module()(x2))
    assert out.shape == (5, 2, 8)
    assert not torch.allclose(out, first(m.eval()(x2)))  # the zoneout and DropConnect masks act


@pytest.mark.parametrize(
    "family", ["GRU", *(pytest.param(f, marks=pytest.mark.slow) for f in ("LSTM", "RNN", "IndRNN"))]
)
def test_compile_fullgraph_matches_eager(family: str) -> None:
    torch.manual_seed(0)
    m = getattr(rn, family)(3, 4, **EXTRAS[family]).eval()
    x = torch.randn(3, 2, 3)
    # aot_eager: dynamo's full-graph capture and AOT autograd's functionalisation (where in-place
    # kernels break), without inductor's code generation (minutes on two cores).
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(first(compiled(x)), first(m(x)))
    m.train()
    xg = x.clone().requires_grad_()
    torch.manual_seed(1)
    out = first(compiled(xg))
    out.sum().backward()
    assert xg.grad is not None and all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_copies_and_saved_state(family: str) -> None:
    """deepcopy, pickle, torch.save of the module and a weights_only state dict round-trip."""
    torch.manual_seed(0)
    m = make(family).eval()
    with torch.no_grad():  # weights away from their initial values, so a fresh init differs
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(5, 2, 3)
    want = first(m(x))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = make(family).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    whole = io.BytesIO()
    torch.save(m, whole)
    whole.seek(0)
    copies = [
        fresh,
        copy.deepcopy(m),
        pickle.loads(pickle.dumps(m)),
        torch.load(whole, weights_only=False),
    ]
    for other in copies:
        torch.testing.assert_close(first(other(x)), want, rtol=0, atol=0)
        assert [n for n, _ in other.named_parameters()] == [n for n, _ in m.named_parameters()]
    # A copy is independent: training it leaves the original untouched.
    clone = pickle.loads(pickle.dumps(m)).train()
    first(clone(x)).sum().backward()
    assert all(p.grad is not None for p in clone.parameters())
    assert all(p.grad is None for p in m.parameters())
