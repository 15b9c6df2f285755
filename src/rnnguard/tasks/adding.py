"""The adding problem (Hochreiter & Schmidhuber 1997): remember two marked numbers over T steps."""

from __future__ import annotations

import torch

from rnnguard.tasks.base import BaseTask, TaskSpec, check_batch_size, check_length
from rnnguard.tasks.registry import register_task


@register_task("adding", description="sum of two marked numbers in a length-T sequence (MSE)")
class AddingTask(BaseTask):
    """Adding problem of length ``length``.

    Input (B, T, 2): channel 0 ~ U[0, 1]; channel 1 is 0 except one 1 in the first half and one in
    the second half. Target (B,): the sum of the two marked values. Loss and metric: MSE of the
    last step's output. Always predicting 1 gives MSE 1/6 (the baseline); MSE <= 0.01 is solved.
    """

    name = "adding"
    metric_name = "mse"
    higher_is_better = False
    solved_threshold = 0.01
    baseline = 1.0 / 6.0

    def __init__(self, length: int = 200) -> None:
        self.length = check_length(length)
        self.spec = TaskSpec(input_size=2, output_size=1, token_input=False, output_mode="last")

    def batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(x, y)`` with ``x`` (B, T, 2) and ``y`` (B,), reproducibly from ``generator``."""
        b, t = check_batch_size(batch_size), self.length
        values = torch.rand(b, t, generator=generator)
        half = t // 2
        first = torch.randint(0, half, (b,), generator=generator)
        second = torch.randint(half, t, (b,), generator=generator)
        marks = torch.zeros(b, t)
        rows = torch.arange(b)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        y = values[rows, first] + values[rows, second]
        return torch.stack([values, marks], dim=-1), y

    @property
    def trivial_loss(self) -> float:
        """MSE of always predicting 0, as an untrained model roughly does: E[y^2] = 7/6."""
        return 7.0 / 6.0

    def prediction(self, output: torch.Tensor) -> torch.Tensor:
        return output[:, -1, 0]

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.prediction(output).float(), y.float())

    def metric(self, output: torch.Tensor, y: torch.Tensor) -> float:
        return float(self.loss(output, y).detach())
