"""GradientGuard with a GradScaler *and* a scheduler: the README's training loop, step by step.

The guard must do what the plain PyTorch AMP recipe does by hand -- scale, backward, unscale,
clip, ``scaler.step``, ``scaler.update`` -- and advance the learning-rate schedule only on steps
the optimiser really took. Steps the scaler skips (an inf gradient, as while it calibrates its
scale) leave the weights, the optimiser state and the schedule where they were.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from rnnguard.train.guard import GradientGuard

# Non-finite steps where a scaler calibrating its scale would skip them: the first step and two
# consecutive ones later on.
POISONED = {1, 4, 5}
STEPS = 8
MAX_NORM = 0.5


def _setup() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.amp.GradScaler]:  # fmt: skip
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    # A schedule that changes the rate at every step, so one extra advance shows.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + s))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    return net, opt, sched, scaler


def _backward(net: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
              step: int) -> None:  # fmt: skip
    opt.zero_grad(set_to_none=True)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
    loss = net(x).pow(2).mean() * 10.0
    if step in POISONED:
        loss = loss * float("inf")
    scaler.scale(loss).backward()


def _by_hand() -> tuple[nn.Module, list[float], list[float]]:
    """The plain PyTorch recipe; the schedule advances only when the scaler did not skip."""
    net, opt, sched, scaler = _setup()
    lrs, scales = [], []
    for step in range(1, STEPS + 1):
        _backward(net, opt, scaler, step)
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM)
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() >= scale:  # a skipped step lowers the scale
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        scales.append(scaler.get_scale())
    return net, lrs, scales


def test_guard_with_scaler_and_scheduler_matches_the_plain_amp_recipe() -> None:
    want_net, want_lrs, want_scales = _by_hand()
    net, opt, sched, scaler = _setup()
    guard = GradientGuard(mode="norm", max_norm=MAX_NORM)
    lrs, scales, skipped = [], [], []
    with warnings.catch_warnings():
        # torch warns when a scheduler steps before its optimizer ever did (step 1 is skipped)
        warnings.simplefilter("error")
        for step in range(1, STEPS + 1):
            _backward(net, opt, scaler, step)
            before = copy.deepcopy((net.state_dict(), opt.state_dict(), sched.last_epoch))
            report = guard.step(opt, scaler=scaler, scheduler=sched)
            lrs.append(opt.param_groups[0]["lr"])
            scales.append(scaler.get_scale())
            if report.skipped:
                skipped.append(step)
                w, o, epoch = before
                assert all(torch.equal(v, net.state_dict()[k]) for k, v in w.items()), step
                assert opt.state_dict()["state"].keys() == o["state"].keys()
                for k, s in o["state"].items():
                    assert torch.equal(
                        s["momentum_buffer"], opt.state_dict()["state"][k]["momentum_buffer"]
                    )
                assert sched.last_epoch == epoch, f"the schedule advanced on skipped step {step}"
                assert report.loss_scale == scales[-1] < (scales[-2] if step > 1 else 2.0**10)
            else:
                assert sched.last_epoch == before[2] + 1
    assert skipped == sorted(POISONED)
    assert sched.last_epoch == STEPS - len(POISONED)
    assert lrs == want_lrs and scales == want_scales
    assert guard.stats.skipped == len(POISONED) and guard.stats.overflows == len(POISONED)
    for p, q in zip(net.parameters(), want_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # Halved on each skip, doubled after two good steps: the scaler saw every step.
    assert scales == [512.0, 512.0, 1024.0, 512.0, 256.0, 256.0, 512.0, 512.0]
