"""The doctor's rules (``find_problems``) on made-up measurements: each threshold, at and past it.

Fast: no model is run. The end-to-end verdicts from models built for them are in test_doctor.py
and test_dead_units.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnguard.diagnose.findings import DoctorConfig, Evidence, Finding, find_problems
from rnnguard.diagnose.history import ExplosionHistory
from rnnguard.diagnose.horizon import Horizon, HorizonSet
from rnnguard.diagnose.jacobian import Spectrum
from rnnguard.diagnose.saturation import LayerSaturation

CFG = DoctorConfig()
T = 11  # sequence length: the far end is at distance 10


def _horizon(normalized: list[float], horizon: int | None = None, rate: float = 0.0,
             norms: list[float] | None = None) -> HorizonSet:  # fmt: skip
    arr = np.array(normalized, dtype=float)
    return HorizonSet(
        Horizon(
            np.array(norms, dtype=float) if norms is not None else arr,
            arr,
            rate,
            horizon,
            CFG.horizon_threshold,
        )
    )


FLAT = _horizon([1.0] * T)  # the gradient reaches the start undiminished: nothing to report


def _spectrum(top: float) -> Spectrum:
    lyap = np.array([top, top - 1.0]) if math.isfinite(top) else np.array([top])
    return Spectrum(np.ones((3, 1)), np.zeros(3), lyap, "exact", 4)


def _problems(horizons: HorizonSet = FLAT, spectra: dict | None = None,
              saturation: dict | None = None, history: ExplosionHistory | None = None,
              cfg: DoctorConfig = CFG) -> list[Finding]:  # fmt: skip
    return find_problems(horizons, spectra or {}, saturation or {}, history, T, cfg)


def _only(findings: list[Finding], verdict: str) -> list[Evidence]:
    assert [f.verdict for f in findings] == [verdict]
    return findings[0].evidence


def test_nothing_to_report() -> None:
    assert _problems(spectra={"l0": _spectrum(0.0)}) == []
    assert _problems(spectra={"l0": _spectrum(math.nan)}) == []  # no exponent: no rule


def test_vanishing_input_horizon() -> None:
    hz = _horizon([1.0, 0.5, 0.01, 5e-4, 1e-4, 1e-5, 0, 0, 0, 0, 0], horizon=3, rate=math.log(0.5))
    (ev,) = _only(_problems(hz), "vanishing")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.source) == (
        "normalised input gradient", 5e-4, 1e-3, "<", "input horizon",
    )  # fmt: skip
    assert ev.note == "already at distance 3 of 10; per-step factor 0.5"
    hz_nan_rate = _horizon([1.0, 5e-4] + [0.0] * 9, horizon=1, rate=math.nan)
    assert _only(_problems(hz_nan_rate), "vanishing")[0].note == "at distance 1 of 10"


def test_lyapunov_vanishing_needs_every_layer_to_forget() -> None:
    # exponent x distance against log(1e-3) = -6.91: -0.7 x 10 = -7 trips, -0.69 x 10 does not
    (a, b) = _only(_problems(spectra={"a": _spectrum(-0.7), "b": _spectrum(-2.0)}), "vanishing")
    assert (a.source, a.value, a.threshold, a.relation) == (
        "a",
        pytest.approx(-7.0),
        pytest.approx(math.log(1e-3)),
        "<",
    )
    assert a.metric == "top Lyapunov exponent x distance" and b.value == pytest.approx(-20.0)
    assert a.note == f"exponent -0.7/step: perturbations shrink by {math.exp(-0.7):.3g} per step"
    assert _problems(spectra={"a": _spectrum(-0.69)}) == []
    assert _problems(spectra={"a": _spectrum(-0.7), "b": _spectrum(0.0)}) == []  # b carries it


def test_exploding_by_peak_ratio_and_overflow() -> None:
    at = _horizon([1.0] + [100.0] * 10)
    assert _problems(at) == []  # the ratio must exceed 100, not reach it
    hz = _horizon([1.0] + [100.5] * 10, rate=math.log(2.0))
    (ev,) = _only(_problems(hz), "exploding")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.source) == (
        "peak normalised input gradient", pytest.approx(100.5), 100.0, ">", "input horizon",
    )  # fmt: skip
    assert ev.note == "the far past dominates; per-step factor 2"
    no_rate = _horizon([1.0] + [200.0] * 10, rate=math.nan)
    assert _only(_problems(no_rate), "exploding")[0].note == ""
    over = _horizon([1.0] * T, norms=[1.0, math.inf] + [1.0] * 9)
    (ev,) = _only(_problems(over), "exploding")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.note) == (
        "input gradient norm", None, 0.0, "is", "gradients overflowed",
    )  # fmt: skip
    assert (
        ev.text() == "input horizon: input gradient norm = non-finite is 0 (gradients overflowed)"
    )


def test_exploding_by_lyapunov_any_layer() -> None:
    # log(100) = 4.61: 0.47 x 10 trips, 0.46 x 10 does not
    (ev,) = _only(_problems(spectra={"a": _spectrum(0.47), "b": _spectrum(-5.0)}), "exploding")
    assert (ev.source, ev.value, ev.relation) == ("a", pytest.approx(4.7), ">")
    assert ev.metric == "top Lyapunov exponent x distance"
    assert ev.threshold == pytest.approx(math.log(100.0))
    assert ev.note == f"exponent 0.47/step: perturbations grow by {math.exp(0.47):.3g} per step"
    assert _problems(spectra={"a": _spectrum(0.46)}) == []


def test_lyapunov_rules_are_strict_at_their_thresholds() -> None:
    # exponent x 10 equals log(1e-3) (resp. log(100)) exactly: neither rule trips
    assert _problems(spectra={"a": _spectrum(math.log(1e-3) / 10)}) == []
    assert _problems(spectra={"a": _spectrum(math.log(100.0) / 10)}) == []


def _history(exploded: int, total: int = 100, skipped: int = 0) -> ExplosionHistory:
    return ExplosionHistory(np.arange(1, total + 1), np.ones(total), list(range(exploded)),
                            list(range(skipped)), total_steps=total)  # fmt: skip


def test_exploding_by_training_log() -> None:
    assert _problems(history=_history(1)) == []  # 1% is the threshold itself
    (ev,) = _only(_problems(history=_history(2, skipped=1)), "exploding")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.source) == (
        "flagged steps per step", pytest.approx(0.02), 0.01, ">", "training log",
    )  # fmt: skip
    assert ev.note == "2 explosions, 1 skipped of 100"


@pytest.mark.parametrize("diverged", [False, True])
def test_exploding_by_forward_blowups_in_the_training_log(diverged: bool) -> None:
    # A loss or state blow-up is reported however few steps it hit (no rate threshold).
    history = _history(0)
    history.blowup_steps, history.rollbacks, history.diverged = [40, 41, 90], 2, diverged
    (ev,) = _only(_problems(history=history), "exploding")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.source) == (
        "loss/state blow-up steps", 3.0, 0.0, ">", "training log",
    )  # fmt: skip
    gave_up = "; the run gave up (diverged)" if diverged else ""
    assert ev.note == f"first at step 40; 2 rollbacks{gave_up}"


@pytest.mark.parametrize(
    ("field", "metric"),
    [
        ("forget_closed", "closed forget-gate fraction"),
        ("sigmoid_saturated", "flat sigmoid-gate fraction"),
        ("tanh_saturated", "saturated tanh fraction"),
    ],
)
def test_saturated_by_each_fraction(field: str, metric: str) -> None:
    at = LayerSaturation("l0", "lstm", **{field: 0.5})
    assert _problems(saturation={"l0": at}) == []
    over = LayerSaturation("l0", "lstm", **{field: 0.51})
    (ev,) = _only(_problems(saturation={"l0": over}), "saturated")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.source, ev.note) == (
        metric, 0.51, 0.5, ">", "l0", "",
    )  # fmt: skip
    loose = DoctorConfig(**{field: 0.6})
    assert _problems(saturation={"l0": over}, cfg=loose) == []


def test_dead_units_rule() -> None:
    assert _problems(saturation={"l0": LayerSaturation("l0", "rnn", dead_units=0.25)}) == []
    sat = {"l0": LayerSaturation("l0", "rnn", dead_units=0.3), "l1": LayerSaturation("l1", "lstm")}
    (ev,) = _only(_problems(saturation=sat), "dead-units")
    assert (ev.metric, ev.value, ev.threshold, ev.relation, ev.source, ev.note) == (
        "dead unit fraction", 0.3, 0.25, ">", "l0", "never active on the batch",
    )  # fmt: skip
    assert ev.text() == "l0: dead unit fraction = 0.3 > 0.25 (never active on the batch)"
    plain = Evidence("saturated tanh fraction", 0.51, 0.5, ">", "l0")
    assert plain.text() == "l0: saturated tanh fraction = 0.51 > 0.5"  # no note, no brackets


def test_several_verdicts_in_a_fixed_order() -> None:
    sat = {"l0": LayerSaturation("l0", "rnn", tanh_saturated=0.9, dead_units=0.9)}
    hz = _horizon([1.0, 5e-4] + [0.0] * 9, horizon=1)
    found = _problems(hz, spectra={"l0": _spectrum(1.0)}, saturation=sat, history=_history(50))
    assert [f.verdict for f in found] == ["vanishing", "exploding", "saturated", "dead-units"]
    assert [e.source for e in found[1].evidence] == ["l0", "training log"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"horizon_threshold": 0.0}, "horizon_threshold"),
        ({"forget_closed": 1.5}, "forget_closed"),
        ({"sigmoid_saturated": 0.0}, "sigmoid_saturated"),
        ({"tanh_saturated": 1.0}, "tanh_saturated"),
        ({"dead_units": 1.0}, "dead_units"),
        ({"explosion_rate": -0.1}, "explosion_rate"),
        ({"exploding_ratio": 1.0}, "exploding_ratio"),
        ({"exploding_ratio": "many"}, "exploding_ratio"),
        ({"long_sequence": 0}, "long_sequence"),
        ({"batch_size": 0}, "batch_size"),
        ({"spectrum_steps": 0}, "spectrum_steps"),
        ({"lyapunov_k": -1}, "lyapunov_k"),
        ({"seed": 1.5}, "seed"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_rejects_bad_thresholds_naming_them(kwargs: dict, name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^DoctorConfig\.{name} must be"):
        DoctorConfig(**kwargs)


def test_config_edges_that_are_allowed() -> None:
    DoctorConfig(lyapunov_k=0, seed=0, exploding_ratio=1.5)
