"""Argument checks shared by layers, cells and initialisers (messages name argument, value, expectation)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from torch import Tensor

from rnnguard.errors import ConfigError


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive int; TypeError for a non-int, ConfigError for <= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value}")
    return value


def boolean(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def probability(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value}")
    return float(value)


def dropout_rate(name: str, value: Any) -> float:
    """Return ``value`` as float if torch.nn's recurrent layers accept it: a non-bool number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__} {value!r}")
    try:
        inside = 0 <= value <= 1  # type: ignore[operator]
    except TypeError:  # complex numbers have no order
        raise TypeError(
            f"{name} must be a real number in [0, 1], got {type(value).__name__} {value!r}"
        ) from None
    if not inside:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value}")
    return float(value)  # type: ignore[arg-type]


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``."""
    opts = tuple(options)
    if value not in opts:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, opts))}, got {value!r}")
    return str(value)


def positive_float(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not (float(value) > 0.0 and float(value) != float("inf")):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def sequence_input(x: Any, input_size: int) -> None:
    """Check that ``x`` is a 3-D tensor (batch-first or time-major) with ``input_size`` features."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ConfigError(
            f"input must have shape (batch, time, {input_size}) (or time-major), "
            f"got {tuple(x.shape)}"
        )
