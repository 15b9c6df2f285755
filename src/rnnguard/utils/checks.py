"""Argument checks for the whole package, one message style and one exception policy.

A value of the wrong type raises :class:`~rnnguard.errors.ConfigTypeError` (also a ``TypeError``),
a value out of range :class:`~rnnguard.errors.ConfigError` (a ``ValueError``), a tensor of the
wrong shape :class:`~rnnguard.errors.ShapeError` (also a ``RuntimeError``); see
:mod:`rnnguard.errors`. Each check returns the value it accepted, so ``self.n = positive_int("n", n)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from rnnguard.errors import ConfigError, ConfigTypeError, ShapeError

__all__ = [
    "boolean",
    "choice",
    "dropout_rate",
    "fraction",
    "in_range",
    "integer",
    "number",
    "positive_float",
    "positive_int",
    "probability",
    "sequence_input",
]


def _got(value: Any) -> str:
    """``value`` as type errors show it: its repr and its type."""
    return f"{value!r} ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[minimum, maximum]`` (either optional)."""
    if maximum is not None:
        bound = f" in [{minimum if minimum is not None else '-inf'}, {maximum}]"
    else:
        bound = "" if minimum is None else f" >= {minimum}"
    if not _is_int(value):
        raise ConfigTypeError(f"{name} must be an int{bound}, got {_got(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be an int{bound}, got {value!r}")
    return int(value)


MAX_SEED = 2**63 - 1
"""Largest seed every generator takes (torch, numpy's SeedSequence, Python's random)."""


def seed(name: str, value: Any) -> int:
    """Return ``value`` if it is an int seed from 0 to :data:`MAX_SEED`."""
    if not _is_int(value):
        raise ConfigTypeError(f"{name} must be an int from 0 to {MAX_SEED}, got {_got(value)}")
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be an int from 0 to 2**63 - 1 = {MAX_SEED}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool)."""
    if not _is_int(value):
        raise ConfigTypeError(f"{name} must be a positive int, got {_got(value)}")
    if value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def number(name: str, value: Any, *, positive: bool = False, zero_ok: bool = False) -> float:
    """Return ``value`` as float if it is a real number, not NaN; ``positive``: > 0 (>= 0 with ``zero_ok``)."""
    if not _is_real(value):
        raise ConfigTypeError(f"{name} must be a number, got {_got(value)}")
    if math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if positive and (value < 0 or (value == 0 and not zero_ok)):
        raise ConfigError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")
    return float(value)


def in_range(name: str, value: Any, low: float, high: float) -> float:
    """Return ``value`` as float if it is a real number in ``[low, high]``."""
    if not _is_real(value):
        raise ConfigTypeError(f"{name} must be a number in [{low:g}, {high:g}], got {_got(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def positive_float(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite number > 0."""
    if not _is_real(value):
        raise ConfigTypeError(f"{name} must be a positive number, got {_got(value)}")
    if not (float(value) > 0.0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def probability(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a number in [0, 1)."""
    if not _is_real(value):
        raise ConfigTypeError(f"{name} must be a float in [0, 1), got {_got(value)}")
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value}")
    return float(value)


def dropout_rate(name: str, value: Any) -> float:
    """Return ``value`` as float if torch.nn's recurrent layers accept it: a non-bool number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise ConfigTypeError(f"{name} must be a number in [0, 1], got {_got(value)}")
    try:
        inside = 0 <= value <= 1  # type: ignore[operator]
    except TypeError:  # complex numbers have no order
        raise ConfigTypeError(
            f"{name} must be a real number in [0, 1], got {_got(value)}"
        ) from None
    if not inside:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value}")
    return float(value)  # type: ignore[arg-type]


def boolean(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{name} must be a bool, got {_got(value)}")
    return value


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``."""
    opts = tuple(options)
    if value not in opts:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, opts))}, got {value!r}")
    return str(value)


def sequence_input(x: Any, input_size: int) -> None:
    """Check that ``x`` is a 3-D tensor (batch-first or time-major) with ``input_size`` features."""
    from torch import Tensor  # utils stays importable without torch

    if not isinstance(x, Tensor):
        raise ConfigTypeError(f"input must be a Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ShapeError(
            f"input must have shape (batch, time, {input_size}) (or time-major), "
            f"got {tuple(x.shape)}"
        )


def fraction(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a number strictly between 0 and 1."""
    if not _is_real(value):
        raise ConfigTypeError(f"{name} must be a number in (0, 1), got {_got(value)}")
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)
