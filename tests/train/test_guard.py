"""GradientGuard: norms, clipping modes, non-finite skips, scheduler and scaler interplay."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.train.guard import GradientGuard
from rnnguard.train.schedule import WarmupCosineLR


def _model_with_grads(g1: list[float], g2: list[float]) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Module()
    model.a = nn.Parameter(torch.ones(len(g1)))
    model.b = nn.Parameter(torch.ones(len(g2)))
    model.a.grad = torch.tensor(g1)
    model.b.grad = torch.tensor(g2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_norm_is_pre_clip_and_matches_hand_computation() -> None:
    model, opt = _model_with_grads([3.0, 0.0], [4.0, 12.0])  # total norm 13
    guard = GradientGuard(mode="norm", max_norm=1.0)
    report = guard.step(opt)
    assert report.norm_before == pytest.approx(13.0)
    assert report.norm_after == pytest.approx(1.0, rel=1e-5)
    assert report.clipped and not report.skipped and not report.exploded
    # SGD with lr 0.1 on clipped gradient g/13
    assert torch.allclose(model.a.detach(), torch.tensor([1 - 0.1 * 3 / 13, 1.0]), atol=1e-6)


def test_norm_mode_equals_clip_grad_norm() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    ref = copy.deepcopy(net)
    x = torch.randn(4, 5)
    for m in (net, ref):
        (m(x) ** 2).sum().mul(10).backward()
    expected = nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    report = GradientGuard(mode="norm", max_norm=0.5).step(opt)
    assert report.norm_before == pytest.approx(float(expected), rel=1e-6)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-8)


class _TinyLM(nn.Module):
    """Embedding -> LSTM -> decoder, the shape of pytorch/examples' word language model."""

    def __init__(self, vocab: int = 11, width: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.rnn = nn.LSTM(width, width, 2)
        self.dec = nn.Linear(width, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.rnn(self.emb(x))[0])


@pytest.mark.parametrize("foreach", [True, False])
def test_norm_mode_is_bit_identical_to_clip_grad_norm_over_many_steps(foreach: bool) -> None:
    # lr=20 (the example's) amplifies any last-bit difference in the clip coefficient into
    # visibly different weights within a few steps; the guard must change nothing at all.
    torch.manual_seed(3)
    ref = _TinyLM()
    ours = copy.deepcopy(ref)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=20.0, foreach=foreach)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=20.0, foreach=foreach)
    guard = GradientGuard(mode="norm", max_norm=0.25)
    gen = torch.Generator().manual_seed(0)
    clipped = 0
    for _ in range(40):
        x = torch.randint(0, 11, (6, 3), generator=gen)
        y = torch.randint(0, 11, (6, 3), generator=gen)
        for model, opt in ((ref, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        expected = nn.utils.clip_grad_norm_(ref.parameters(), 0.25, foreach=foreach)
        opt_ref.step()
        report = guard.step(opt_ours)
        clipped += int(report.clipped)
        assert report.norm_before == float(expected)
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            assert torch.equal(p, q), name
    assert clipped > 30  # the threshold is low enough that clipping happens nearly every step


def test_no_clip_below_threshold() -> None:
    _model, opt = _model_with_grads([0.3], [0.4])
    report = GradientGuard(mode="norm", max_norm=1.0).step(opt)
    assert not report.clipped and report.norm_after == pytest.approx(0.5)


def test_value_mode_clamps_elements() -> None:
    model, opt = _model_with_grads([3.0, -0.5], [-4.0])
    opt.param_groups[0]["lr"] = 1.0
    report = GradientGuard(mode="value", clip_value=1.0).step(opt)
    assert torch.allclose(model.a.grad, torch.tensor([1.0, -0.5]))
    assert report.clipped and report.norm_after == pytest.approx(1.5)  # sqrt(1 + 0.25 + 1)
    assert torch.allclose(model.b.detach(), torch.tensor([2.0]))


def test_nan_gradient_leaves_parameters_bit_identical_and_scheduler_still() -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    sched = WarmupCosineLR(opt, total_steps=10, warmup_steps=3)
    guard = GradientGuard(mode="norm", max_norm=1.0)
    net(torch.randn(2, 4)).sum().backward()
    guard.step(opt, scheduler=sched)  # one good step so AdamW has state
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt_state = copy.deepcopy(opt.state_dict())
    lr_before, epoch_before = opt.param_groups[0]["lr"], sched.last_epoch
    opt.zero_grad()
    net(torch.randn(2, 4)).sum().backward()
    net.weight.grad[0, 1] = float("nan")
    report = guard.step(opt, scheduler=sched)
    assert report.skipped and report.exploded and math.isnan(report.norm_before)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt_state["state"][0]["exp_avg"])
    assert sched.last_epoch == epoch_before and opt.param_groups[0]["lr"] == lr_before
    assert guard.stats.skipped == 1 and guard.stats.exploded == 1 and guard.stats.steps == 2


def test_amp_scaler_unscales_before_clipping_and_lowers_scale_on_inf() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 1, bias=False)
    ref = copy.deepcopy(net)
    x = torch.randn(8, 3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    scaler.scale(net(x).pow(2).mean()).backward()
    ref(x).pow(2).mean().backward()
    true_norm = float(ref.weight.grad.norm())
    max_norm = true_norm / 2
    report = GradientGuard(mode="norm", max_norm=max_norm).step(opt, scaler=scaler)
    # Measured and clipped on the true gradients, not the 1024x scaled ones.
    assert report.norm_before == pytest.approx(true_norm, rel=1e-5)
    assert report.norm_after == pytest.approx(max_norm, rel=1e-4)
    expected = ref.weight.detach() - ref.weight.grad * (max_norm / true_norm)
    assert torch.allclose(net.weight.detach(), expected, atol=1e-5)
    # An inf gradient: step skipped, scale reduced by the scaler's update.
    opt.zero_grad()
    w = net.weight.detach().clone()
    scaler.scale(net(x).pow(2).mean() * float("inf")).backward()
    report = GradientGuard(mode="norm").step(opt, scaler=scaler)
    assert report.skipped and report.loss_scale == pytest.approx(512.0)
    # An overflow while the scaler calibrates is not a gradient explosion.
    assert report.overflow and not report.exploded
    assert torch.equal(net.weight.detach(), w)


def test_bf16_gradients_are_measured_in_float32() -> None:
    p = nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    p.grad = torch.full((4,), 3.0, dtype=torch.bfloat16)
    opt = torch.optim.SGD([p], lr=0.1)
    report = GradientGuard(mode="norm", max_norm=1.0).step(opt)
    assert report.norm_before == pytest.approx(6.0)
    assert report.norm_after == pytest.approx(1.0, rel=1e-2)


def test_explosion_by_ratio_to_running_median_and_per_epoch_counts() -> None:
    guard = GradientGuard(mode="none", explosion_factor=10.0, min_history=3, steps_per_epoch=5)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.0)
    flags = []
    for g in [1.0, 1.0, 1.0, 50.0, 1.0, 1.0, 200.0, 1.0, 1.0, 1.0, 1.0]:
        p.grad = torch.tensor([g])
        flags.append(guard.step(opt).exploded)
    assert flags == [False, False, False, True, False, False, True, False, False, False, False]
    assert guard.stats.explosions_per_epoch == [1, 1, 0]
    assert guard.stats.epoch == 2


