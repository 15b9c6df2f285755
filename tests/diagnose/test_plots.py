from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnguard.diagnose.doctor import doctor
from rnnguard.diagnose.history import summarize_history
from rnnguard.diagnose.plots import (
    grad_norm_curves,
    plot_grad_norm,
    plot_history,
    plot_horizon,
    plot_loss_curves,
    plot_lyapunov,
    plot_saturation,
    plot_sigma_max,
)
from rnnguard.errors import ConfigError

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def test_grad_norm_curves_follow_the_guide_and_the_tanh_bound() -> None:
    curves = grad_norm_curves((0.9, 1.0, 1.1), steps=40, hidden=8)
    k = np.arange(1, 41)
    for s in (0.9, 1.0, 1.1):
        np.testing.assert_allclose(curves[f"linear s={s:g}"], s**k, rtol=1e-9)
        # tanh' <= 1, so the real Jacobian product never exceeds ||W||^k
        assert np.all(curves[f"tanh s={s:g}"] <= s**k * (1 + 1e-9))
    with pytest.raises(ConfigError, match="scales"):
        grad_norm_curves((0.0,))


def test_every_plot_writes_a_png(tmp_path: Path) -> None:
    lstm = torch.nn.LSTM(2, 8, batch_first=True)
    d = doctor(lstm, torch.rand(4, 12, 2))
    hist = summarize_history(
        [
            {"kind": "train", "step": s, "grad_norm": float(s), "exploded": s == 5}
            for s in range(1, 11)
        ]
    )
    paths = [
        plot_horizon(d.horizons, tmp_path / "h.png"),
        plot_sigma_max(d.spectra, tmp_path / "s.png"),
        plot_lyapunov(d.spectra, tmp_path / "l.png"),
        plot_saturation(d.saturation, tmp_path / "sat.png"),
        plot_history(hist, tmp_path / "hist.png"),
        plot_loss_curves(
            {"a": ([1, 2, 3], [1.0, 0.5, 0.2]), "b": ([1, 2, 3], [1.0, 0.0, 0.1])},
            tmp_path / "loss.png",
        ),
        plot_grad_norm(grad_norm_curves(steps=5, hidden=4), tmp_path / "sub" / "g.png"),
    ]
    for p in paths:
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 1000
