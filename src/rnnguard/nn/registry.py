"""Registry of sequence layers by name: ``register_layer``, ``list_layers``, ``create_layer``.

A registered class called with ``batch_first=True`` maps ``(B, T, input_size)`` to
``(output (B, T, F), state)`` and exposes ``output_size`` (F).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from rnnguard.errors import ConfigError

__all__ = ["LayerInfo", "create_layer", "list_layers", "register_layer"]

T = TypeVar("T", bound=type[nn.Module])


@dataclass(frozen=True)
class LayerInfo:
    """A registered layer: its name, class and one-line description."""

    name: str
    cls: type[nn.Module]
    description: str = ""


_LAYERS: dict[str, LayerInfo] = {}


def register_layer(name: str, description: str = "") -> Callable[[T], T]:
    """Class decorator registering a sequence layer under ``name``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"layer name must be a non-empty str, got {name!r}")

    def deco(cls: T) -> T:
        if name in _LAYERS and _LAYERS[name].cls is not cls:
            raise ConfigError(
                f"layer name must be new, got {name!r} (already {_LAYERS[name].cls.__name__})"
            )
        doc = (cls.__doc__ or "").strip().splitlines()
        _LAYERS[name] = LayerInfo(name, cls, description or (doc[0] if doc else ""))
        return cls

    return deco


def list_layers() -> dict[str, LayerInfo]:
    """All registered layers by name."""
    return dict(_LAYERS)


def create_layer(name: str, **kwargs: Any) -> nn.Module:
    """Build the layer registered as ``name`` with ``kwargs``: ``create_layer("lstm", input_size=3, hidden_size=8)``."""
    if name not in _LAYERS:
        raise ConfigError(f"layer name must be one of {sorted(_LAYERS)}, got {name!r}")
    return _LAYERS[name].cls(**kwargs)
