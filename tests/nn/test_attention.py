"""Causal Transformer baseline: registry contract, causality, positions, errors."""

from __future__ import annotations

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.nn.attention import CausalTransformer, sinusoidal_encoding
from rnnguard.nn.registry import create_layer, list_layers


def test_registered_contract() -> None:
    assert "transformer" in list_layers()
    layer = create_layer(
        "transformer", input_size=3, hidden_size=32, num_layers=2, batch_first=True
    )
    assert layer.output_size == 32
    out, state = layer(torch.randn(4, 25, 3))
    assert out.shape == (4, 25, 32) and state is None


def test_causal_mask() -> None:
    layer = CausalTransformer(3, 32, 2, batch_first=True).eval()
    x = torch.randn(2, 20, 3)
    out, _ = layer(x)
    x2 = x.clone()
    x2[:, 12] += 5.0
    out2, _ = layer(x2)
    torch.testing.assert_close(out2[:, :12], out[:, :12])
    assert not torch.allclose(out2[:, 12:], out[:, 12:])


def test_positions_are_encoded() -> None:
    # Identical inputs at every step must still give step-dependent outputs.
    layer = CausalTransformer(2, 16, batch_first=True).eval()
    out, _ = layer(torch.ones(1, 10, 2))
    assert (out[0, 1:] - out[0, :1]).abs().max() > 1e-3
    table = sinusoidal_encoding(7, 6)
    assert table.shape == (7, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))


def test_time_major() -> None:
    layer = CausalTransformer(3, 16).eval()
    x = torch.randn(9, 2, 3)
    out, _ = layer(x)
    ref, _ = CausalTransformer.forward(layer, x)  # same call, deterministic in eval
    assert out.shape == (9, 2, 16)
    torch.testing.assert_close(out, ref)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        CausalTransformer(3, 30, num_heads=4)
    with pytest.raises(ConfigError, match="hidden_size"):
        CausalTransformer(3, 0)
    layer = CausalTransformer(3, 16, batch_first=True)
    with pytest.raises(ConfigError, match="input must have shape"):
        layer(torch.randn(2, 5, 4))
    with pytest.raises(ConfigError, match="state must be None"):
        layer(torch.randn(2, 5, 3), torch.zeros(1))  # type: ignore[arg-type]
