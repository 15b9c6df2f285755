"""Mixed precision on the fused paths: CPU bfloat16 autocast against float32, long sequences.

The fused path must run under autocast (no fallback to the reference loop), keep its state and
outputs in float32, and stay within bfloat16 rounding of the float32 run at T >= 200 without the
error growing along the sequence. The LSTM case weakens the recurrent LayerNorm gain to 0.3: at
the default init a LayerNorm-LSTM on random inputs is chaotic (float32 itself drifts from float64
by about 0.4% after 200 steps, amplifying 1e-7 rounding 10^4-fold), so no precision would track
it; with the weaker gain float32 stays within 3e-7 of float64 and rounding cannot hide behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import rnnguard.nn.functional as functional
from rnnguard.nn import fused
from rnnguard.nn.fused import lstm_native
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS, BATCH, INP, HID = 200, 4, 16, 32
BF16 = torch.bfloat16


def _lstm() -> nn.Module:
    m = LSTM(INP, HID, layer_norm=True, zoneout=0.1, dropconnect=0.2)
    with torch.no_grad():
        m.layer_norm_hh_l0.fill_(0.3)
    return m


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "lstm ln+zo+dc": _lstm,
    "gru ln+zo": lambda: GRU(INP, HID, layer_norm=True, zoneout=0.1),
    "rnn relu residual+ln+zo": lambda: RNN(
        INP, HID, nonlinearity="relu", residual=True, layer_norm=True, zoneout=0.1
    ),
    "indrnn 2 layers zo": lambda: IndRNN(INP, HID, num_layers=2, zoneout=0.1),
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def _run(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None) -> tuple[Any, ...]:
    """Output, final h and every parameter gradient of a training step (masks from seed 1)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    if amp is None:
        out, state = model(x)
    else:
        with torch.autocast("cpu", dtype=amp):
            out, state = model(x)
    h = state[0] if isinstance(state, tuple) else state
    (out.float().square().mean() + h.float().sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), h.detach(), grads


@pytest.fixture
def no_reference_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reference loop raise if a layer falls back to it."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the layer fell back to the reference loop")

    monkeypatch.setattr("rnnguard.nn.layers.run_direction", fail)


@pytest.mark.usefixtures("no_reference_loop")
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_tracks_float32(family: str, fused_backend: str) -> None:
    torch.manual_seed(0)
    model = FAMILIES[family]().train()
    x = torch.randn(STEPS, BATCH, INP)
    out32, _h32, g32 = _run(model, x, None)
    out16, h16, g16 = _run(model, x, BF16)
    # The carried state and outputs stay float32.
    assert out16.dtype == torch.float32 and h16.dtype == torch.float32
    err = _rel(out16, out32)
    assert 1e-4 < err < 0.02, f"{family}: output off by {err:.4f} (bfloat16 products expected)"
    # The error must not grow along the sequence.
    first, last = _rel(out16[:50], out32[:50]), _rel(out16[-50:], out32[-50:])
    assert last < 2.0 * first + 1e-3, f"{family}: error grew from {first:.4f} to {last:.4f}"
    for name, g in g32.items():
        e = _rel(g16[name], g)
        assert e < 0.05, f"{family}: grad of {name} off by {e:.4f}"


def test_bf16_state_would_fail_the_drift_check() -> None:
    """The drift check above can fail: rounding the cell state to bfloat16 every step does."""
    torch.manual_seed(0)
    model = _lstm().eval()
    with torch.no_grad():
        model.bias_ih_l0[HID : 2 * HID].fill_(4.0)  # a long memory: c integrates small updates
    x = torch.randn(STEPS, BATCH, INP)
    state = functional.LSTMState(torch.zeros(BATCH, HID), torch.zeros(BATCH, HID))
    params, options = model.layer_params(), model.options
    ref, _ = functional.run_direction(model.spec, x, state, params, None, options, False)
    h, c = state
    outs = []
    for t in range(STEPS):  # the reference step with a bfloat16 cell state
        xp = functional.project_input(x[t], params)
        h, c = functional.lstm_step(xp, (h, c), params.weight_hh, params, options)
        c = c.to(BF16).float()
        outs.append(h)
    bad = torch.stack(outs)
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        good, _ = model(x)
    assert _rel(good, ref) < 0.02
    assert _rel(bad[-50:], ref[-50:]) > 2.0 * _rel(good[-50:], ref[-50:])


