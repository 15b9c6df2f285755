"""Exceptions with messages meant for users (the CLI prints them as one line)."""


class RnnguardError(Exception):
    """Base class for errors that carry a complete, user-facing message."""


class ConfigError(RnnguardError, ValueError):
    """A bad argument or configuration value; the message names the argument and what was expected."""


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
