"""Registry of sequence layers by name: ``register_layer``, ``list_layers``, ``create_layer``.

A registered class called with ``batch_first=True`` maps ``(B, T, input_size)`` to
``(output (B, T, F), state)`` and exposes ``output_size`` (F).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from rnnguard.utils import checks
from rnnguard.utils.registry import Entry, Registry

__all__ = [
    "LAYERS",
    "LayerInfo",
    "contract_args",
    "create_layer",
    "list_layers",
    "register_layer",
]

C = TypeVar("C", bound=type[nn.Module])

#: A registered layer: ``name``, ``obj`` (the class), ``description``, ``metadata``.
LayerInfo = Entry[type[nn.Module]]

LAYERS: Registry[type[nn.Module]] = Registry("layer")


def register_layer(name: str, description: str = "", **metadata: Any) -> Callable[[C], C]:
    """Class decorator registering a sequence layer under ``name``."""
    return LAYERS.decorator(name, description, **metadata)


def list_layers() -> dict[str, LayerInfo]:
    """All registered layers by name."""
    return LAYERS.entries()


def create_layer(name: str, **kwargs: Any) -> nn.Module:
    """Build the layer registered as ``name``: ``create_layer("lstm", input_size=3, hidden_size=8)``."""
    return LAYERS.get(name)(**kwargs)


def contract_args(
    input_size: int, hidden_size: int, num_layers: int, batch_first: bool, dropout: float
) -> tuple[int, int, int, bool, float]:
    """The arguments every registered layer takes, checked: ``(input_size, hidden_size,
    num_layers, batch_first, dropout)``."""
    return (
        checks.positive_int("input_size", input_size),
        checks.positive_int("hidden_size", hidden_size),
        checks.positive_int("num_layers", num_layers),
        checks.boolean("batch_first", batch_first),
        checks.probability("dropout", dropout),
    )
