"""LRU: parallel scan equals the step-by-step recurrence, ring init, streaming state, errors."""

from __future__ import annotations

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.nn.lru import LRU, LRUCore, linear_scan
from rnnguard.nn.registry import create_layer, list_layers


def _sequential(b: torch.Tensor, log_lam: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    lam = torch.exp(log_lam)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for t in range(b.shape[1]):
        h = lam * h + b[:, t]
        states.append(h)
    return torch.stack(states, 1)


@pytest.mark.parametrize("steps", [1, 6, 31, 32, 33, 100])
@pytest.mark.parametrize("chunk", [1, 8, 32])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_matches_sequential_recurrence(steps: int, chunk: int, with_h0: bool) -> None:
    b = torch.randn(3, steps, 5, dtype=torch.cdouble)
    log_lam = torch.complex(
        -torch.rand(5, dtype=torch.double) * 0.2, torch.rand(5, dtype=torch.double) * 3
    )
    h0 = torch.randn(3, 5, dtype=torch.cdouble) if with_h0 else None
    got = linear_scan(b, log_lam, h0, chunk_size=chunk)
    torch.testing.assert_close(got, _sequential(b, log_lam, h0), rtol=1e-10, atol=1e-10)


def test_scan_gradients_match_sequential() -> None:
    b = torch.randn(2, 20, 3, dtype=torch.cdouble, requires_grad=True)
    nu = torch.rand(3, dtype=torch.double, requires_grad=True)
    th = torch.rand(3, dtype=torch.double, requires_grad=True)
    grads = []
    for fn in (
        lambda bb, ll: linear_scan(bb, ll, None, 8),
        lambda bb, ll: _sequential(bb, ll, None),
    ):
        ll = torch.complex(-nu, th)
        out = fn(b, ll)
        (out.real**2 + out.imag).sum().backward()
        grads.append([t.grad.clone() for t in (b, nu, th)])
        for t in (b, nu, th):
            t.grad = None
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2)


def test_ring_init_and_gamma_normalisation() -> None:
    core = LRUCore(8, 256, r_min=0.4, r_max=0.9)
    modulus = torch.exp(core.log_lambda()).abs()
    assert modulus.min() >= 0.4 - 1e-6 and modulus.max() <= 0.9 + 1e-6
    assert modulus.max() - modulus.min() > 0.3  # spread over the ring, not one value
    torch.testing.assert_close(torch.exp(core.gamma_log), torch.sqrt(1 - modulus**2))


def test_registered_layer_contract_and_streaming_state() -> None:
    assert "lru" in list_layers()
    layer = create_layer("lru", input_size=3, hidden_size=16, num_layers=2, batch_first=True)
    assert layer.output_size == 16
    x = torch.randn(4, 50, 3)
    out, state = layer(x)
    assert out.shape == (4, 50, 16)
    assert state.shape == (2, 4, 16) and state.is_complex()
    # Continuing from the carried state gives the same outputs as one long call.
    first, s1 = layer(x[:, :20])
    second, _ = layer(x[:, 20:], s1)
    torch.testing.assert_close(torch.cat([first, second], 1), out, rtol=1e-4, atol=1e-5)


def test_time_major_and_causality() -> None:
    layer = LRU(2, 8)
    x = torch.randn(30, 2, 2)
    out, _ = layer(x)
    assert out.shape == (30, 2, 8)
    x2 = x.clone()
    x2[20] += 1.0
    out2, _ = layer(x2)
    torch.testing.assert_close(out2[:20], out[:20])
    assert not torch.allclose(out2[20:], out[20:])


def test_learns_to_remember_a_value() -> None:
    # A few Adam steps must lower the loss of recalling the first input at the last step.
    torch.manual_seed(1)
    layer = LRU(1, 16, batch_first=True, r_min=0.9, r_max=0.999)
    head = torch.nn.Linear(16, 1)
    opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=2e-2)
    losses = []
    for _ in range(30):
        x = torch.zeros(16, 20, 1)
        x[:, 0, 0] = torch.randn(16)
        out, _ = layer(x)
        loss = ((head(out[:, -1]).squeeze(-1) - x[:, 0, 0]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="r_min"):
        LRU(2, 8, r_min=0.9, r_max=0.5)
    with pytest.raises(TypeError, match="hidden_size"):
        LRU(2, 8.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hidden_size"):
        LRU(2, 0)
    layer = LRU(2, 8, batch_first=True)
    with pytest.raises(ConfigError, match="input must have shape"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ConfigError, match="state must have shape"):
        layer(torch.randn(2, 5, 2), torch.zeros(1, 3, 8, dtype=torch.cfloat))


def test_runs_under_cpu_bf16_autocast_and_trains():
    torch.manual_seed(0)
    layer = LRU(3, 8, num_layers=2, batch_first=True)
    x = torch.randn(2, 17, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = layer(x)
    assert state.dtype == torch.complex64
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
