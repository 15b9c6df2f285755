"""GradientGuard.clip in a loop that updates weights by hand (no optimizer object)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rnnguard.train.guard import GradientGuard


class _TinyLM(nn.Module):
    """Token ids (time, batch) -> logits, time-first, as a hand-written language model loop uses."""

    def __init__(self, vocab: int = 11, hidden: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = nn.LSTM(hidden, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def _sgd_epoch(model: nn.Module, guard: GradientGuard, lr: float, poison: int | None) -> list[bool]:
    """The manual loop: backward, guard.clip, then ``p.data.add_(p.grad, alpha=-lr)`` if allowed."""
    gen = torch.Generator().manual_seed(0)
    applied = []
    for i in range(4):
        tokens = torch.randint(0, 11, (6, 3), generator=gen)
        model.zero_grad()
        logits = model(tokens[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 11), tokens[1:].reshape(-1))
        loss.backward()
        if i == poison:
            model.rnn.weight_hh_l0.grad[0, 0] = float("nan")
        report = guard.clip(model.parameters())
        if not report.skipped:
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
        applied.append(not report.skipped)
    return applied


def test_manual_sgd_matches_optimizer_step() -> None:
    """clip + a hand-written SGD update gives exactly what step() with torch.optim.SGD gives."""
    torch.manual_seed(0)
    manual = _TinyLM()
    ref = copy.deepcopy(manual)
    guard_manual = GradientGuard(mode="norm", max_norm=0.1)
    _sgd_epoch(manual, guard_manual, lr=0.5, poison=None)

    guard_ref = GradientGuard(mode="norm", max_norm=0.1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        tokens = torch.randint(0, 11, (6, 3), generator=gen)
        opt.zero_grad()
        logits = ref(tokens[:-1])
        nn.functional.cross_entropy(logits.reshape(-1, 11), tokens[1:].reshape(-1)).backward()
        guard_ref.step(opt)
    for p, q in zip(manual.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    assert guard_manual.stats == guard_ref.stats
    assert guard_manual.stats.clipped == 4  # max_norm 0.1 is below every step's norm


def test_nan_gradient_is_reported_and_the_update_skipped() -> None:
    torch.manual_seed(0)
    model = _TinyLM()
    guard = GradientGuard(mode="norm", max_norm=1.0)
    before: dict[str, torch.Tensor] = {}

    def snapshot(module: nn.Module, args: object) -> None:
        before.update({k: v.detach().clone() for k, v in module.state_dict().items()})

    model.register_forward_pre_hook(snapshot)  # weights as the poisoned step starts
    applied = _sgd_epoch(model, guard, lr=0.5, poison=3)
    assert applied == [True, True, True, False]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the skipped step left every weight as it was
    assert guard.stats.skipped == 1 and guard.stats.exploded == 1 and guard.stats.steps == 4
    assert guard.stats.skipped_per_epoch == [1]


def test_clip_measures_a_tensor_or_module_and_leaves_grads_below_threshold() -> None:
    w = nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, 4.0])
    report = GradientGuard(mode="norm", max_norm=10.0).clip(w)
    assert report.norm_before == pytest.approx(5.0) and not report.clipped
    assert torch.equal(w.grad, torch.tensor([3.0, 4.0]))
    lin = nn.Linear(2, 1)
    (lin(torch.ones(1, 2)) * 100).sum().backward()
    report = GradientGuard(mode="value", clip_value=1.0).clip(lin)
    assert report.clipped and all(p.grad.abs().max() <= 1.0 for p in lin.parameters())


def test_clip_overflow_under_a_loss_scale_is_not_an_explosion() -> None:
    w = nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([float("inf"), 0.0])
    guard = GradientGuard(mode="norm")
    report = guard.clip([w], loss_scale=65536.0)
    assert report.skipped and report.overflow and not report.exploded
    report = guard.clip([w])  # no scaler: a non-finite gradient is an explosion
    assert report.skipped and report.exploded and not report.overflow


@pytest.mark.parametrize(
    ("parameters", "kwargs", "error", "match"),
    [
        (3, {}, TypeError, "parameters must be a tensor"),
        ([torch.zeros(1), "w"], {}, TypeError, "item 1 is a str"),
        ([], {"loss_scale": "high"}, TypeError, "loss_scale must be a number"),
    ],
)
def test_clip_rejects_bad_arguments(
    parameters: object, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        GradientGuard().clip(parameters, **kwargs)  # type: ignore[arg-type]
