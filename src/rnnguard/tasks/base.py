"""The Task protocol every trainable problem follows, and a base class with the shared parts."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import torch

from rnnguard.utils.checks import integer, positive_int


class TaskSpec(NamedTuple):
    """Shapes a model needs to be built for a task."""

    input_size: int
    """Features per step, or the vocabulary size when ``token_input`` is true."""
    output_size: int
    """Outputs per step (regression targets or classes)."""
    token_input: bool
    """Inputs are integer tokens of shape (B, T) rather than floats (B, T, input_size)."""
    output_mode: Literal["last", "sequence"]
    """Whether only the last step's output is scored or every step's."""


@runtime_checkable
class Task(Protocol):
    """What the trainer, the benchmark and the tuner need from a task.

    ``batch`` draws ``(x, y)`` on the CPU from the given generator; ``loss`` and ``metric`` take the
    model's full output ``(B, T, output_size)``. Optional attributes: ``stateful = True`` (consecutive
    batches continue the same streams) and ``evaluate(model, device) -> dict[str, float]``.
    """

    name: str
    length: int
    spec: TaskSpec
    metric_name: str
    higher_is_better: bool
    solved_threshold: float
    baseline: float

    def batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def metric(self, output: torch.Tensor, y: torch.Tensor) -> float: ...

    def is_solved(self, metric: float) -> bool: ...


def check_length(length: object, minimum: int = 2) -> int:
    """Validate a sequence length argument."""
    return integer("length", length, minimum)


def check_batch_size(batch_size: object) -> int:
    return positive_int("batch_size", batch_size)


class BaseTask:
    """Shared behaviour: ``is_solved`` from the threshold and direction, a readable repr."""

    name: str = "task"
    length: int = 0
    spec: TaskSpec
    metric_name: str = "loss"
    higher_is_better: bool = False
    solved_threshold: float = 0.0
    baseline: float = float("nan")
    stateful: bool = False

    def is_solved(self, metric: float) -> bool:
        """Whether a held-out metric value passes the task's threshold."""
        if metric != metric:  # NaN never solves
            return False
        if self.higher_is_better:
            return metric >= self.solved_threshold
        return metric <= self.solved_threshold

    @property
    def trivial_loss(self) -> float | None:
        """Training loss of a predictor that ignores its input (None when unknown).

        The trainer judges a loss blow-up against it, so it is what an untrained model scores:
        uniform guessing over the classes (``log(output_size)`` nats) for a classification task,
        predicting zeros for a regression.
        """
        return None

    def extra_metrics(self, output: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Additional held-out metrics reported next to the main one (none by default)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


class ClassificationTask(BaseTask):
    """A task scored by cross-entropy over ``spec.output_size`` classes."""

    @property
    def trivial_loss(self) -> float:
        """Cross-entropy of uniform guessing over the output classes."""
        return math.log(self.spec.output_size)


class StepClassificationTask(ClassificationTask):
    """A class to predict at every step: ``y`` (B, T) of class indices."""

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over every step of every sequence."""
        return torch.nn.functional.cross_entropy(output.float().flatten(0, 1), y.flatten())
