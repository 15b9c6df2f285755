"""Tasks: the Task protocol, a registry, and the built-in synthetic problems."""

from rnnguard.tasks.adding import AddingTask
from rnnguard.tasks.base import (
    BaseTask,
    ClassificationTask,
    StepClassificationTask,
    Task,
    TaskSpec,
)
from rnnguard.tasks.copy import CopyTask
from rnnguard.tasks.registry import TaskInfo, create_task, list_tasks, register_task

__all__ = [
    "AddingTask",
    "BaseTask",
    "ClassificationTask",
    "CopyTask",
    "StepClassificationTask",
    "Task",
    "TaskInfo",
    "TaskSpec",
    "create_task",
    "list_tasks",
    "register_task",
]
from rnnguard.tasks import mnist, text  # noqa: F401  (register ptb-char, text, smnist, pmnist)
