from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnguard.diagnose.horizon import fit_log_rate, input_horizon, summarize_curve
from rnnguard.errors import ConfigError

from .helpers import LinearRNN, orthogonal


def _matrix_power_norms(w: torch.Tensor, n: int, ord: str | int = "fro") -> np.ndarray:
    out, p = [], torch.eye(w.shape[0], dtype=w.dtype)
    for _ in range(n):
        out.append(torch.linalg.matrix_norm(p, ord=ord).item())
        p = w @ p
    return np.array(out)


def test_linear_rnn_horizon_matches_matrix_powers() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 6, generator=g, dtype=torch.float64)
    w = 0.95 * w / torch.linalg.matrix_norm(w, ord=2)  # a general, non-normal matrix
    model = LinearRNN(w)
    x = torch.randn(1, 40, 6, dtype=torch.float64)
    hz = input_horizon(model, x)
    # dh_T/dx_{T-k} = W^k, so the default (Frobenius) norm is ||W^k||_F
    np.testing.assert_allclose(hz.norms, _matrix_power_norms(w, 40), rtol=1e-4, atol=0)


def test_linear_rnn_scaled_orthogonal_spectral_norm_and_summaries() -> None:
    a = 0.8
    w = a * orthogonal(5)
    v = torch.randn(5, dtype=torch.float64)
    model = LinearRNN(w)
    x = torch.randn(3, 50, 5, dtype=torch.float64)
    hz = input_horizon(model, x, loss=lambda y: (y[:, -1] @ v).sum())
    # for W = a Q every vector is scaled by a^k, so the curve relative to k = 0 is ||W^k||_2
    np.testing.assert_allclose(hz.norms / hz.norms[0], _matrix_power_norms(w, 50, ord=2), rtol=1e-4)
    ref = np.mean(a ** np.arange(1, 11))  # mean over distances 1..10
    np.testing.assert_allclose(hz.normalized * ref, a ** np.arange(50.0), rtol=1e-4)
    assert hz.rate == pytest.approx(math.log(a), abs=1e-6)
    assert hz.horizon == math.ceil(math.log(1e-3 * ref) / math.log(a))
    assert hz.far_ratio < 1e-3 and hz.peak_ratio == pytest.approx(1.0)


def test_loss_step_in_the_middle_and_growth() -> None:
    w = 1.1 * orthogonal(4)
    hz = input_horizon(LinearRNN(w), torch.randn(2, 30, 4, dtype=torch.float64), step=19)
    assert len(hz.norms) == 20
    assert hz.rate == pytest.approx(math.log(1.1), abs=1e-6)
    ref, window = np.mean(1.1 ** np.arange(1, 11)), np.mean(1.1 ** np.arange(10, 20))
    assert hz.horizon is None and hz.peak_ratio == pytest.approx(window / ref, rel=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer"])
def test_works_on_torch_modules(kind: str) -> None:
    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if kind == "transformer":
                self.core: nn.Module = nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True), 1
                )
            else:
                self.core = getattr(nn, kind.upper())(8, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.core(x)
            return self.head(out[0] if isinstance(out, tuple) else out)

    model = Wrap().train()
    hz = input_horizon(model, torch.randn(4, 12, 8))
    assert hz.norms.shape == (12,) and np.all(hz.norms > 0)
    assert model.training  # the training flag is restored
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_random_projection_estimate_for_many_outputs() -> None:
    w = 0.9 * orthogonal(40)
    x = torch.randn(1, 10, 40, dtype=torch.float64)
    exact = input_horizon(LinearRNN(w), x, max_outputs=64)
    approx = input_horizon(LinearRNN(w), x, max_outputs=16)
    np.testing.assert_allclose(exact.norms, _matrix_power_norms(w, 10), rtol=1e-6)
    # an estimate from 16 probes: right scale, not exact
    assert np.all(np.abs(approx.normalized - exact.normalized) < 0.5)


def test_token_models_are_measured_at_the_embedding() -> None:
    class Tok(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.rnn = nn.GRU(6, 6, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(self.emb(x))[0]

    hz = input_horizon(Tok(), torch.randint(0, 10, (3, 15)))
    assert hz.norms.shape == (15,) and hz.norms[0] > 0


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match=r"model must accept a \(batch, time, features\)"):
        input_horizon(nn.Linear(5, 2), torch.randn(2, 10, 4))
    with pytest.raises(ConfigError, match="at least 2 time steps"):
        input_horizon(nn.GRU(4, 4, batch_first=True), torch.randn(2, 1, 4))
    with pytest.raises(ConfigError, match=r"shape \(batch, time, features\)"):
        input_horizon(nn.GRU(4, 4, batch_first=True), torch.randn(2, 4))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        input_horizon(lambda x: x, torch.randn(2, 5, 4))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threshold"):
        input_horizon(nn.GRU(4, 4, batch_first=True), torch.randn(2, 5, 4), threshold=2.0)
    with pytest.raises(ConfigError, match="step must be"):
        input_horizon(nn.GRU(4, 4, batch_first=True), torch.randn(2, 5, 4), step=5)
    with pytest.raises(ConfigError, match="does not depend on its inputs"):
        input_horizon(_Constant(), torch.randn(2, 5, 4))


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(x.shape[0], x.shape[1], 1) + 0 * x.detach()[..., :1]


def test_summaries() -> None:
    assert fit_log_rate(np.array([1.0, 0.5, 0.25, 0.125])) == pytest.approx(math.log(0.5))
    assert fit_log_rate(np.array([1.0, np.inf, np.inf])) == math.inf
    assert fit_log_rate(np.array([1.0, 0.0, 0.0])) == -math.inf
    hz = summarize_curve(np.array([0.0, 2.0, 1.0, 1e-4]), threshold=1e-3)
    assert hz.normalized[1] == pytest.approx(2.0 / (3.0001 / 3)) and hz.horizon == 3
    hz = summarize_curve(np.array([1.0] * 11 + [1e-4] * 5), threshold=1e-3)
    assert hz.horizon == 11
    # a dip of an oscillating curve is not a horizon: it must stay below to the start
    dip = summarize_curve(np.array([1.0] * 11 + [1e-5, 0.5, 1e-4, 1e-5]), threshold=1e-3)
    assert dip.horizon == 13
    # one spiky step does not make the far past "dominate"
    spiky = summarize_curve(np.array([1.0] * 30 + [50.0] + [1.0] * 30))
    assert spiky.peak_ratio < 10
    # attention-like: the current input dominates, every past step is reached equally
    flat = summarize_curve(np.array([10.0, 0.002, 0.002, 0.002]), threshold=1e-3)
    assert flat.horizon is None and flat.normalized[0] == pytest.approx(5000.0)
    with pytest.raises(ConfigError, match="norms must be"):
        summarize_curve(np.array([1.0]))
