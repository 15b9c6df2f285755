"""PNG plots of the diagnostics (matplotlib, imported lazily; one function per figure).

Every ``plot_*`` function writes a PNG to ``path`` and returns the path. Figures are built with
``matplotlib.figure.Figure`` directly, so no global pyplot state or display is involved.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnguard.diagnose.history import ExplosionHistory
from rnnguard.diagnose.horizon import Horizon, HorizonSet
from rnnguard.diagnose.jacobian import Spectrum, dense_jacobian
from rnnguard.diagnose.saturation import LayerSaturation
from rnnguard.errors import ConfigError, require_extra
from rnnguard.utils.checks import integer

__all__ = [
    "grad_norm_curves",
    "plot_grad_norm",
    "plot_history",
    "plot_horizon",
    "plot_loss_curves",
    "plot_lyapunov",
    "plot_saturation",
    "plot_sigma_max",
]

PathLike = str | os.PathLike[str]


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    require_extra("matplotlib", "plot")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: PathLike) -> Path:
    import io

    from rnnguard.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _finish(
    fig: Any, ax: Any, path: PathLike, xlabel: str, ylabel: str | None, title: str, legend: bool
) -> Path:
    """Label the axes, title and (with ``legend``) legend of a one-panel figure, then save it."""
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _positive(values: np.ndarray) -> np.ndarray:
    """Values for a log axis: non-positive and non-finite entries become gaps."""
    v = np.asarray(values, dtype=np.float64).copy()
    v[~np.isfinite(v) | (v <= 0)] = np.nan
    return v


def plot_horizon(horizons: HorizonSet | Horizon, path: PathLike) -> Path:
    """Normalised gradient norm against distance k (log scale), input and every hidden layer."""
    curves = (
        [horizons] if isinstance(horizons, Horizon) else [horizons.input, *horizons.hidden.values()]
    )
    fig = _figure()
    ax = fig.add_subplot()
    for hz in curves:
        ax.semilogy(
            hz.distances,
            _positive(hz.normalized),
            label=hz.label,
            lw=1.6 if hz.label == "input" else 1.0,
        )
    ax.axhline(
        curves[0].threshold,
        color="grey",
        ls="--",
        lw=0.8,
        label=f"threshold {curves[0].threshold:g}",
    )
    return _finish(
        fig,
        ax,
        path,
        "distance k from the loss step",
        "normalised ||dL/d(.)_{T-k}||",
        "Gradient horizon",
        legend=True,
    )


def _per_layer_lines(
    series: Mapping[str, np.ndarray],
    level: float,
    xlabel: str,
    ylabel: str,
    title: str,
    path: PathLike,
    **style: Any,
) -> Path:
    """One line per layer over 1..n with a dashed reference ``level``: the spectrum plots."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label, **style)
    ax.axhline(level, color="grey", ls="--", lw=0.8)
    return _finish(fig, ax, path, xlabel, ylabel, title, legend=bool(series))


def plot_sigma_max(spectra: Mapping[str, Spectrum], path: PathLike) -> Path:
    """Largest singular value of ds_t/ds_{t-1} at every step, per recurrent layer."""
    return _per_layer_lines(
        {label: spec.sigma_max for label, spec in spectra.items()}, 1.0, "step t",
        "sigma_max(ds_t / ds_{t-1})", "Per-step Jacobian norm", path, lw=1.0,
    )  # fmt: skip


def plot_lyapunov(spectra: Mapping[str, Spectrum], path: PathLike) -> Path:
    """Top Lyapunov exponents per layer (< 0: perturbations and gradients shrink; > 0: grow)."""
    return _per_layer_lines(
        {label: spec.lyapunov for label, spec in spectra.items()}, 0.0, "index i",
        "Lyapunov exponent lambda_i (per step)", "Lyapunov spectrum", path, marker="o", ls="-",
    )  # fmt: skip


def plot_saturation(saturation: Mapping[str, LayerSaturation], path: PathLike) -> Path:
    """Horizontal bars: saturated (or dead) fraction of every gate / unit group, per layer."""
    rows = [
        (f"{label}: {gate}", v) for label, s in saturation.items() for gate, v in s.per_gate.items()
    ]
    fig = _figure(6.4, max(2.0, 0.32 * len(rows) + 1.0))
    ax = fig.add_subplot()
    if rows:
        names, values = zip(*rows)
        y = np.arange(len(rows))
        ax.barh(y, values, color="tab:orange")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
    ax.set_xlim(0, 1)
    return _finish(fig, ax, path, "fraction saturated / closed / dead", None, "Saturation", False)


