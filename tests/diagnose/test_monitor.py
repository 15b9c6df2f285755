from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnguard.diagnose.horizon import input_horizon
from rnnguard.diagnose.monitor import HorizonMonitor
from rnnguard.errors import ConfigError
from rnnguard.tasks.registry import create_task
from rnnguard.train.callbacks import Callback
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import get_recipe
from rnnguard.train.trainer import fit
from rnnguard.utils.io import read_jsonl


class _Final(Callback):
    """Keeps the trained model."""

    def on_train_end(self, ctx: Any, result: Any) -> None:
        self.model = ctx.model


def test_monitor_logs_the_horizon_every_n_steps(tmp_path: Path) -> None:
    mon = HorizonMonitor(every=2, batch_size=4)
    final = _Final()
    config = TrainConfig(
        steps=6, batch_size=4, eval_every=0, progress=False, stop_when_solved=False,
        out=str(tmp_path), checkpoint_every=0, tensorboard=False,
    )  # fmt: skip
    task = create_task("adding", length=12)
    start = time.perf_counter()
    result = fit(get_recipe("vanilla").replace(hidden_size=4), task, config, [mon, final])
    wall = time.perf_counter() - start
    assert [r["step"] for r in mon.records] == [2, 4, 6]
    assert all(r["max_distance"] == 11 for r in mon.records)
    # Its time is its own share of the run's, and the last record measured the final model
    # on the fixed probe batch (the monitor runs after the step's update).
    assert 0 < mon.seconds < wall
    x, _ = task.batch(4, torch.Generator().manual_seed(0))
    again = input_horizon(final.model, x, threshold=1e-3)
    assert mon.records[-1]["horizon"] == again.horizon
    assert mon.records[-1]["far_ratio"] == pytest.approx(again.far_ratio, rel=1e-5)
    logged = [r for r in result.history if r.get("diagnostic") == "horizon"]
    assert [r["step"] for r in logged] == [2, 4, 6]
    on_disk = [
        r for r in read_jsonl(tmp_path / "metrics.jsonl") if r.get("diagnostic") == "horizon"
    ]
    assert len(on_disk) == 3 and "rate_per_step" in on_disk[0]


def test_monitor_arguments() -> None:
    with pytest.raises(ConfigError, match="every"):
        HorizonMonitor(every=0)
    with pytest.raises(ConfigError, match="threshold"):
        HorizonMonitor(threshold=1.5)
    with pytest.raises(ConfigError, match="seed"):
        HorizonMonitor(seed=1.5)  # type: ignore[arg-type]
