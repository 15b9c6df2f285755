"""Argument checks for configuration values outside the layers (``rnnguard.nn`` has its own)."""

from __future__ import annotations

from typing import Any

from rnnguard.errors import ConfigError


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def integer(name: str, value: Any) -> int:
    """Return ``value`` if it is an int (not a bool), else raise ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    return value
