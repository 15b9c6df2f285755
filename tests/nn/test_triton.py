"""The Triton kernels against the PyTorch loops, on CPU through Triton's interpreter.

The interpreter runs a kernel in NumPy, about half a second a launch, so the default suite takes
one case per family with every extra at once and tiny sizes; ``-m slow`` runs the full matrix.
The dispatcher's choice (Triton on CUDA, native C on CPU, the PyTorch loop otherwise) is tested
here on every path that exists without a GPU. ``tests/conftest.py`` selects the interpreter
(``TRITON_INTERPRET=1``) where there is no GPU; with one, these tests run the compiled kernels on
CPU tensors only through the interpreter, so they are skipped there (the CUDA tests cover them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from rnnguard.nn.fused import dispatch, native
from rnnguard.nn.fused.gru import _GRURecurrence
from rnnguard.nn.fused.indrnn import _IndRNNRecurrence
from rnnguard.nn.fused.lstm import _LSTMRecurrence
from rnnguard.nn.fused.rnn import _RNNRecurrence
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN
from rnnguard.nn.options import RecurrentOptions

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "needs Triton's interpreter (TRITON_INTERPRET=1; set where no GPU is found)",
        allow_module_level=True,
    )
pytestmark = pytest.mark.usefixtures("single_thread")

from rnnguard.nn.fused import triton_ops  # noqa: E402

T, B, H = 3, 2, 6  # H not a power of two: the kernels' masked lanes are exercised


def _compare(
    ref: Callable[..., Any], fast: Callable[..., Any], inputs: list[Any], carries: int
) -> None:
    """Outputs and the gradient of every tensor input but the trailing ``carries`` agree."""
    n = len(inputs) - carries

    def leaves() -> list[Any]:
        return [
            v.clone().requires_grad_(i < n) if isinstance(v, Tensor) else v
            for i, v in enumerate(inputs)
        ]

    a, b = leaves(), leaves()
    out_a, out_b = ref(*a), fast(*b)
    out_a = out_a if isinstance(out_a, tuple) else (out_a,)
    out_b = out_b if isinstance(out_b, tuple) else (out_b,)
    torch.manual_seed(5)
    weights = [torch.randn_like(o) for o in out_a]
    sum((o * w).sum() for o, w in zip(out_a, weights)).backward()
    sum((o * w).sum() for o, w in zip(out_b, weights)).backward()
    for x, y in zip(out_a, out_b):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)
    for i, (x, y) in enumerate(zip(a, b)):
        if isinstance(x, Tensor) and i < n:
            assert y.grad is not None, f"input {i} got no gradient"
            torch.testing.assert_close(y.grad, x.grad, rtol=1e-4, atol=1e-4, msg=f"input {i}")


def _carry(kind: str) -> Any:
    if kind == "none":
        return None
    if kind == "rate":
        return 0.25
    if kind == "pad":  # (T, B, 1): the second sequence ends after one step
        pad = torch.zeros(T, B, 1)
        pad[1:, 1] = 1.0
        return pad
    return (torch.rand(T, B, H) < 0.3).float()


def _lstm_case(ln: bool, carry_h: str, carry_c: str) -> None:
    torch.manual_seed(0)
    g = 4 * H
    inputs = [
        torch.randn(T, B, g), torch.randn(B, H), torch.randn(B, H), torch.randn(g, H) / 3,
        torch.randn(g) if ln else None, torch.randn(H) if ln else None,
        torch.randn(H) if ln else None, _carry(carry_h), _carry(carry_c),
    ]  # fmt: skip

    def loop(*args: Any) -> Any:
        return _LSTMRecurrence.apply(*args, None)  # no projection

    _compare(loop, triton_ops.lstm_recurrence_prescaled, inputs, 2)


def _gru_case(ln: bool, carry: str, bias: bool) -> None:
    torch.manual_seed(1)
    g = 3 * H
    inputs = [
        torch.randn(T, B, g), torch.randn(B, H), torch.randn(g, H) / 3,
        torch.randn(g) if bias else None, torch.randn(g) if ln else None, _carry(carry),
    ]  # fmt: skip
    _compare(_GRURecurrence.apply, triton_ops.gru_recurrence, inputs, 1)


def _rnn_case(ln: bool, act: str, residual: bool, carry: str) -> None:
    torch.manual_seed(2)
    options = RecurrentOptions(nonlinearity=act, residual=residual)
    inputs = [
        torch.randn(T, B, H), torch.randn(B, H), torch.randn(H, H) / 3,
        torch.randn(H) if ln else None, options, _carry(carry),
    ]  # fmt: skip
    _compare(_RNNRecurrence.apply, triton_ops.rnn_recurrence, inputs, 1)


def _indrnn_case(act: str, carry: str) -> None:
    torch.manual_seed(3)
    options = RecurrentOptions(nonlinearity=act)
    inputs = [torch.randn(T, B, H), torch.randn(B, H), torch.randn(H), options, _carry(carry)]
    _compare(_IndRNNRecurrence.apply, triton_ops.indrnn_recurrence, inputs, 1)


# ------------------------------------------------------------------ kernels, default suite


def test_lstm_kernels_every_extra() -> None:
    _lstm_case(True, "mask", "rate")


def test_lstm_kernels_plain_with_padding() -> None:
    _lstm_case(False, "pad", "pad")


def test_gru_kernels_every_extra() -> None:
    _gru_case(True, "mask", True)


def test_rnn_kernels_every_extra() -> None:
    _rnn_case(True, "relu", True, "mask")


def test_rnn_kernels_leaky_no_residual_rate() -> None:
    _rnn_case(False, "leaky_relu", False, "rate")


@pytest.mark.parametrize("carry", ["none", "mask", "rate", "pad"])
@pytest.mark.parametrize("act", ["relu", "tanh", "leaky_relu"])
def test_indrnn_kernels(act: str, carry: str) -> None:
    _indrnn_case(act, carry)


# ------------------------------------------------------------------ kernels, full matrix


@pytest.mark.slow
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "rate", "pad"])
def test_lstm_kernels_matrix(ln: bool, carry: str) -> None:
    _lstm_case(ln, carry, carry)
    _lstm_case(ln, carry, "none")


@pytest.mark.slow
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "rate", "pad"])
@pytest.mark.parametrize("bias", [False, True])
def test_gru_kernels_matrix(ln: bool, carry: str, bias: bool) -> None:
    _gru_case(ln, carry, bias)


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "relu", "leaky_relu"])
@pytest.mark.parametrize("ln", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("carry", ["none", "mask", "pad"])
def test_rnn_kernels_matrix(act: str, ln: bool, residual: bool, carry: str) -> None:
    _rnn_case(ln, act, residual, carry)


# ------------------------------------------------------------------ layers through the dispatcher


def _step(model: nn.Module, x: Tensor, amp: bool) -> tuple[Tensor, dict[str, Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same masks for every path
    if amp:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = model(x)
    else:
        out, _ = model(x)
    out.float().square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


LAYERS: dict[str, Callable[[str], nn.Module]] = {
    "lstm": lambda impl: LSTM(5, H, layer_norm=True, zoneout=0.2, dropconnect=0.3, impl=impl),
    "gru": lambda impl: GRU(5, H, layer_norm=True, zoneout=0.2, dropconnect=0.3, impl=impl),
    "rnn": lambda impl: RNN(
        5, H, nonlinearity="relu", residual=True, layer_norm=True, zoneout=0.2, impl=impl
    ),
    "indrnn": lambda impl: IndRNN(5, H, num_layers=2, zoneout=0.2, impl=impl),
}


@pytest.mark.parametrize("family", LAYERS)
def test_layer_on_triton_matches_reference(family: str) -> None:
    """Training mode (masks drawn): same values, gradients and therefore the same masks."""
    torch.manual_seed(0)
    ref = LAYERS[family]("reference").train()
    fast = LAYERS[family]("auto").train()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, 5)
    out_ref, g_ref = _step(ref, x, amp=False)
    with dispatch.forced():
        out, g = _step(fast, x, amp=False)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for name, v in g_ref.items():
        torch.testing.assert_close(g[name], v, rtol=1e-4, atol=1e-4, msg=name)


def test_projected_lstm_keeps_the_pytorch_loop_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Triton LSTM has no projection (proj_size): such a layer must take a loop that has."""

    def fail(*args: Any) -> Any:
        raise AssertionError("the Triton kernels ran an LSTM with proj_size")

    monkeypatch.setattr(triton_ops, "lstm_recurrence_prescaled", fail)
    torch.manual_seed(0)
    ref = LSTM(5, H, proj_size=3, layer_norm=True, impl="reference")
    fast = LSTM(5, H, proj_size=3, layer_norm=True)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, 5)
    with dispatch.forced():
        out, _ = fast(x)
    torch.testing.assert_close(out, ref(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_layer_on_triton_under_autocast(family: str) -> None:
    """bfloat16 autocast: the Triton path matches the PyTorch loop's mixed precision."""
    torch.manual_seed(0)
    model = LAYERS[family]("auto").train()
    x = torch.randn(T, B, 5)
    with native.disabled():
        out_ref, g_ref = _step(model, x, amp=True)
    with dispatch.forced():
        out, g = _step(model, x, amp=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, out_ref, rtol=2e-2, atol=2e-2)
    for name, v in g_ref.items():
        torch.testing.assert_close(g[name], v, rtol=5e-2, atol=5e-2, msg=name)


# ------------------------------------------------------------------ the dispatcher


def test_choose_picks_each_backend() -> None:
    f32 = torch.float32
    assert dispatch.choose("cuda", f32, triton_ok=True, native_ok=False) == "triton"
    assert dispatch.choose("cuda", f32, triton_ok=False, native_ok=False) == "torch"
    assert dispatch.choose("cuda", torch.float64, triton_ok=True, native_ok=False) == "torch"
    assert dispatch.choose("cpu", f32, triton_ok=True, native_ok=True) == "native"
    assert dispatch.choose("cpu", f32, triton_ok=True, native_ok=False) == "torch"


def test_backend_on_cpu_is_native_or_torch_and_forced_is_triton() -> None:
    x = torch.zeros(2, 2, 4)
    expected = "native" if native.available() else "torch"
    assert dispatch.backend("lstm", x) == expected
    assert dispatch.backend("gru", x) == "torch"  # no native GRU kernel
    with native.disabled():
        assert dispatch.backend("lstm", x) == "torch"
    with dispatch.forced():
        assert dispatch.backend("gru", x) == "triton"


def test_forced_path_runs_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = triton_ops.gru_recurrence

    def spy(*args: Any) -> Any:
        calls.append("triton")
        return real(*args)

    monkeypatch.setattr(triton_ops, "gru_recurrence", spy)
    model = GRU(5, H, layer_norm=True)
    model(torch.randn(2, 1, 5))
    assert calls == []  # CPU: never Triton unless forced
    with dispatch.forced():
        model(torch.randn(2, 1, 5))
    assert calls == ["triton"]


def test_use_triton_on_cuda_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA float32: Triton when it imports, unless switched off; the PyTorch loop otherwise."""

    def fake(dtype: torch.dtype = torch.float32, numel: int = 10) -> Any:
        # Only these are read: a CUDA tensor without a GPU.
        return SimpleNamespace(device=torch.device("cuda", 0), dtype=dtype, numel=lambda: numel)

    monkeypatch.delenv("RNNGUARD_TRITON", raising=False)
    monkeypatch.setattr(dispatch, "_importable", True)
    assert dispatch.use_triton(fake()) is True
    assert dispatch.use_triton(fake(torch.float64)) is False
    assert dispatch.use_triton(fake(numel=2**31)) is False  # past 32-bit indexing
    monkeypatch.setenv("RNNGUARD_TRITON", "0")
    assert dispatch.use_triton(fake()) is False
    monkeypatch.delenv("RNNGUARD_TRITON")
    monkeypatch.setattr(dispatch, "_importable", False)
    assert dispatch.use_triton(fake()) is False


def test_forced_without_interpreter_or_in_float64_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with dispatch.forced(), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dispatch.use_triton(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with dispatch.forced(), pytest.raises(RuntimeError, match="float32"):
        dispatch.use_triton(torch.zeros(1, dtype=torch.float64))
