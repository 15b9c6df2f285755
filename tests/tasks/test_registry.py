"""Task registry."""

from __future__ import annotations

import pytest

from rnnguard.errors import ConfigError
from rnnguard.tasks import Task, create_task, list_tasks, register_task


def test_builtin_tasks_registered_and_follow_protocol() -> None:
    tasks = list_tasks()
    assert {"adding", "copy"} <= set(tasks)
    assert tasks["adding"].description
    for name in ("adding", "copy"):
        assert isinstance(create_task(name, length=10), Task)


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'nope'.*adding"):
        create_task("nope")


def test_register_custom_task() -> None:
    @register_task("_test_dummy", description="dummy")
    def make(length: int = 3) -> object:
        return ("dummy", length)

    try:
        assert create_task("_test_dummy", length=7) == ("dummy", 7)
        assert create_task("_test_dummy") == ("dummy", 3)
    finally:
        from rnnguard.tasks import registry

        registry.TASKS.unregister("_test_dummy")
