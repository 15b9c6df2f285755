"""Denormal floats flushed to zero during training steps only (rnnguard.utils.cpu)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rnnguard.models import SequenceModel
from rnnguard.tasks import AddingTask
from rnnguard.train.callbacks import Callback
from rnnguard.train.config import TrainConfig
from rnnguard.train.trainer import fit
from rnnguard.utils.cpu import flush_denormals

TINY = 1e-39  # a float32 denormal


def _tiny_survives() -> bool:
    return (torch.tensor(TINY, dtype=torch.float32) * 1.0).item() != 0.0


def test_flush_inside_the_block_only() -> None:
    assert _tiny_survives()
    with flush_denormals() as active:
        if not active:
            pytest.skip("this CPU cannot flush denormals")
        assert not _tiny_survives()
    assert _tiny_survives()
    with pytest.raises(RuntimeError), flush_denormals():
        raise RuntimeError("boom")
    assert _tiny_survives()  # restored on the way out of an error too
    with flush_denormals(False) as active:
        assert active is False and _tiny_survives()


class _Probe(AddingTask):
    """An adding task whose loss notes whether denormals survive where it is computed."""

    seen: list[bool]

    def loss(self, output: Any, target: Any) -> Any:
        self.seen.append(_tiny_survives())
        return super().loss(output, target)


class _StepEnd(Callback):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_step_end(self, ctx: Any, record: dict) -> None:
        self.seen.append(_tiny_survives())


@pytest.mark.parametrize("flush", [True, False])
def test_training_steps_flush_denormals_and_callbacks_do_not(flush: bool) -> None:
    with flush_denormals() as active:
        if not active:
            pytest.skip("this CPU cannot flush denormals")
    task = _Probe(6)
    task.seen = []
    model = SequenceModel(task.spec, "rnn", hidden_size=4)
    steps = _StepEnd()
    config = TrainConfig(steps=3, eval_every=3, batch_size=4, progress=False, eval_batches=1,
                         flush_denormals=flush)  # fmt: skip
    fit(model, task, config, [steps])
    # three training losses (then the evaluation's, computed with normal arithmetic)
    assert task.seen[:3] == [not flush] * 3 and task.seen[3:] == [True] * (len(task.seen) - 3)
    assert steps.seen == [True] * 3 and _tiny_survives()
