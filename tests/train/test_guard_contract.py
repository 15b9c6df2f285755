"""GradientGuard's documented contract in detail: defaults, validation messages, counters, bounds.

Written against the mutants that survived the first mutation run of train/guard.py
(docs/mutation.md): each test pins down behaviour a user relies on.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.train.guard import GradientGuard, GuardStats


def _param(grad: list[float], value: list[float] | None = None) -> nn.Parameter:
    p = nn.Parameter(torch.tensor(value if value is not None else [1.0] * len(grad)))
    p.grad = torch.tensor(grad)
    return p


def test_defaults_are_the_documented_ones() -> None:
    g = GradientGuard()
    assert (g.mode, g.max_norm, g.clip_value, g.percentile) == ("norm", 1.0, 1.0, 10.0)
    assert (g.history_size, g.agc_clip, g.agc_eps, g.explosion_factor) == (1000, 0.01, 1e-3, 10.0)
    assert (g.min_history, g.norm_type, g.steps_per_epoch, g.min_loss_scale) == (10, 2.0, None, 1.0)
    assert g.history.maxlen == 1000
    defaults = {k: v.default for k, v in inspect.signature(GradientGuard).parameters.items()}
    assert defaults["max_norm"] == 1.0 and defaults["min_history"] == 10


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"mode": "clip"}, ConfigError,
         "mode must be one of ('none', 'norm', 'value', 'auto', 'agc'), got 'clip'"),
        ({"max_norm": "1"}, TypeError, "max_norm must be a number, got str"),
        ({"clip_value": True}, TypeError, "clip_value must be a number, got bool"),
        ({"agc_clip": 0.0}, ConfigError, "agc_clip must be > 0, got 0.0"),
        ({"agc_eps": -1.0}, ConfigError, "agc_eps must be > 0, got -1.0"),
        ({"explosion_factor": 0}, ConfigError, "explosion_factor must be > 0, got 0"),
        ({"norm_type": -2.0}, ConfigError, "norm_type must be > 0, got -2.0"),
        ({"max_norm": 0.0}, ConfigError, "max_norm must be > 0, got 0.0"),
        ({"clip_value": 0.0}, ConfigError, "clip_value must be > 0, got 0.0"),
        ({"percentile": 0.0}, ConfigError, "percentile must be in (0, 100], got 0.0"),
        ({"percentile": "10"}, TypeError, "percentile must be a number, got '10' (str)"),
        ({"percentile": 100.5}, ConfigError, "percentile must be in (0, 100], got 100.5"),
        ({"history_size": 0}, ConfigError, "history_size must be a positive int, got 0"),
        ({"min_history": 1.5}, ConfigError, "min_history must be a positive int, got 1.5"),
        ({"steps_per_epoch": 0}, ConfigError,
         "steps_per_epoch must be a positive int or None, got 0"),
        ({"steps_per_epoch": 2.0}, ConfigError,
         "steps_per_epoch must be a positive int or None, got 2.0"),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_argument_exactly(kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        GradientGuard(**kwargs)
    assert str(info.value) == message


def test_edges_that_are_allowed() -> None:
    assert GradientGuard(percentile=0.5).percentile == 0.5
    assert GradientGuard(percentile=100).percentile == 100.0
    GradientGuard(history_size=1, min_history=1, steps_per_epoch=1)


def test_history_is_bounded_by_history_size_also_after_loading() -> None:
    g = GradientGuard(history_size=3)
    p = _param([1.0])
    for k in range(5):
        p.grad = torch.tensor([float(k + 1)])
        g.clip([p])
    assert list(g.history) == [3.0, 4.0, 5.0]
    g2 = GradientGuard(history_size=3)
    g2.load_state_dict({"stats": GuardStats().to_dict(), "history": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert list(g2.history) == [3.0, 4.0, 5.0] and g2.history.maxlen == 3
    g3 = GradientGuard()
    g3.load_state_dict({"stats": GuardStats().to_dict()})  # an old checkpoint: no history
    assert list(g3.history) == [] and g3.history.maxlen == 1000


def test_loaded_stats_are_copies() -> None:
    saved = GradientGuard().state_dict()
    g = GradientGuard()
    g.load_state_dict(saved)
    g.new_epoch()
    assert saved["stats"]["explosions_per_epoch"] == [0]  # the saved dict was not touched


def test_counters_accumulate_per_epoch() -> None:
    g = GradientGuard(steps_per_epoch=2)
    p = _param([1.0])
    for grad in (math.nan, math.inf, 1.0, math.nan, 1.0):
        p.grad = torch.tensor([grad])
        g.clip([p])
    s = g.stats
    assert (s.steps, s.skipped, s.exploded, s.epoch) == (5, 3, 3, 2)
    assert s.skipped_per_epoch == [2, 1, 0] and s.explosions_per_epoch == [2, 1, 0]
    assert s.max_norm_seen == 1.0


def test_every_step_is_an_epoch_with_steps_per_epoch_1() -> None:
    g = GradientGuard(steps_per_epoch=1)
    p = _param([1.0])
    for _ in range(3):
        g.clip([p])
    assert g.stats.epoch == 2 and g.stats.explosions_per_epoch == [0, 0, 0]


def test_overflow_starts_at_min_loss_scale() -> None:
    p = _param([math.inf])
    at = GradientGuard(min_loss_scale=4.0).clip([p], loss_scale=4.0)
    assert at.overflow and not at.exploded and at.skipped
    below = GradientGuard(min_loss_scale=4.0).clip([p], loss_scale=2.0)
    assert not below.overflow and below.exploded
    assert not GradientGuard().clip([p]).overflow  # no scaler: a plain explosion
    with pytest.raises(TypeError, match="loss_scale must be a number or None, got bool"):
        GradientGuard().clip([p], loss_scale=True)
    with pytest.raises(TypeError, match="loss_scale must be a number or None, got str"):
        GradientGuard().clip([p], loss_scale="1")


def test_explosion_is_strictly_above_factor_times_median() -> None:
    g = GradientGuard(mode="none", min_history=2, explosion_factor=10.0)
    p = _param([1.0])
    g.clip([p])
    g.clip([p])
    p.grad = torch.tensor([10.0])
    assert not g.clip([p]).exploded  # exactly 10 x the median 1
    p.grad = torch.tensor([10.5])
    assert g.clip([p]).exploded
    assert g.running_median() == 1.0


def test_clip_reports_and_modes() -> None:
    p = _param([0.3, 0.4])
    r = GradientGuard(mode="none").clip([p])
    assert r.threshold is None and not r.clipped and r.norm_after == pytest.approx(0.5)
    assert torch.equal(p.grad, torch.tensor([0.3, 0.4]))
    r = GradientGuard(mode="norm", max_norm=1.0).clip([p])
    assert r.threshold == 1.0 and not r.clipped and torch.equal(p.grad, torch.tensor([0.3, 0.4]))
    empty = GradientGuard().clip([nn.Parameter(torch.ones(2))])  # no gradients at all
    assert (empty.norm_before, empty.threshold, empty.skipped) == (0.0, None, False)


def test_autoclip_threshold_is_the_float64_percentile() -> None:
    g = GradientGuard(mode="auto", percentile=10.0)
    p = _param([1.0])
    g.clip([p])
    p.grad = torch.tensor([2.0])
    r = g.clip([p])
    assert r.threshold == pytest.approx(1.1, rel=1e-12)  # float32 would give 1.10000002
    assert r.clipped and p.grad.item() == pytest.approx(1.1, rel=1e-5)


def test_norm_type_is_used() -> None:
    p = _param([3.0, -4.0])
    r = GradientGuard(mode="none", norm_type=1.0).clip([p])
    assert r.norm_before == pytest.approx(7.0)
    q = _param([3.0])
    r = GradientGuard(mode="none", norm_type=1.0).clip([p, q])
    assert r.norm_before == pytest.approx(10.0)  # the total of per-tensor 1-norms


def test_agc_clips_vectors_and_matrices() -> None:
    bias = _param([10.0, 0.0], value=[3.0, 4.0])  # weight norm 5: max grad norm 5 * 0.01
    weight = nn.Parameter(torch.eye(2))
    weight.grad = torch.tensor([[1.0, 0.0], [0.0, 0.001]])
    GradientGuard(mode="agc", agc_clip=0.01).clip([bias, weight])
    assert bias.grad.tolist() == pytest.approx([0.05, 0.0])
    # row 0: grad norm 1 > 0.01 -> scaled to 0.01; row 1: 0.001 <= 0.01 -> unchanged
    torch.testing.assert_close(weight.grad, torch.tensor([[0.01, 0.0], [0.0, 0.001]]))
    assert weight.grad.dtype == torch.float32


def test_clip_takes_a_module_a_tensor_or_tensors() -> None:
    net = nn.Linear(2, 1)
    net(torch.ones(1, 2)).sum().backward()
    by_module = GradientGuard(mode="none").clip(net).norm_before
    assert by_module == GradientGuard(mode="none").clip(list(net.parameters())).norm_before
    assert by_module == pytest.approx(math.sqrt(3.0))  # d/dw = (1, 1), d/db = 1
    assert GradientGuard(mode="none").clip(net.bias).norm_before == pytest.approx(1.0)
    with pytest.raises(TypeError) as info:
        GradientGuard().clip("weights")  # type: ignore[arg-type]
    assert str(info.value) == (
        "parameters must be a tensor, an iterable of tensors or a torch.nn.Module, got str"
    )
    with pytest.raises(TypeError) as info:
        GradientGuard().clip(3)  # type: ignore[arg-type]
    assert str(info.value).endswith("got int")
    with pytest.raises(TypeError) as info:
        GradientGuard().clip([net.bias, 2.0])  # type: ignore[list-item]
    assert str(info.value) == "parameters must hold tensors; item 1 is a float"


def test_report_to_dict_holds_every_field() -> None:
    r = GradientGuard(max_norm=1.0).clip([_param([3.0, 4.0])])
    assert r.to_dict() == {
        "norm_before": 5.0, "norm_after": pytest.approx(1.0), "clipped": True, "skipped": False,
        "exploded": False, "overflow": False, "threshold": 1.0, "loss_scale": None,
    }  # fmt: skip


def test_zero_gradients_are_not_clipped_and_clipped_steps_add_up() -> None:
    g = GradientGuard(max_norm=1.0)
    assert not g.clip([_param([0.0, 0.0])]).clipped
    g.clip([_param([3.0, 4.0])])
    g.clip([_param([3.0, 4.0])])
    assert g.stats.clipped == 2


def test_running_median_of_a_loaded_history_is_exact() -> None:
    g = GradientGuard()
    g.load_state_dict({"stats": GuardStats().to_dict(), "history": [0.3, 0.1, 0.2]})
    assert g.running_median() == 0.2  # float64, not float32's 0.2000000030


def test_explosion_threshold_scales_with_the_median() -> None:
    g = GradientGuard(mode="none", min_history=2, explosion_factor=10.0)
    p = _param([2.0])
    g.clip([p])
    g.clip([p])
    p.grad = torch.tensor([19.0])
    assert not g.clip([p]).exploded  # 19 < 10 x median 2
    p.grad = torch.tensor([21.0])
    assert g.clip([p]).exploded


def test_norm_clipping_coefficient_equals_clip_grad_norm_on_small_norms() -> None:
    a, b = _param([0.003, 0.004]), _param([0.003, 0.004])  # norm 0.005
    GradientGuard(max_norm=0.001).clip([a])
    torch.nn.utils.clip_grad_norm_([b], 0.001)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)


def test_agc_scales_a_row_between_the_limit_and_one() -> None:
    weight = nn.Parameter(torch.eye(2))
    weight.grad = torch.tensor([[0.5, 0.0], [0.0, 0.001]])  # row norms 0.5 and 0.001; limit 0.01
    GradientGuard(mode="agc", agc_clip=0.01).clip([weight])
    torch.testing.assert_close(weight.grad, torch.tensor([[0.01, 0.0], [0.0, 0.001]]))


def _grads(seed: int, dtype: torch.dtype) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.zeros(s, dtype=dtype)) for s in ((7, 5), (5,), (3, 2, 4))]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * 4.0).to(dtype)
    return params


@pytest.mark.parametrize(
    ("mode", "max_norm", "norm_type", "dtype"),
    [
        ("norm", 1.5, 2.0, torch.float64),  # float64 shows a coefficient off in the 8th digit
        ("norm", 1000.0, 2.0, torch.float64),  # below the threshold nothing changes
        ("norm", 1.5, 1.0, torch.float32),
        ("norm", 1.5, math.inf, torch.float32),
        ("auto", 1.5, 2.0, torch.float32),
    ],
)
def test_clipping_without_the_torch_2_6_helpers_is_bit_identical(
    mode: str, max_norm: float, norm_type: float, dtype: torch.dtype,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # torch 2.3-2.5 lack get_total_norm / clip_grads_with_norm_: the guard's own computation
    # must give the same bits as clip_grad_norm_ there too.
    reference = _grads(0, dtype)
    guard = GradientGuard(mode=mode, max_norm=max_norm, percentile=50.0, norm_type=norm_type)
    expected_total = float(torch.nn.utils.clip_grad_norm_(reference, max_norm, norm_type))
    monkeypatch.delattr(torch.nn.utils, "get_total_norm")
    monkeypatch.delattr(torch.nn.utils, "clip_grads_with_norm_")
    if mode == "auto":  # a history whose median threshold is 1.5 at this step's norm
        guard.history.extend([1.5, 1.5])
    params = _grads(0, dtype)
    report = guard.clip(params)
    assert report.norm_before == expected_total
    for ours, theirs in zip(params, reference):
        assert torch.equal(ours.grad, theirs.grad)


def test_float64_gradients_are_measured_in_float64() -> None:
    params = _grads(1, torch.float64)
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    report = GradientGuard(mode="none").clip(params)
    assert report.norm_before == pytest.approx(expected.item(), rel=1e-15, abs=0.0)
    as_float32 = torch.linalg.vector_norm(torch.cat([p.grad.float().flatten() for p in params]))
    assert report.norm_before != float(as_float32)


def test_half_precision_gradients_are_measured_in_float32() -> None:
    # 1000 gradients of 6e4: the norm (about 1.9e6) overflows float16 but not its float32 measure.
    p = nn.Parameter(torch.zeros(1000, dtype=torch.float16))
    p.grad = torch.full((1000,), 6e4, dtype=torch.float16)
    report = GradientGuard(mode="none").clip([p])
    assert report.norm_before == pytest.approx(float(torch.tensor(6e4).float() * 1000**0.5))
