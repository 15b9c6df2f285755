"""Registry of named tasks: ``register_task``, ``list_tasks``, ``create_task``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rnnguard.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class TaskInfo:
    """Metadata of a registered task."""

    name: str
    factory: Callable[..., Any]
    description: str


_TASKS: dict[str, TaskInfo] = {}
# Modules whose tasks register themselves on import; loaded on first lookup so that
# ``create_task("ptb-char")`` works without the caller importing the module first.
_BUILTIN_MODULES = (
    "rnnguard.tasks.adding",
    "rnnguard.tasks.copy",
    "rnnguard.tasks.text",
    "rnnguard.tasks.synthlang",
    "rnnguard.tasks.mnist",
)
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


def register_task(name: str, description: str = "") -> Callable[[T], T]:
    """Class or factory decorator registering a task under ``name``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"task name must be a non-empty string, got {name!r}")

    def deco(factory: T) -> T:
        doc = description or (factory.__doc__ or "").strip().split("\n")[0]
        _TASKS[name] = TaskInfo(name, factory, doc)
        return factory

    return deco


def list_tasks() -> dict[str, TaskInfo]:
    """All registered tasks by name."""
    _load_builtins()
    return dict(sorted(_TASKS.items()))


def create_task(name: str, length: int | None = None, **kwargs: Any) -> Any:
    """Instantiate the task registered as ``name`` (``length`` is passed on when given).

    Example:
        >>> task = create_task("adding", length=200)
        >>> task.spec.input_size
        2
    """
    _load_builtins()
    if name not in _TASKS:
        known = ", ".join(sorted(_TASKS)) or "none"
        raise ConfigError(f"unknown task {name!r}; expected one of: {known}")
    if length is not None:
        kwargs["length"] = length
    return _TASKS[name].factory(**kwargs)
