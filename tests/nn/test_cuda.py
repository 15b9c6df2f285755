"""The fused paths on a CUDA device: Triton kernels, the PyTorch loop and autocast (skipped without).

``benchmarks/device_check.py`` runs these on a GPU machine. Each layer (training mode, every
extra) runs three ways from the same seed: the reference loop, the fused PyTorch loop
(``RNNGUARD_TRITON=0``) and the dispatcher's choice (Triton where it imports); values and every
gradient must agree. Under fp16/bf16 autocast the outputs must stay float32 and close to the
float32 run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from rnnguard.nn.fused import dispatch
from rnnguard.nn.layers import GRU, LSTM, RNN, IndRNN

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
LAYERS: dict[str, Callable[[str], nn.Module]] = {
    "lstm": lambda impl: LSTM(24, 48, layer_norm=True, zoneout=0.1, dropconnect=0.2, impl=impl),
    "gru": lambda impl: GRU(24, 48, layer_norm=True, zoneout=0.1, dropconnect=0.2, impl=impl),
    "rnn": lambda impl: RNN(
        24, 48, nonlinearity="relu", residual=True, layer_norm=True, zoneout=0.1, impl=impl
    ),
    "indrnn": lambda impl: IndRNN(24, 48, num_layers=2, zoneout=0.1, impl=impl),
}


def _step(
    model: nn.Module, x: Tensor, amp: torch.dtype | None = None
) -> tuple[Tensor, list[Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    with torch.autocast(DEV, dtype=amp or torch.float16, enabled=amp is not None):
        out, _ = model(x)
    out.float().square().mean().backward()
    return out.detach(), [p.grad.detach().clone() for p in model.parameters()]


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


@pytest.mark.parametrize("family", LAYERS)
def test_triton_and_pytorch_loop_match_reference(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    ref = LAYERS[family]("reference").to(DEV).train()
    fused = LAYERS[family]("auto").to(DEV).train()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(40, 8, 24, device=DEV)
    out_ref, g_ref = _step(ref, x)
    out_fast, g_fast = _step(fused, x)
    monkeypatch.setenv("RNNGUARD_TRITON", "0")
    out_loop, g_loop = _step(fused, x)
    monkeypatch.delenv("RNNGUARD_TRITON")
    for out, grads in ((out_fast, g_fast), (out_loop, g_loop)):
        torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
        for a, b in zip(grads, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_dispatcher_picks_triton_on_cuda() -> None:
    x = torch.zeros(1, 1, 1, device=DEV)
    expected = "triton" if dispatch.triton_available() else "torch"
    assert dispatch.backend("lstm", x) == expected


@pytest.mark.parametrize("amp", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", LAYERS)
def test_autocast_tracks_float32(family: str, amp: torch.dtype) -> None:
    if amp == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16 on this GPU")
    torch.manual_seed(0)
    model = LAYERS[family]("auto").to(DEV).train()
    if family == "lstm":  # a non-chaotic LayerNorm-LSTM (see tests/nn/test_fused_amp.py)
        with torch.no_grad():
            model.layer_norm_hh_l0.fill_(0.3)
    x = torch.randn(256, 8, 24, device=DEV)
    out32, g32 = _step(model, x)
    out16, g16 = _step(model, x, amp)
    assert out16.dtype == torch.float32
    tol = 0.01 if amp == torch.float16 else 0.03
    assert _rel(out16, out32) < tol
    assert _rel(out16[-64:], out32[-64:]) < 2 * _rel(out16[:64], out32[:64]) + 1e-3
    for a, b in zip(g16, g32):
        assert _rel(a, b) < 0.05


def test_grad_scaler_fp16_step() -> None:
    torch.manual_seed(0)
    model = LSTM(24, 48, layer_norm=True, zoneout=0.1).to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(DEV)
    x = torch.randn(50, 4, 24, device=DEV)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast(DEV, dtype=torch.float16):
        out, _ = model(x)
    scaler.scale(out.square().mean()).backward()
    scaler.step(opt)
    scaler.update()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.8])
def test_masks_on_the_device_keep_at_the_rate(keep: float) -> None:
    # Off the CPU the sampler takes its plain form; its law must be the CPU's.
    from rnnguard.nn.functional import _bernoulli

    torch.manual_seed(4)
    mask = _bernoulli((500, 400), keep, torch.zeros(1, device=DEV, dtype=torch.float16))
    assert mask.device.type == "cuda" and mask.dtype == torch.float16
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    sd = (keep * (1 - keep) / mask.numel()) ** 0.5
    assert abs(mask.float().mean().item() - keep) < 5 * sd
