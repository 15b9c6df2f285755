"""Exceptions with messages meant for users (the CLI prints them as one line).

The policy, one for the whole package:

- a bad argument value raises :class:`ConfigError` (a ``ValueError``);
- an argument of the wrong type raises :class:`ConfigTypeError` (a ``ConfigError`` and a
  ``TypeError``), so ``except TypeError`` works as it does with torch.nn and ``except
  ConfigError`` catches every bad argument;
- a tensor of the wrong shape given to a layer or cell raises :class:`ShapeError` (a
  ``ConfigError`` and a ``RuntimeError``, the type torch.nn raises there);
- a state on another device than the input, or of another dtype, raises :class:`DeviceError`
  (a ``ConfigError`` and a ``RuntimeError``, as torch.nn);
- every message names the argument, what it got and what was expected:
  ``"hidden_size must be a positive int, got 0"``.

Where torch.nn raises yet another built-in type for the same mistake, derive a class from
``ConfigError`` and that type here, beside these. The checks that raise them live in
:mod:`rnnguard.utils.checks`.
"""


class RnnguardError(Exception):
    """Base class for errors that carry a complete, user-facing message."""


class ConfigError(RnnguardError, ValueError):
    """A bad argument or configuration value; the message names the argument and what was expected."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument of the wrong type (an ``int`` expected, a ``float`` given...)."""


class ShapeError(ConfigError, RuntimeError):
    """A tensor whose shape (or layout) does not fit the layer, cell or function it was given to."""


class DeviceError(ConfigError, RuntimeError):
    """A tensor on another device (or of another dtype) than the tensors it is used with."""


class DataError(RnnguardError, FileNotFoundError):
    """Missing or corrupt data; the message says where it was looked for and how to get it."""


class MissingExtraError(RnnguardError, ImportError):
    """An optional dependency is missing; the message names the pip extra that provides it."""


def require_extra(module: str, extra: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install rnnguard[extra]``."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"this feature needs the optional package '{module}': pip install 'rnnguard[{extra}]'"
        ) from exc