def test_autoclip_uses_percentile_of_history() -> None:
    guard = GradientGuard(mode="auto", percentile=50.0)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.0)
    for g in [1.0, 2.0, 3.0, 4.0]:
        p.grad = torch.tensor([g])
        guard.step(opt)
    p.grad = torch.tensor([100.0])
    report = guard.step(opt)
    assert report.threshold == pytest.approx(3.0)  # median of 1, 2, 3, 4, 100
    assert report.norm_after == pytest.approx(3.0, rel=1e-5)


def test_agc_clips_unitwise_relative_to_weight_norm() -> None:
    w = nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))  # row norms 5 and 1
    w.grad = torch.tensor([[0.0, 1.0], [0.0, 0.001]])  # row grad norms 1 and 0.001
    opt = torch.optim.SGD([w], lr=0.0)
    GradientGuard(mode="agc", agc_clip=0.01).step(opt)
    assert torch.allclose(w.grad[0], torch.tensor([0.0, 0.05]), atol=1e-6)  # clipped to 0.01*5
    assert torch.allclose(w.grad[1], torch.tensor([0.0, 0.001]))  # under 0.01*1: untouched


def test_state_dict_round_trip() -> None:
    guard = GradientGuard(mode="norm", max_norm=1.0)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.0)
    for g in [1.0, float("nan"), 3.0]:
        p.grad = torch.tensor([g])
        guard.step(opt)
    other = GradientGuard(mode="norm", max_norm=1.0)
    other.load_state_dict(guard.state_dict())
    assert other.stats == guard.stats and list(other.history) == [1.0, 3.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "clip"},
        {"max_norm": 0.0},
        {"max_norm": -1.0},
        {"percentile": 0.0},
        {"percentile": "a", "mode": "auto"},  # named, not a failed comparison inside
        {"explosion_factor": 0},
        {"steps_per_epoch": 0},
        {"history_size": 0},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        GradientGuard(**kwargs)  # type: ignore[arg-type]


def test_nonfinite_below_min_loss_scale_counts_as_explosion() -> None:
    p = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=0.5)
    scaler.scale(torch.tensor(1.0))  # the scaler initialises its scale on first use
    p.grad = torch.tensor([float("inf"), 1.0])
    report = GradientGuard(mode="norm", min_loss_scale=1.0).step(opt, scaler=scaler)
    assert report.skipped and report.exploded and not report.overflow
    assert torch.equal(p.detach(), torch.ones(2))