@pytest.mark.usefixtures("no_reference_loop")
def test_native_kernels_get_float32_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnguard.nn.fused import native

    if not native.available():
        pytest.skip(f"native kernels unavailable: {native.build_error()}")
    seen: list[torch.dtype] = []
    real = lstm_native._NativeLSTMRecurrence.apply

    def spy(*args: Any) -> Any:
        seen.append(args[0].dtype)
        return real(*args)

    monkeypatch.setattr(lstm_native._NativeLSTMRecurrence, "apply", spy)
    model = _lstm()
    with torch.autocast("cpu", dtype=BF16):
        model(torch.randn(5, 2, INP))
    assert seen == [torch.float32]


def test_packed_bidirectional_eval_under_autocast() -> None:
    torch.manual_seed(0)
    model = GRU(INP, HID, layer_norm=True, zoneout=0.2, bidirectional=True, num_layers=2).eval()
    x = torch.randn(30, 3, INP)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([30, 17, 4]), enforce_sorted=False)
    with torch.no_grad():
        ref, href = model(packed)
        with torch.autocast("cpu", dtype=BF16):
            out, h = model(packed)
    assert out.data.dtype == torch.float32
    assert _rel(out.data, ref.data) < 0.02 and _rel(h, href) < 0.02


def test_float64_parameters_keep_the_reference_loop_under_autocast() -> None:
    model = LSTM(INP, HID, layer_norm=True, dtype=torch.float64)
    x = torch.randn(6, 2, INP, dtype=torch.float64)
    calls: list[int] = []
    real = functional.run_direction

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rnnguard.nn.layers.run_direction", spy)
        with torch.autocast("cpu", dtype=BF16):
            out, _ = model(x)
    assert calls and out.dtype == torch.float64


def test_grad_scaler_semantics() -> None:
    """Scaled gradients unscale to the unscaled ones; an overflow skips the step."""
    torch.manual_seed(0)
    model = LSTM(INP, HID, layer_norm=True, zoneout=0.1)
    x = torch.randn(20, 2, INP)

    def grads(scale: float) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.float16):
            out, _ = model(x)
        (out.square().mean() * scale).backward()
        return [p.grad / scale for p in model.parameters()]

    for a, b in zip(grads(1.0), grads(2.0**12)):
        assert _rel(a, b) < 0.01
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.float16):
        out, _ = model(x)
    scaler.scale(out.square().mean()).backward()  # float16 products overflow at this scale
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() < 2.0**40  # the overflow was seen...
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)  # ...and the step skipped


def test_fused_run_direction_under_autocast_directly() -> None:
    """The functional entry point takes the mixed path too (autocast off inside, float32 out)."""
    from rnnguard.nn.kinds import kind_spec
    from rnnguard.nn.options import RecurrentOptions

    torch.manual_seed(0)
    params = functional.LayerParams(torch.randn(3 * HID, INP), torch.randn(3 * HID, HID) / 6)
    x = torch.randn(12, 2, INP)
    h0 = functional.HiddenState(torch.zeros(2, HID))
    spec, options = kind_spec("gru"), RecurrentOptions()
    ref, _ = fused.run_direction(spec, x, h0, params, None, options, False)
    with torch.autocast("cpu", dtype=BF16):
        out, state = fused.run_direction(spec, x, h0, params, None, options, False)
    assert out.dtype == state.h.dtype == torch.float32
    assert 1e-4 < _rel(out, ref) < 0.02


def test_devices_without_autocast_run_unmixed() -> None:
    from rnnguard.nn.fused import amp

    w = torch.zeros(1)
    assert amp.matmul_dtype("meta", w) is None  # autocast knows no meta device
    assert amp.matmul_dtype("cpu", w) is None  # autocast off
    with torch.autocast("cpu", dtype=BF16):
        assert amp.matmul_dtype("cpu", w) == BF16
        assert amp.matmul_dtype("cpu", w.double()) is None  # autocast leaves float64 alone
