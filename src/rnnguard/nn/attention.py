"""Causal Transformer baseline (the guide's attention row) with sinusoidal positional encoding."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnguard.errors import ConfigError
from rnnguard.nn.registry import contract_args, register_layer
from rnnguard.utils import checks as _checks

__all__ = ["CausalTransformer", "sinusoidal_encoding"]


def sinusoidal_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sine/cosine position table (length, dim) of Vaswani et al. 2017."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


def _default_heads(hidden_size: int) -> int:
    # Largest of 8/4/2 that divides the width and keeps heads at least 16 wide, else one head.
    for heads in (8, 4, 2):
        if hidden_size % heads == 0 and hidden_size // heads >= 16:
            return heads
    return 1


@register_layer("transformer", description="causal Transformer encoder with positional encoding")
class CausalTransformer(nn.Module):
    """Causal Transformer: input projection + positions -> ``nn.TransformerEncoder`` (causal mask).

    Registry contract: ``CausalTransformer(input_size, hidden_size, num_layers, batch_first=True)``
    maps (B, T, input_size) to ``(output (B, T, hidden_size), None)``. It carries no state between
    calls, so a language model sees only the current window (state passed in must be None).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        dropout: float = 0.0,
        *,
        num_heads: int | None = None,
        dim_feedforward: int | None = None,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        (self.input_size, self.hidden_size, self.num_layers, self.batch_first, self.dropout) = (
            contract_args(input_size, hidden_size, num_layers, batch_first, dropout)
        )
        heads = _default_heads(hidden_size) if num_heads is None else num_heads
        _checks.positive_int("num_heads", heads)
        if hidden_size % heads:
            raise ConfigError(
                f"num_heads must divide hidden_size={hidden_size}, got num_heads={heads}"
            )
        self.num_heads = heads
        ff = 4 * hidden_size if dim_feedforward is None else dim_feedforward
        _checks.positive_int("dim_feedforward", ff)
        self.output_size = hidden_size
        self.encoder_in = nn.Linear(input_size, hidden_size)
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            heads,
            dim_feedforward=ff,
            dropout=self.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=_checks.boolean("norm_first", norm_first),
        )
        # Nested-tensor fast path is inference-only and warns with norm_first; not wanted here.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden_size) if norm_first else nn.Identity()

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        """Map ``x`` to ``(output, None)``; position t only attends to positions <= t."""
        _checks.sequence_input(x, self.input_size)
        if state is not None:
            raise ConfigError(
                f"state must be None for the transformer (it keeps no state), got {type(state).__name__}"
            )
        if not self.batch_first:
            x = x.transpose(0, 1)
        steps = x.shape[1]
        h = self.encoder_in(x) * math.sqrt(self.hidden_size)
        h = h + sinusoidal_encoding(steps, self.hidden_size, x.device).to(h.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=x.device, dtype=h.dtype)
        out = self.final_norm(self.encoder(h, mask=mask, is_causal=True))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"num_heads={self.num_heads}, batch_first={self.batch_first}"
        )
