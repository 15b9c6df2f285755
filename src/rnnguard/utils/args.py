"""Command-line argument helpers shared by the areas' ``commands`` modules."""

from __future__ import annotations

from typing import Any

from rnnguard.errors import ConfigError


def parse_pairs(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings given to ``flag`` as a dict; values read as YAML scalars (numbers, booleans)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out
