from __future__ import annotations

from pathlib import Path

import pytest

from rnnguard.diagnose.monitor import HorizonMonitor
from rnnguard.errors import ConfigError
from rnnguard.tasks.registry import create_task
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import get_recipe
from rnnguard.train.trainer import fit
from rnnguard.utils.io import read_jsonl


def test_monitor_logs_the_horizon_every_n_steps(tmp_path: Path) -> None:
    mon = HorizonMonitor(every=2, batch_size=4)
    config = TrainConfig(
        steps=6, batch_size=4, eval_every=0, progress=False, stop_when_solved=False,
        out=str(tmp_path), checkpoint_every=0, tensorboard=False,
    )  # fmt: skip
    result = fit(
        get_recipe("vanilla").replace(hidden_size=4),
        create_task("adding", length=12),
        config,
        [mon],
    )
    assert [r["step"] for r in mon.records] == [2, 4, 6]
    assert all(r["max_distance"] == 11 for r in mon.records)
    assert mon.seconds > 0
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
