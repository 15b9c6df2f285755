"""Jacobian spectrum of a recurrence along a real trajectory, and its Lyapunov exponents.

The recurrence is any map ``s_t = step(x_t, s_{t-1})`` on a flat state ``s`` of shape (B, D) that
treats batch rows independently. Per step we measure the largest singular values of the per-sample
Jacobian ``J_t = ds_t/ds_{t-1}`` (exact SVD of the dense Jacobian for small D; otherwise block power
iteration with Jacobian-vector and vector-Jacobian products, warm-started from the previous step,
so no D x D matrix is formed), the running product ``sum_t log sigma_max(J_t)``, and the top-k
Lyapunov exponents by the QR method: ``Q_t R_t = J_t Q_{t-1}``, ``lambda_i = mean_t log|R_t[i, i]|``.
A negative top exponent means perturbations, and hence gradients, shrink over time; positive, grow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnguard.errors import ConfigError
from rnnguard.utils.checks import integer

__all__ = [
    "FlatStep",
    "Linearization",
    "Spectrum",
    "dense_jacobian",
    "jacobian_spectrum",
    "top_singular_values",
]

#: ``step(x_t, s) -> s_next`` on flat states (B, D); rows must not interact.
FlatStep = Callable[[Tensor, Tensor], Tensor]
MapFn = Callable[[Tensor], Tensor]

#: Above this state size ``method="auto"`` switches from dense SVD to power iteration.
EXACT_MAX_DIM = 64
_TINY = 1e-300


class Linearization:
    """The per-sample Jacobian ``J`` of ``s -> step(x_t, s)`` at one state, applied without forming it.

    The step runs once on ``width`` copies of every sample, with a graph kept for reuse, so that
    ``J V`` and ``J^T U`` for blocks of up to ``width`` vectors per sample each cost one backward
    pass (``J V`` by differentiating ``J^T u`` with respect to ``u``).
    """

    def __init__(self, step: FlatStep, x_t: Tensor, s: Tensor, width: int) -> None:
        self.batch, self.dim = s.shape
        self.width = width
        with torch.enable_grad():
            # row b * width + j is copy j of sample b
            self._s = s.detach().repeat_interleave(width, 0).requires_grad_(True)
            self._out = step(x_t.detach().repeat_interleave(width, 0), self._s)
            if self._out.shape != self._s.shape:
                raise ConfigError(
                    f"step must map a (batch, {self.dim}) state to the same shape, got {tuple(self._out.shape)}"
                )
            self._u = torch.zeros_like(self._out, requires_grad=True)
            (g,) = torch.autograd.grad(
                self._out, self._s, self._u, create_graph=True, allow_unused=True
            )
        self._g = g
        #: the next state, step(x_t, s), for each sample (B, D)
        self.value = self._out[::width].detach()

    def _fold(self, v: Tensor) -> tuple[Tensor, int]:
        cols = v.shape[2]
        if cols > self.width:
            raise ConfigError(f"at most {self.width} vectors per sample, got {cols}")
        if cols < self.width:
            v = torch.cat([v, v.new_zeros(self.batch, self.dim, self.width - cols)], dim=2)
        return v.permute(0, 2, 1).reshape(self.batch * self.width, self.dim), cols

    def _unfold(self, g: Tensor | None, cols: int) -> Tensor:
        if g is None:  # the step does not depend on the state at all
            return torch.zeros(
                self.batch, self.dim, cols, dtype=self._s.dtype, device=self._s.device
            )
        return g.detach().reshape(self.batch, self.width, self.dim).permute(0, 2, 1)[:, :, :cols]

    def jt(self, u: Tensor) -> Tensor:
        """``J^T U`` for ``U`` of shape (B, D, m), m <= width."""
        flat, cols = self._fold(u)
        (g,) = torch.autograd.grad(self._out, self._s, flat, retain_graph=True, allow_unused=True)
        return self._unfold(g, cols)

    def j(self, v: Tensor) -> Tensor:
        """``J V`` for ``V`` of shape (B, D, m), m <= width."""
        flat, cols = self._fold(v)
        if self._g is None or not self._g.requires_grad:
            # J^T u does not depend on u only when J is zero
            return self._unfold(None, cols)
        (g,) = torch.autograd.grad(self._g, self._u, flat, retain_graph=True, allow_unused=True)
        return self._unfold(g, cols)

    def dense(self) -> Tensor:
        """The full Jacobians (B, D, D); needs ``width == D``."""
        eye = torch.eye(self.dim, dtype=self._s.dtype, device=self._s.device)
        return self.jt(eye.expand(self.batch, self.dim, self.dim)).transpose(1, 2)


def dense_jacobian(f: MapFn, s: Tensor) -> Tensor:
    """Per-sample Jacobians (B, D, D) of ``f`` at ``s`` (one backward pass per state dimension)."""
    with torch.enable_grad():
        s_req = s.detach().requires_grad_(True)
        out = f(s_req)
        dim = out.shape[1]
        rows = []
        for i in range(dim):
            (g,) = torch.autograd.grad(out[:, i].sum(), s_req, retain_graph=i < dim - 1)
            rows.append(g.detach())
    return torch.stack(rows, dim=1)


def _orthonormal(v: Tensor) -> Tensor:
    return torch.linalg.qr(v).Q


def _power(
    lin: Linearization, k: int, iters: int, start: Tensor | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    width = min(lin.dim, lin.width)
    if start is None or start.shape[2] != width:
        start = torch.randn(lin.batch, lin.dim, width, generator=generator, dtype=torch.float64)
        start = start.to(lin.value.device, lin.value.dtype)
    v = _orthonormal(start)
    for _ in range(iters):
        v = _orthonormal(lin.jt(lin.j(v)))
    # Rayleigh-Ritz: the singular values of J V are the best estimates within span(V)
    _, sig, vh = torch.linalg.svd(lin.j(v), full_matrices=False)
    return sig[:, :k], v @ vh.transpose(1, 2)


def top_singular_values(
    step: FlatStep,
    x_t: Tensor,
    s: Tensor,
    k: int = 1,
    *,
    iters: int = 30,
    oversample: int = 4,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` singular values (B, k) of each sample's Jacobian of ``step(x_t, .)`` at ``s``.

    Matrix-free block power iteration on ``J^T J`` with ``oversample`` extra directions (they
    speed up convergence when singular values cluster) and a Rayleigh-Ritz step. Returns the
    values and the right singular block (B, D, k + oversample), which can warm-start the next call.
    """
    integer("k", k, minimum=1)
    integer("iters", iters, minimum=1)
    integer("oversample", oversample, minimum=0)
    dim = s.shape[1]
    if k > dim:
        raise ConfigError(f"k must be <= the state size {dim}, got {k}")
    lin = Linearization(step, x_t, s, min(dim, k + oversample))
    return _power(lin, k, iters, start, generator)


