"""The copy-memory task (Arjovsky et al. 2016): reproduce 10 symbols after a delay of T steps."""

from __future__ import annotations

import math

import torch

from rnnguard.tasks.base import StepClassificationTask, TaskSpec, check_batch_size, check_length
from rnnguard.tasks.registry import register_task

N_DATA = 10  # symbols to remember
N_SYMBOLS = 8  # data alphabet a0..a7
BLANK = 8
DELIMITER = 9
VOCAB = 10


@register_task("copy", description="reproduce 10 symbols after a delay of T blanks (cross-entropy)")
class CopyTask(StepClassificationTask):
    """Copy-memory task with delay ``length`` (sequences have ``length + 20`` steps).

    Input tokens: 10 data symbols from a0..a7, ``T - 1`` blanks (a8), the delimiter (a9), 10 blanks.
    Target: ``T + 10`` blanks, then the 10 data symbols. Loss and metric: cross-entropy in nats
    averaged over all steps. The memoryless baseline (blanks, then uniform over a0..a7) scores
    ``10 ln 8 / (T + 20)``; a loss below a tenth of it counts as solved.
    """

    name = "copy"
    metric_name = "xent"
    higher_is_better = False

    def __init__(self, length: int = 100) -> None:
        self.length = check_length(length, minimum=1)
        self.spec = TaskSpec(
            input_size=VOCAB, output_size=VOCAB, token_input=True, output_mode="sequence"
        )
        self.baseline = N_DATA * math.log(N_SYMBOLS) / (self.length + 2 * N_DATA)
        self.solved_threshold = 0.1 * self.baseline

    def batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw token tensors ``(x, y)``, both (B, T + 20), reproducibly from ``generator``."""
        b, t = check_batch_size(batch_size), self.length
        data = torch.randint(0, N_SYMBOLS, (b, N_DATA), generator=generator)
        x = torch.full((b, t + 2 * N_DATA), BLANK, dtype=torch.long)
        x[:, :N_DATA] = data
        x[:, N_DATA + t - 1] = DELIMITER
        y = torch.full_like(x, BLANK)
        y[:, -N_DATA:] = data
        return x, y

    def metric(self, output: torch.Tensor, y: torch.Tensor) -> float:
        return float(self.loss(output, y).detach())

    def extra_metrics(self, output: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Accuracy on the 10 recalled positions (>= 0.99 is the other usual "solved" criterion)."""
        pred = output[:, -N_DATA:].argmax(-1)
        return {"recall_accuracy": float((pred == y[:, -N_DATA:]).float().mean())}
