"""One checks module, one exception policy (rnnguard.errors, rnnguard.utils.checks)."""

from __future__ import annotations

import math

import pytest
import torch

import rnnguard
from rnnguard.errors import ConfigError, ConfigTypeError, ShapeError
from rnnguard.train.config import GuardConfig, OptimConfig, ScheduleConfig, TrainConfig
from rnnguard.train.guard import GradientGuard
from rnnguard.utils import checks


def test_a_wrong_type_is_both_a_type_error_and_a_config_error() -> None:
    for call in (
        lambda: checks.positive_int("hidden_size", 2.5),
        lambda: checks.integer("seed", "3"),
        lambda: checks.boolean("bias", 1),
        lambda: checks.number("lr", "fast"),
        lambda: checks.probability("p", None),
    ):
        with pytest.raises(ConfigTypeError) as info:
            call()
        assert isinstance(info.value, TypeError) and isinstance(info.value, ConfigError)


def test_a_bad_value_is_a_config_error_only() -> None:
    with pytest.raises(ConfigError, match=r"^hidden_size must be a positive int, got 0$") as info:
        checks.positive_int("hidden_size", 0)
    assert not isinstance(info.value, TypeError)
    with pytest.raises(ConfigError, match=r"steps must be an int >= 0, got -1"):
        checks.integer("steps", -1, minimum=0)
    with pytest.raises(ConfigError, match=r"lr must be > 0, got 0"):
        checks.number("lr", 0, positive=True)
    with pytest.raises(ConfigError, match="must be a number, got nan"):
        checks.number("lr", math.nan)
    with pytest.raises(ConfigError, match=r"threshold must be a number in \(0, 1\), got 1"):
        checks.fraction("threshold", 1)


def test_messages_name_the_type_when_the_value_hides_it() -> None:
    with pytest.raises(ConfigTypeError, match=r"got True \(bool\)$"):
        checks.positive_int("n", True)
    with pytest.raises(ConfigTypeError, match=r"got '3' \(str\)$"):
        checks.positive_int("n", "3")


def test_checks_return_what_they_accept() -> None:
    assert checks.positive_int("n", 3) == 3 and checks.integer("s", -2) == -2
    assert checks.number("wd", 0, positive=True, zero_ok=True) == 0.0
    assert checks.fraction("t", 0.5) == 0.5 and checks.choice("m", "a", ("a", "b")) == "a"


def test_a_wrong_shape_is_a_runtime_error_as_in_torch() -> None:
    with pytest.raises(ShapeError) as info:
        checks.sequence_input(torch.zeros(2, 3), 3)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ConfigError)


def test_layers_configs_and_diagnostics_share_the_policy() -> None:
    with pytest.raises(TypeError):
        rnnguard.LSTM(3, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        rnnguard.LSTM(3, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="batch_size"):
        TrainConfig(batch_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"optimizer\.lr must be a number, got nan"):
        OptimConfig(lr=math.nan)


def test_guard_from_config_takes_every_config_field() -> None:
    config = GuardConfig(
        mode="agc", max_norm=2.0, clip_value=0.3, percentile=20.0, agc_clip=0.02,
        explosion_factor=7.0,
    )  # fmt: skip
    guard = GradientGuard.from_config(config, steps_per_epoch=5)
    for name in ("mode", "max_norm", "clip_value", "percentile", "agc_clip", "explosion_factor"):
        assert getattr(guard, name) == getattr(config, name), name
    assert guard.steps_per_epoch == 5


def test_optimiser_and_schedule_configs_build_what_they_describe() -> None:
    import torch
    from torch import nn

    from rnnguard.train.config import OptimConfig, ScheduleConfig

    model = nn.Linear(3, 2)
    opt = OptimConfig(name="adam", lr=0.02, weight_decay=0.1, amsgrad=True, betas=(0.8, 0.9)).build(
        model
    )
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["amsgrad"], group["betas"]) == (
        0.02, 0.1, True, (0.8, 0.9),
    )  # fmt: skip
    sgd = OptimConfig(name="sgd", lr=0.5, momentum=0.3).build(model)
    assert sgd.param_groups[0]["momentum"] == 0.3
    schedule = ScheduleConfig(
        name="warmup-cosine", warmup_fraction=0.1, min_lr_ratio=0.2, warmup_start_ratio=0.5
    ).build(opt, 100)
    assert (schedule.kind, schedule.total_steps, schedule.warmup_steps) == (
        "warmup-cosine",
        100,
        10,
    )
    assert (schedule.min_lr_ratio, schedule.warmup_start_ratio) == (0.2, 0.5)


def test_bounded_checks() -> None:
    assert checks.in_range("r", 0, 0, 1) == 0.0 and checks.in_range("r", 1, 0, 1) == 1.0
    with pytest.raises(ConfigError, match=r"^r must be a number in \[0, 1\], got 1\.5$"):
        checks.in_range("r", 1.5, 0, 1)
    with pytest.raises(ConfigTypeError, match=r"got True \(bool\)"):
        checks.in_range("r", True, 0, 1)
    assert checks.integer("k", 26, 2, 26) == 26
    with pytest.raises(ConfigError, match=r"^k must be an int in \[2, 26\], got 27$"):
        checks.integer("k", 27, 2, 26)
    with pytest.raises(ConfigError, match=r"schedule\.min_lr_ratio must be a number in \[0, 1\]"):
        ScheduleConfig(min_lr_ratio=2.0)
