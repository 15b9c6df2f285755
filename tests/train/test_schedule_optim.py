"""Warmup + cosine schedule values, resume, and optimiser parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.train.optim import build_optimizer, param_groups
from rnnguard.train.schedule import WarmupCosineLR, build_scheduler, warmup_cosine


def test_warmup_cosine_values() -> None:
    assert warmup_cosine(0, 110, 10) == pytest.approx(0.1)
    assert warmup_cosine(4, 110, 10) == pytest.approx(0.5)
    assert warmup_cosine(9, 110, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 110, 10) == pytest.approx(1.0)
    assert warmup_cosine(60, 110, 10) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(110, 110, 10) == pytest.approx(0.0)
    assert warmup_cosine(500, 110, 10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(60, 110, 10, min_lr_ratio=0.2) == pytest.approx(0.6)
    # warmup from a floor
    assert warmup_cosine(0, 100, 4, warmup_start_ratio=0.2) == pytest.approx(0.4)
    expected = 0.5 * (1 + math.cos(math.pi * 25 / 100))
    assert warmup_cosine(25, 100) == pytest.approx(expected)


def test_scheduler_follows_function_and_resumes() -> None:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = WarmupCosineLR(opt, total_steps=50, warmup_steps=5, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0 * warmup_cosine(i, 50, 5, 0.1) for i in range(20)])
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched2 = WarmupCosineLR(opt2, total_steps=50, warmup_steps=5, min_lr_ratio=0.1)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(opt2.param_groups[0]["lr"])


def test_scale_base_lr_lowers_curve() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, 100, kind="constant")
    sched.scale_base_lr(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_constant_and_cosine_kinds() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    const = build_scheduler(opt, 10, kind="constant", warmup_steps=2)
    assert [const.factor(i) for i in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    cos = build_scheduler(opt, 10, kind="cosine", warmup_steps=5)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(10) == pytest.approx(0.0)


def test_scheduler_bad_args() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="kind"):
        build_scheduler(opt, 10, kind="step")
    with pytest.raises(ConfigError, match="total_steps"):
        build_scheduler(opt, 0)
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        build_scheduler(opt, 10, min_lr_ratio=2.0)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.weight_hh_l0 = nn.Parameter(torch.ones(4))  # IndRNN-style recurrent vector
        self.weight_ih_l0 = nn.Parameter(torch.ones(4, 3))


def test_param_groups_exempt_biases_norms_and_recurrent_vectors() -> None:
    model = _Tiny()
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}  # type: ignore[union-attr]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model.lin.weight), id(model.weight_ih_l0)}


@pytest.mark.parametrize(
    "name,cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)]
)
def test_build_optimizer(name: str, cls: type) -> None:
    opt = build_optimizer(_Tiny(), name, lr=0.01, weight_decay=0.1, amsgrad=True)
    assert isinstance(opt, cls)
    if name != "sgd":
        assert opt.param_groups[0]["amsgrad"] is True


@pytest.mark.parametrize(
    "kwargs,word",
    [({"name": "lbfgs"}, "optimizer"), ({"lr": 0}, "lr"), ({"weight_decay": -1}, "weight_decay")],
)
def test_build_optimizer_bad_args(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        build_optimizer(_Tiny(), **kwargs)  # type: ignore[arg-type]


def test_param_groups_on_real_layers() -> None:
    from rnnguard.nn.registry import create_layer

    lstm = create_layer("lstm", input_size=3, hidden_size=4, layer_norm=True, weight_norm=True)
    indrnn = create_layer("indrnn", input_size=3, hidden_size=4, layer_norm=True)
    for model in (lstm, indrnn):
        groups = param_groups(model, 0.1)
        names = {id(p): n for n, p in model.named_parameters()}
        decayed = sorted(names[id(p)] for p in groups[0]["params"])  # type: ignore[union-attr]
        if model is lstm:
            assert decayed == [
                "parametrizations.weight_hh_l0.original1",
                "parametrizations.weight_ih_l0.original1",
            ]
        else:
            assert decayed == ["weight_ih_l0"]  # not the recurrent vector weight_hh_l0


def test_set_total_steps_replans_the_decay_from_the_current_position() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sch = build_scheduler(opt, 10, warmup_steps=2, min_lr_ratio=0.1)
    for _ in range(6):
        opt.step()
        sch.step()
    sch.set_total_steps(30)
    assert sch.warmup_steps == 2  # the warmup already planned is kept
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * warmup_cosine(6, 30, 2, 0.1))
    assert sch.get_last_lr() == [opt.param_groups[0]["lr"]]
    with pytest.raises(ConfigError, match="total_steps"):
        sch.set_total_steps(0)