@dataclass
class Spectrum:
    """Per-step singular values of ds_t/ds_{t-1} along a trajectory, and Lyapunov exponents.

    ``singular`` (T, k): batch mean of the top-k singular values at each step;
    ``sigma_max`` (T,): its first column; ``log_product`` (T,): cumulative batch-mean
    ``sum log sigma_max``, an upper bound on ``log ||ds_t/ds_0||``; ``lyapunov`` (k_L,): exponents
    per step, descending, batch mean.
    """

    singular: np.ndarray
    log_product: np.ndarray
    lyapunov: np.ndarray
    method: str
    state_size: int
    label: str = "recurrence"

    @property
    def sigma_max(self) -> np.ndarray:
        """Batch-mean largest singular value per step."""
        return self.singular[:, 0]

    @property
    def top_lyapunov(self) -> float:
        """The largest Lyapunov exponent (nan if none were computed)."""
        return float(self.lyapunov[0]) if self.lyapunov.size else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""

        def clean(a: np.ndarray) -> list[Any]:
            return [float(v) if math.isfinite(v) else None for v in np.asarray(a).ravel()]

        return {
            "label": self.label,
            "method": self.method,
            "state_size": self.state_size,
            "sigma_max": clean(self.sigma_max),
            "sigma_max_mean": float(np.mean(self.sigma_max)),
            "log_product": clean(self.log_product),
            "lyapunov": clean(self.lyapunov),
            "top_lyapunov": self.top_lyapunov if math.isfinite(self.top_lyapunov) else None,
        }


