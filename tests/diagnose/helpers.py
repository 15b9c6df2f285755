"""Small hand-built recurrent models whose gradients have closed forms."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def orthogonal(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random n x n orthogonal matrix."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


class LinearRNN(nn.Module):
    """h_t = W h_{t-1} + x_t, output h_t for every step (batch first)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        return h @ self.weight.T + x_t

    def forward(self, x: Tensor) -> Tensor:
        h = x.new_zeros(x.shape[0], self.weight.shape[0])
        outs = []
        for t in range(x.shape[1]):
            h = self.step(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, 1)


class TanhRNN(LinearRNN):
    """h_t = tanh(W h_{t-1} + x_t)."""

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(h @ self.weight.T + x_t)