def plot_loss_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: PathLike
) -> Path:
    """Training loss against step for several runs (``label -> (steps, losses)``)."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, (steps, losses) in curves.items():
        ax.plot(steps, _positive(np.asarray(losses)), label=label, lw=1.0)
    ax.set_yscale("log")
    return _finish(fig, ax, path, "step", "training loss", "Original vs prescribed", legend=True)


def plot_history(history: ExplosionHistory, path: PathLike) -> Path:
    """Pre-clip gradient norm over training, with the steps the guard flagged."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.semilogy(history.steps, _positive(history.grad_norm), lw=0.8, label="pre-clip norm")
    flagged = np.isin(history.steps, history.exploded_steps)
    if flagged.any():
        ax.semilogy(
            history.steps[flagged], _positive(history.grad_norm[flagged]), "rx", label="exploded"
        )
    return _finish(fig, ax, path, "step", "gradient norm", "Explosion history", legend=True)


# ---------------------------------------------------------------------- the guide's figure 1.2


def grad_norm_curves(
    scales: Sequence[float] = (0.9, 1.0, 1.1),
    *,
    steps: int = 100,
    hidden: int = 32,
    input_std: float = 0.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``||dh_T/dh_{T-k}||_2`` for k = 1..steps for recurrent matrices ``W = s * Q`` (||W||_2 = s).

    For each scale two curves: ``linear s=..`` (h_t = W h_{t-1} + x_t, exactly s**k) and
    ``tanh s=..`` (h_t = tanh(W h_{t-1} + x_t) on random inputs, the product of the real
    Jacobians diag(1 - h_t^2) W, measured by autograd).
    """
    integer("steps", steps, minimum=1)
    integer("hidden", hidden, minimum=1)
    if not scales or any(not isinstance(s, (int, float)) or not s > 0 for s in scales):
        raise ConfigError(f"scales must be positive numbers, got {list(scales)!r}")
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(hidden, hidden, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    xs = input_std * torch.randn(steps, 1, hidden, generator=gen, dtype=torch.float64)
    curves: dict[str, np.ndarray] = {}
    for s in scales:
        w = float(s) * q
        for name, act in (("linear", lambda v: v), ("tanh", torch.tanh)):
            h = torch.zeros(1, hidden, dtype=torch.float64)
            jacs = []
            for t in range(steps):
                x_t = xs[t]

                def f(
                    state: torch.Tensor,
                    x_t: torch.Tensor = x_t,
                    act: Any = act,
                    w: torch.Tensor = w,
                ) -> torch.Tensor:
                    return act(state @ w.T + x_t)

                jacs.append(dense_jacobian(f, h)[0])
                h = f(h).detach()
            prod = torch.eye(hidden, dtype=torch.float64)
            norms = []
            for k in range(1, steps + 1):
                prod = prod @ jacs[steps - k]  # dh_T/dh_{T-k} = J_T J_{T-1} ... J_{T-k+1}
                norms.append(torch.linalg.matrix_norm(prod, ord=2).item())
            curves[f"{name} s={s:g}"] = np.array(norms)
    return curves


def plot_grad_norm(curves: Mapping[str, np.ndarray], path: PathLike) -> Path:
    """The guide's "gradient norm after 100 steps" figure, from :func:`grad_norm_curves`."""
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    colours: dict[str, Any] = {}
    steps = max((len(norms) for norms in curves.values()), default=0)
    for label, norms in curves.items():
        kind, scale = label.split(" ", 1)
        colour = colours.setdefault(scale, f"C{len(colours)}")
        ax.semilogy(
            np.arange(1, len(norms) + 1),
            _positive(norms),
            color=colour,
            ls="--" if kind == "linear" else "-",
            label=f"{kind}, ||W||_2 {scale.replace('s=', '= ')}",
        )
    ax.grid(True, which="major", alpha=0.3)
    return _finish(
        fig,
        ax,
        path,
        f"k (steps back from T = {steps})",
        "||dh_T / dh_{T-k}||_2",
        "Gradient norm k steps back (dashed: linear, solid: tanh)",
        legend=True,
    )