def jacobian_spectrum(
    step: FlatStep,
    x: Tensor,
    s0: Tensor,
    *,
    k: int = 1,
    lyapunov_k: int = 4,
    method: str = "auto",
    iters: int = 30,
    warm_iters: int = 4,
    oversample: int = 4,
    warmup: int | None = None,
    generator: torch.Generator | None = None,
    label: str = "recurrence",
) -> Spectrum:
    """Singular values of every step's Jacobian and the top Lyapunov exponents along ``x``.

    ``x`` is (B, T, I) (batch first), ``s0`` the flat initial state (B, D). ``method`` is
    ``"exact"`` (dense SVD), ``"power"`` (matrix-free) or ``"auto"`` (exact when D <= 64).
    The first ``warmup`` steps (default min(10, T // 10)) align the QR basis and are not averaged.
    """
    if not callable(step):
        raise TypeError(f"step must be a callable(x_t, state) -> state, got {type(step).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ConfigError(
            f"x must be a (batch, time, features) tensor, got {getattr(x, 'shape', x)!r}"
        )
    if not isinstance(s0, Tensor) or s0.dim() != 2 or s0.shape[0] != x.shape[0]:
        raise ConfigError(
            f"s0 must be a (batch, state) tensor with batch {x.shape[0]}, got {getattr(s0, 'shape', s0)!r}"
        )
    if method not in ("auto", "exact", "power"):
        raise ConfigError(f"method must be 'auto', 'exact' or 'power', got {method!r}")
    integer("k", k, minimum=1)
    integer("lyapunov_k", lyapunov_k, minimum=0)
    integer("iters", iters, minimum=1)
    integer("warm_iters", warm_iters, minimum=1)
    integer("oversample", oversample, minimum=0)
    batch, length = x.shape[0], x.shape[1]
    dim = s0.shape[1]
    if k > dim or lyapunov_k > dim:
        raise ConfigError(
            f"k and lyapunov_k must be <= the state size {dim}, got {k} and {lyapunov_k}"
        )
    if warmup is None:
        warmup = min(10, length // 10)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < length:
        raise ConfigError(f"warmup must be an int in [0, {length}), got {warmup!r}")
    exact = method == "exact" or (method == "auto" and dim <= EXACT_MAX_DIM)
    gen = generator or torch.Generator().manual_seed(0)

    singular = np.zeros((length, k))
    log_sig = np.zeros(length)
    lyap_sum = torch.zeros(batch, lyapunov_k, dtype=torch.float64)
    q = None
    if lyapunov_k:
        q0 = torch.randn(batch, dim, lyapunov_k, generator=gen, dtype=torch.float64)
        q = _orthonormal(q0).to(s0.device, s0.dtype)
    v_warm = None
    width = dim if exact else min(dim, max(k + oversample, lyapunov_k))
    s = s0.detach()
    for t in range(length):
        lin = Linearization(step, x[:, t], s, width)
        if exact:
            jac = lin.dense()
            sig = torch.linalg.svdvals(jac)[:, :k]
            jq = jac @ q if q is not None else None
        else:
            n_iter = iters if v_warm is None else warm_iters
            sig, v_warm = _power(lin, k, n_iter, v_warm, gen)
            jq = lin.j(q) if q is not None else None
        sig64 = sig.detach().double().cpu()
        singular[t] = sig64.mean(0).numpy()
        log_sig[t] = torch.log(sig64[:, 0].clamp_min(_TINY)).mean().item()
        if jq is not None:
            q, r = torch.linalg.qr(jq)
            if t >= warmup:
                diag = torch.diagonal(r, dim1=1, dim2=2).detach().double().abs().cpu()
                lyap_sum += torch.log(diag.clamp_min(_TINY))
        s = lin.value
    counted = length - warmup
    lyap = (lyap_sum / counted).sort(dim=1, descending=True).values.mean(0).numpy()
    return Spectrum(
        singular=singular,
        log_product=np.cumsum(log_sig),
        lyapunov=lyap,
        method="exact" if exact else "power",
        state_size=dim,
        label=label,
    )
