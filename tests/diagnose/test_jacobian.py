from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnguard.diagnose.jacobian import (
    Linearization,
    dense_jacobian,
    jacobian_spectrum,
    top_singular_values,
)
from rnnguard.errors import ConfigError

from .helpers import LinearRNN, TanhRNN, orthogonal


def _lstm_flat_step(cell: nn.LSTMCell):
    h = cell.hidden_size

    def step(x_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h1, c1 = cell(x_t, (s[:, :h], s[:, h:]))
        return torch.cat([h1, c1], 1)

    return step


def test_power_iteration_matches_svd_on_small_state() -> None:
    cell = nn.LSTMCell(3, 10).double()
    step = _lstm_flat_step(cell)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    s = torch.randn(4, 20, dtype=torch.float64)

    def f(state: torch.Tensor) -> torch.Tensor:
        return step(x_t, state)

    sig, v = top_singular_values(step, x_t, s, k=3, iters=40)
    for b in range(4):
        jac = torch.autograd.functional.jacobian(
            lambda z, b=b: step(x_t[b : b + 1], z.unsqueeze(0))[0], s[b]
        )
        ref = torch.linalg.svdvals(jac)[:3]
        torch.testing.assert_close(sig[b], ref, rtol=1e-4, atol=1e-8)
    # dense_jacobian agrees with autograd's reference too
    jac0 = torch.autograd.functional.jacobian(lambda z: step(x_t[:1], z.unsqueeze(0))[0], s[0])
    torch.testing.assert_close(dense_jacobian(f, s)[0], jac0)
    assert v.shape == (4, 20, 7)  # 3 + 4 oversampled directions
    # the linearisation gives the same dense Jacobian and applies J and J^T consistently
    lin = Linearization(step, x_t, s, 20)
    torch.testing.assert_close(lin.dense(), dense_jacobian(f, s))
    vecs = torch.randn(4, 20, 3, dtype=torch.float64)
    torch.testing.assert_close(lin.j(vecs), dense_jacobian(f, s) @ vecs)
    torch.testing.assert_close(lin.jt(vecs), dense_jacobian(f, s).transpose(1, 2) @ vecs)


@pytest.mark.parametrize("method", ["exact", "power"])
def test_lyapunov_of_scaled_orthogonal_linear_rnn_is_log_a(method: str) -> None:
    for a in (0.5, 1.0, 1.3):
        model = LinearRNN(a * orthogonal(8, seed=3))
        x = torch.randn(2, 25, 8, dtype=torch.float64)
        spec = jacobian_spectrum(
            model.step, x, torch.zeros(2, 8, dtype=torch.float64), k=2, lyapunov_k=4, method=method
        )
        assert spec.method == method
        np.testing.assert_allclose(spec.lyapunov, math.log(a), atol=1e-6)
        np.testing.assert_allclose(spec.sigma_max, a, rtol=1e-6)
        np.testing.assert_allclose(spec.log_product, math.log(a) * np.arange(1, 26), atol=1e-6)


def test_tanh_rnn_spectrum_power_matches_exact() -> None:
    torch.manual_seed(0)
    # a spectral gap (2.0, 1.6, then <= 1) as trained recurrent matrices typically have
    sv = torch.tensor([2.0, 1.6] + [1.0 - 0.05 * i for i in range(10)], dtype=torch.float64)
    model = TanhRNN(orthogonal(12, seed=5) @ torch.diag(sv) @ orthogonal(12, seed=6))
    x = 0.5 * torch.randn(3, 30, 12, dtype=torch.float64)
    s0 = torch.zeros(3, 12, dtype=torch.float64)
    exact = jacobian_spectrum(model.step, x, s0, k=2, lyapunov_k=3, method="exact")
    power = jacobian_spectrum(model.step, x, s0, k=2, lyapunov_k=3, method="power")
    np.testing.assert_allclose(power.singular, exact.singular, rtol=1e-4)
    np.testing.assert_allclose(power.lyapunov, exact.lyapunov, atol=1e-8)
    # tanh' <= 1 so every step's sigma_max is bounded by ||W||_2 = 2
    assert np.all(exact.sigma_max <= 2.0 + 1e-9)
    assert exact.lyapunov[0] >= exact.lyapunov[-1]


def test_bad_arguments() -> None:
    model = LinearRNN(orthogonal(4))
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    s0 = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ConfigError, match="method"):
        jacobian_spectrum(model.step, x, s0, method="svd")
    with pytest.raises(ConfigError, match="lyapunov_k"):
        jacobian_spectrum(model.step, x, s0, lyapunov_k=5)
    with pytest.raises(ConfigError, match="s0 must be"):
        jacobian_spectrum(model.step, x, torch.zeros(3, 4))
    with pytest.raises(TypeError, match="step must be"):
        jacobian_spectrum(None, x, s0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k must be"):
        top_singular_values(model.step, x[:, 0], s0, k=0)


def test_layer_norm_lstm_step_power_matches_exact() -> None:
    import rnnguard.nn as rnn_nn
    from rnnguard.diagnose.trajectory import flat_step, flatten_state
    from rnnguard.nn.step_function import layer_step_function

    lstm = rnn_nn.LSTM(3, 12, layer_norm=True, batch_first=True).double().eval()
    fn = layer_step_function(lstm)
    step = flat_step(fn)
    x = torch.randn(2, 15, 3, dtype=torch.float64)
    s0 = flatten_state(fn.initial_state(2, dtype=torch.float64))
    exact = jacobian_spectrum(step, x, s0, k=2, lyapunov_k=3, method="exact")
    power = jacobian_spectrum(
        step, x, s0, k=2, lyapunov_k=3, method="power", iters=60, warm_iters=30
    )
    assert exact.state_size == 24  # (h, c)
    np.testing.assert_allclose(power.singular, exact.singular, rtol=1e-3)
    np.testing.assert_allclose(power.lyapunov, exact.lyapunov, atol=1e-8)
