"""Registry of named tasks: ``register_task``, ``list_tasks``, ``create_task``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rnnguard.utils.registry import Entry, Registry

__all__ = ["TASKS", "TaskInfo", "create_task", "list_tasks", "register_task"]

F = TypeVar("F", bound=Callable[..., Any])

#: A registered task: ``name``, ``obj`` (class or factory), ``description``, ``metadata``.
TaskInfo = Entry[Callable[..., Any]]

# The built-in tasks register themselves when their module is imported; the registry imports
# them on first lookup, so ``create_task("ptb-char")`` works without importing the module first.
TASKS: Registry[Callable[..., Any]] = Registry(
    "task",
    builtins=(
        "rnnguard.tasks.adding",
        "rnnguard.tasks.copy",
        "rnnguard.tasks.text",
        "rnnguard.tasks.synthlang",
        "rnnguard.tasks.mnist",
    ),
)


def register_task(name: str, description: str = "", **metadata: Any) -> Callable[[F], F]:
    """Class or factory decorator registering a task under ``name``."""
    return TASKS.decorator(name, description, **metadata)


def list_tasks() -> dict[str, TaskInfo]:
    """All registered tasks by name, sorted."""
    return dict(sorted(TASKS.entries().items()))


def create_task(name: str, length: int | None = None, **kwargs: Any) -> Any:
    """Instantiate the task registered as ``name`` (``length`` is passed on when given).

    Example:
        >>> task = create_task("adding", length=200)
        >>> task.spec.input_size
        2
    """
    factory = TASKS.get(name)
    if length is not None:
        kwargs["length"] = length
    return factory(**kwargs)
