"""Gradients of gradients through the fused paths: exact, on the native kernels and PyTorch loops.

The fused loops' hand-written backward computes numbers only; when a graph of the backward is
asked for they recompute through ordinary autograd operations. These tests hold that path to
``gradgradcheck`` with every extra on, and a gradient-penalty training step to the reference loop.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

import rnnguard.nn as rn

pytestmark = pytest.mark.usefixtures("single_thread")

F_IN, H = 2, 2


def _every_extra(kind: str, layers: int) -> nn.Module:
    common: dict[str, Any] = {
        "bidirectional": True, "layer_norm": True, "zoneout": 0.3, "dropconnect": 0.3,
        "weight_norm": True, "dropout": 0.3 if layers > 1 else 0.0,
    }  # fmt: skip
    if kind == "lstm":
        return rn.LSTM(F_IN, H, layers, zoneout_cell=0.2, forget_bias=1.0, **common)
    if kind == "gru":
        return rn.GRU(F_IN, H, layers, forget_bias=1.0, **common)
    if kind == "rnn":
        return rn.RNN(F_IN, H, layers, "leaky_relu", residual=True, **common)
    layer = rn.IndRNN(
        F_IN, H, layers, nonlinearity="tanh", residual=True, recurrent_max=0.9, **common
    )
    rn.init.indrnn_(layer, -0.5, 0.5, input_init=False)  # inside the bound: no kink of the clamp
    return layer


def _as_function(module: nn.Module) -> tuple[Callable[..., Any], tuple[Tensor, ...]]:
    """(fn, inputs) for gradcheck: fn(x, *params) -> (output, states...), with fixed masks."""
    names, values = zip(*[(n, p.detach().clone()) for n, p in module.named_parameters()])

    def fn(x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        torch.manual_seed(1234)  # the same zoneout / DropConnect / dropout masks every time
        out, state = functional_call(module, dict(zip(names, params)), (x,))
        return (out, *(state if isinstance(state, tuple) else (state,)))

    x = torch.randn(2, 2, F_IN, dtype=torch.float64)
    return fn, tuple(t.requires_grad_() for t in (x, *values))


def _uses_fused_path(module: nn.Module, fn: Callable[..., Any], inputs: tuple[Tensor, ...]) -> bool:
    names = {type(n).__name__ for n in _graph_nodes(fn(*inputs)[0].grad_fn)}
    return any("Recurrence" in n for n in names)


def _graph_nodes(node: Any) -> list[Any]:
    seen, todo = [], [node]
    while todo:
        n = todo.pop()
        if n is None or n in seen:
            continue
        seen.append(n)
        todo.extend(f for f, _ in n.next_functions)
    return seen


def _assert_graph_grads_equal_plain_grads(
    fn: Callable[..., Any], inputs: tuple[Tensor, ...]
) -> None:
    """First-order gradients taken with a graph (the recomputed path) equal the hand-written ones.

    gradgradcheck alone cannot see a wrong recomputation: it differentiates whatever function the
    graph path computes, consistently.
    """
    outs = fn(*inputs)
    torch.manual_seed(3)
    weights = [torch.randn_like(o) for o in outs]
    plain = torch.autograd.grad(outs, inputs, weights, allow_unused=True)
    outs = fn(*inputs)
    graph = torch.autograd.grad(outs, inputs, weights, create_graph=True, allow_unused=True)
    for i, (p, g) in enumerate(zip(plain, graph)):
        if p is None:
            assert g is None or not g.any(), i
        else:
            torch.testing.assert_close(g, p, msg=f"input {i}")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "indrnn"])
@pytest.mark.parametrize("layers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_gradgradcheck_every_extra(kind: str, layers: int, fused_backend: str) -> None:
    module = _every_extra(kind, layers).double().train()
    fn, inputs = _as_function(module)
    assert _uses_fused_path(module, fn, inputs)
    _assert_graph_grads_equal_plain_grads(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "indrnn"])
def test_gradgradcheck_two_layers_eval(kind: str) -> None:
    # Two layers in eval mode: the zoneout rate (not a mask) as the carry, no dropout.
    module = _every_extra(kind, 2).double().eval()
    fn, inputs = _as_function(module)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "indrnn"])
def test_gradient_penalty_step_matches_reference(kind: str, fused_backend: str) -> None:
    """loss + |d loss / d x|^2, backward, SGD step: the fused path moves the weights as the reference."""
    torch.manual_seed(0)
    fused = _every_extra(kind, 2).double().train()
    ref = copy.deepcopy(fused)
    ref.impl = "reference"
    x = torch.randn(5, 3, F_IN, dtype=torch.float64)
    results = []
    for m in (fused, ref):
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        xi = x.clone().requires_grad_()
        torch.manual_seed(7)  # the same masks on both paths
        out, _ = m(xi)
        loss = out.pow(2).mean()
        (g_x,) = torch.autograd.grad(loss, xi, create_graph=True)
        (loss + g_x.pow(2).sum()).backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        opt.step()
        results.append((grads, {n: p.detach().clone() for n, p in m.named_parameters()}))
    (g_fused, w_fused), (g_ref, w_ref) = results
    assert all(g is not None for g in g_fused.values())  # the penalty reaches every parameter
    for name in g_ref:
        torch.testing.assert_close(g_fused[name], g_ref[name], msg=name)
        torch.testing.assert_close(w_fused[name], w_ref[name], msg=name)


def test_hessian_vector_product_of_input_is_not_none(fused_backend: str) -> None:
    # The failure this guards against: d(d loss/dx)/dx silently None through a fused layer.
    layer = rn.LSTM(F_IN, H, layer_norm=True).double()
    x = torch.randn(4, 2, F_IN, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x)[0].pow(3).sum(), x, create_graph=True)
    (hv,) = torch.autograd.grad(g.sum(), x)
    assert hv is not None and hv.abs().sum() > 0
    ref = copy.deepcopy(layer)
    ref.impl = "reference"
    (g2,) = torch.autograd.grad(ref(x)[0].pow(3).sum(), x, create_graph=True)
    (hv2,) = torch.autograd.grad(g2.sum(), x)
    torch.testing.assert_close(hv, hv2)


def _triton_interpreter() -> bool:
    import os

    from rnnguard.nn.fused import dispatch

    return dispatch.triton_available() and os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.parametrize(
    "kind", ["lstm", *(pytest.param(k, marks=pytest.mark.slow) for k in ("gru", "rnn", "indrnn"))]
)
def test_gradient_penalty_through_triton_kernels(kind: str) -> None:
    """The Triton Functions (run by Triton's interpreter here) take the same double-backward path."""
    if not _triton_interpreter():
        pytest.skip("needs triton and its interpreter (TRITON_INTERPRET=1)")
    from rnnguard.nn.fused import dispatch

    torch.manual_seed(0)
    fused = _every_extra(kind, 1).train()
    ref = copy.deepcopy(fused)
    ref.impl = "reference"
    x = torch.randn(2, 2, F_IN)
    grads = []
    for m, forced in ((fused, True), (ref, False)):
        xi = x.clone().requires_grad_()
        torch.manual_seed(7)
        with dispatch.forced() if forced else contextlib.nullcontext():
            out, _ = m(xi)
            if forced:
                names = {type(n).__name__ for n in _graph_nodes(out.grad_fn)}
                assert any("Triton" in n for n in names), names
            (g_x,) = torch.autograd.grad(out.pow(2).mean(), xi, create_graph=True)
            g_x.pow(2).sum().backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    # float32: a penalty's gradient is a difference of large terms, so rounding scales with the
    # largest gradient (about 300 here); a wrong term would be of the gradient's own size.
    scale = max(float(g.abs().max()) for g in grads[1].values())
    for name, g in grads[1].items():
        torch.testing.assert_close(grads[0][name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_gradgradcheck_convex_residual_rnn() -> None:
    module = rn.RNN(F_IN, H, residual=True, residual_scale=0.5, layer_norm=True, zoneout=0.3)
    fn, inputs = _as_function(module.double().train())
    assert _uses_fused_path(module, fn, inputs)
    _assert_graph_grads_equal_plain_grads(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True, atol=1e-5)
