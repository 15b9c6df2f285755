"""Linear Recurrent Unit (Orvieto et al., 2023) computed with a parallel (chunked) scan.

One LRU recurrence is ``x_t = lambda * x_{t-1} + gamma * (B u_t)``, ``y_t = Re(C x_t) + D * u_t``
with a diagonal complex ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` initialised uniformly on
the ring ``r_min <= |lambda| <= r_max`` and the normalisation ``gamma = sqrt(1 - |lambda|^2)``.
Because ``lambda`` does not depend on the input, the whole sequence is computed without a Python
loop over time: inside chunks of ``chunk_size`` steps the recurrence is a (causal, Toeplitz)
matrix product, and the chunk-to-chunk carries are combined by a log-depth associative scan.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnguard.errors import ConfigError
from rnnguard.nn.registry import contract_args, register_layer
from rnnguard.utils import checks as _checks

__all__ = ["LRU", "LRUCore", "linear_scan"]


def _scan_constant(b: Tensor, log_a: Tensor) -> Tensor:
    """Inclusive scan ``h_k = a * h_{k-1} + b_k`` over dim 1 for a constant ``a = exp(log_a)``.

    Log-depth (Hillis-Steele): after the step with offset ``d`` every ``h_k`` holds the sum over the
    last ``2 d`` inputs, so ``ceil(log2 K)`` vectorised steps cover the sequence.
    """
    h = b
    k = b.shape[1]
    d = 1
    while d < k:
        coef = torch.exp(log_a * d)
        h = torch.cat([h[:, :d], h[:, d:] + coef * h[:, :-d]], dim=1)
        d *= 2
    return h


def linear_scan(
    b: Tensor, log_lambda: Tensor, h0: Tensor | None = None, chunk_size: int = 32
) -> Tensor:
    """All states of ``h_t = lambda * h_{t-1} + b_t`` for ``b`` (B, T, N) and ``log_lambda`` (N,).

    ``h0`` (B, N) is the state before step 0 (zero when None). Complex or real tensors.
    """
    batch, steps, n = b.shape
    c = max(1, min(chunk_size, steps))
    pad = (-steps) % c
    if pad:
        b = torch.cat([b, b.new_zeros(batch, pad, n)], dim=1)
    k = b.shape[1] // c
    chunks = b.reshape(batch, k, c, n)
    # Toeplitz kernel L[t, s, n] = lambda_n^(t - s) for t >= s, else 0.
    idx = torch.arange(c, device=b.device)
    diff = idx[:, None] - idx[None, :]
    causal = (diff >= 0).to(b.real.dtype if b.is_complex() else b.dtype)
    kernel = (
        torch.exp(diff.clamp(min=0)[:, :, None].to(log_lambda.dtype) * log_lambda)
        * causal[:, :, None]
    )
    intra = torch.einsum("tsn,bksn->bktn", kernel, chunks)
    # Carry between chunks: the state entering chunk j is a scan over chunk ends with a = lambda^c.
    ends = intra[:, :, -1]
    if h0 is None:
        h0 = torch.zeros_like(ends[:, 0])
    # S_0 = h0, S_j = lambda^c S_{j-1} + end_{j-1}: S_j is the state entering chunk j.
    incoming = _scan_constant(torch.cat([h0[:, None].to(ends.dtype), ends], dim=1), log_lambda * c)
    incoming = incoming[:, :k]
    decay = torch.exp((idx + 1)[:, None].to(log_lambda.dtype) * log_lambda)  # lambda^(t+1)
    h = intra + decay[None, None] * incoming[:, :, None]
    return h.reshape(batch, k * c, n)[:, :steps]


class LRUCore(nn.Module):
    """One LRU recurrence mapping (B, T, d_model) to (B, T, d_model) through ``state_size`` complex units."""

    def __init__(
        self,
        d_model: int,
        state_size: int,
        *,
        r_min: float = 0.0,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        self.d_model = _checks.positive_int("d_model", d_model)
        self.state_size = _checks.positive_int("state_size", state_size)
        self.chunk_size = _checks.positive_int("chunk_size", chunk_size)
        for name, value in (("r_min", r_min), ("r_max", r_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float in [0, 1), got {value!r}")
        if not 0.0 <= r_min < r_max < 1.0:
            raise ConfigError(
                f"r_min and r_max must satisfy 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}"
            )
        _checks.positive_float("max_phase", max_phase)
        n = self.state_size
        # Ring init: |lambda|^2 uniform on [r_min^2, r_max^2], phase uniform on [0, max_phase].
        u1, u2 = torch.rand(n), torch.rand(n)
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        theta = (u2 * max_phase).clamp(min=1e-4)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(theta))
        mod = torch.exp(-nu)
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - mod**2)))
        self.B_re = nn.Parameter(torch.randn(n, d_model) / math.sqrt(2 * d_model))
        self.B_im = nn.Parameter(torch.randn(n, d_model) / math.sqrt(2 * d_model))
        self.C_re = nn.Parameter(torch.randn(d_model, n) / math.sqrt(n))
        self.C_im = nn.Parameter(torch.randn(d_model, n) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(d_model))

    def log_lambda(self) -> Tensor:
        """``log(lambda)`` as a complex vector (N,)."""
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def forward(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``u`` (B, T, d_model) to ``(y (B, T, d_model), last complex state (B, N))``."""
        # Real matmuls for the projections: the input and output are real, so complex matmuls
        # would only add conversions (and are slower on CPU).
        # The recurrence runs in float32 even under autocast: complex half types have no matmul
        # kernels, and a linear recurrence over long T is exactly where low precision hurts.
        with torch.autocast(device_type=u.device.type, enabled=False):
            gamma = torch.exp(self.gamma_log)[:, None]
            u32 = u.float()
            bu = torch.complex(u32 @ (self.B_re * gamma).t(), u32 @ (self.B_im * gamma).t())
            x = linear_scan(bu, self.log_lambda(), state, self.chunk_size)
            y = x.real @ self.C_re.t() - x.imag @ self.C_im.t()
            return y.to(u.dtype) + self.D * u, x[:, -1]


@register_layer("lru", description="Linear Recurrent Unit (Orvieto et al. 2023), parallel scan")
class LRU(nn.Module):
    """Stack of LRU blocks: ``LayerNorm -> LRU -> GELU -> GLU projection -> residual``.

    Constructor and call follow the registry contract: ``LRU(input_size, hidden_size, num_layers,
    batch_first=True)(x)`` maps (B, T, input_size) to ``(output (B, T, hidden_size), state)``; the
    state is a complex tensor (num_layers, B, state_size) holding each layer's last recurrent state,
    and can be passed back to continue a stream.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        dropout: float = 0.0,
        *,
        state_size: int | None = None,
        r_min: float = 0.0,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
        chunk_size: int = 32,
    ) -> None:
        super().__init__()
        (self.input_size, self.hidden_size, self.num_layers, self.batch_first, self.dropout) = (
            contract_args(input_size, hidden_size, num_layers, batch_first, dropout)
        )
        self.state_size = _checks.positive_int(
            "state_size", hidden_size if state_size is None else state_size
        )
        self.output_size = hidden_size
        self.encoder = nn.Linear(input_size, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))
        self.cores = nn.ModuleList(
            LRUCore(
                hidden_size,
                self.state_size,
                r_min=r_min,
                r_max=r_max,
                max_phase=max_phase,
                chunk_size=chunk_size,
            )
            for _ in range(num_layers)
        )
        self.mixers = nn.ModuleList(
            nn.Linear(hidden_size, 2 * hidden_size) for _ in range(num_layers)
        )
        self.drop = nn.Dropout(self.dropout)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the stack; ``state`` is None or the complex (num_layers, B, state_size) of a previous call."""
        _checks.sequence_input(x, self.input_size)
        if not self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[0]
        if state is not None:
            expected = (self.num_layers, batch, self.state_size)
            if not isinstance(state, Tensor) or tuple(state.shape) != expected:
                got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
                raise ConfigError(f"state must have shape {expected}, got {got}")
        h = self.encoder(x)
        finals = []
        for i in range(self.num_layers):
            z, last = self.cores[i](self.norms[i](h), None if state is None else state[i])
            z = nn.functional.glu(self.mixers[i](nn.functional.gelu(z)), dim=-1)
            h = h + self.drop(z)
            finals.append(last)
        out = h if self.batch_first else h.transpose(0, 1)
        return out, torch.stack(finals)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"state_size={self.state_size}, batch_first={self.batch_first}"
        )
