"""Findings: measurements compared with named thresholds give verdicts with their evidence.

:func:`find_problems` holds the rules. It reads only measurements (the input gradient horizon, the
Lyapunov exponents of every recurrent layer, gate saturation and dead units, a training log),
never the model's class, and returns one :class:`Finding` per verdict that trips, each listing the
:class:`Evidence` behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rnnguard.diagnose.history import ExplosionHistory
from rnnguard.diagnose.horizon import HorizonSet
from rnnguard.diagnose.jacobian import Spectrum
from rnnguard.diagnose.saturation import LayerSaturation, SaturationThresholds
from rnnguard.errors import ConfigError
from rnnguard.utils.checks import fraction, integer, number, positive_int
from rnnguard.utils.checks import seed as check_seed

__all__ = ["VERDICTS", "DoctorConfig", "Evidence", "Finding", "find_problems"]

VERDICTS = ("healthy", "vanishing", "exploding", "saturated", "dead-units")


@dataclass(frozen=True)
class DoctorConfig:
    """Named thresholds of the verdicts, and how much to measure.

    vanishing: the normalised input gradient falls below ``horizon_threshold`` and stays below up to
    the start of the sequence, or the top Lyapunov exponents of all recurrent layers predict that.
    exploding: the gradient from the far past exceeds the near one ``exploding_ratio`` times (or
    is not finite), any layer's top Lyapunov exponent predicts that, a training log flags more than
    ``explosion_rate`` of its steps, or it holds a loss or recurrent-state blow-up. saturated: a layer's fraction of closed forget gates,
    flat sigmoid gates or saturated tanh units exceeds its threshold. dead-units: more than
    ``dead_units`` of a ReLU layer's units never fire on the batch.
    """

    horizon_threshold: float = 1e-3
    exploding_ratio: float = 100.0
    forget_closed: float = 0.5
    sigmoid_saturated: float = 0.5
    tanh_saturated: float = 0.5
    dead_units: float = 0.25
    explosion_rate: float = 0.01
    long_sequence: int = 1000
    batch_size: int = 16
    spectrum_steps: int = 200
    lyapunov_k: int = 4
    seed: int = 0
    saturation: SaturationThresholds = field(default_factory=SaturationThresholds)

    def __post_init__(self) -> None:
        for name in (
            "horizon_threshold",
            "forget_closed",
            "sigmoid_saturated",
            "tanh_saturated",
            "dead_units",
            "explosion_rate",
        ):
            fraction(f"DoctorConfig.{name}", getattr(self, name))
        if number("DoctorConfig.exploding_ratio", self.exploding_ratio) <= 1:
            raise ConfigError(
                f"DoctorConfig.exploding_ratio must be a number > 1, got {self.exploding_ratio!r}"
            )
        for name in ("long_sequence", "batch_size", "spectrum_steps"):
            positive_int(f"DoctorConfig.{name}", getattr(self, name))
        integer("DoctorConfig.lyapunov_k", self.lyapunov_k, minimum=0)
        check_seed("DoctorConfig.seed", self.seed)


@dataclass
class Evidence:
    """One measurement compared with its threshold: ``value <relation> threshold`` triggered."""

    metric: str
    value: float | None
    threshold: float
    relation: str
    source: str
    note: str = ""

    def text(self) -> str:
        """One readable line."""
        v = "non-finite" if self.value is None else f"{self.value:.4g}"
        return f"{self.source}: {self.metric} = {v} {self.relation} {self.threshold:.4g}" + (
            f" ({self.note})" if self.note else ""
        )


@dataclass
class Finding:
    """A verdict with the evidence that triggered it."""

    verdict: str
    evidence: list[Evidence]


def find_problems(
    horizons: HorizonSet,
    spectra: dict[str, Spectrum],
    saturation: dict[str, LayerSaturation],
    history: ExplosionHistory | None,
    length: int,
    cfg: DoctorConfig,
) -> list[Finding]:
    """The rules: each measurement compared with its threshold; a verdict for each that trips.

    ``length`` is the sequence length the horizons and spectra were measured on.
    """
    far = length - 1  # distance from the loss at the last step to the first input
    log_thr, log_ratio = math.log(cfg.horizon_threshold), math.log(cfg.exploding_ratio)
    hz = horizons.input
    vanish: list[Evidence] = []
    explode: list[Evidence] = []
    if not hz.finite:
        explode.append(
            Evidence(
                "input gradient norm", None, 0.0, "is", "input horizon", "gradients overflowed"
            )
        )
    elif hz.horizon is not None:
        vanish.append(
            Evidence(
                "normalised input gradient",
                float(hz.normalized[hz.horizon]),
                cfg.horizon_threshold,
                "<",
                "input horizon",
                f"already at distance {hz.horizon} of {far}; per-step factor {math.exp(hz.rate):.3g}"
                if math.isfinite(hz.rate)
                else f"at distance {hz.horizon} of {far}",
            )
        )
    if hz.finite and hz.peak_ratio > cfg.exploding_ratio:
        explode.append(
            Evidence(
                "peak normalised input gradient",
                hz.peak_ratio,
                cfg.exploding_ratio,
                ">",
                "input horizon",
                f"the far past dominates; per-step factor {math.exp(hz.rate):.3g}"
                if math.isfinite(hz.rate)
                else "",
            )
        )
    exponents = {k: s.top_lyapunov for k, s in spectra.items() if math.isfinite(s.top_lyapunov)}
    # A dependency can ride on any one layer's recurrence and reach the others through their
    # inputs, so the recurrences forget only if every layer does; one growing layer is enough
    # to blow the gradient up.
    if exponents and max(exponents.values()) * far < log_thr:
        for label, lam in exponents.items():
            vanish.append(
                Evidence(
                    "top Lyapunov exponent x distance",
                    lam * far,
                    log_thr,
                    "<",
                    label,
                    f"exponent {lam:.3g}/step: perturbations shrink by {math.exp(lam):.3g} per step",
                )
            )
    for label, lam in exponents.items():
        if lam * far > log_ratio:
            explode.append(
                Evidence(
                    "top Lyapunov exponent x distance",
                    lam * far,
                    log_ratio,
                    ">",
                    label,
                    f"exponent {lam:.3g}/step: perturbations grow by {math.exp(lam):.3g} per step",
                )
            )
    if history is not None and history.explosion_rate > cfg.explosion_rate:
        explode.append(
            Evidence(
                "flagged steps per step",
                history.explosion_rate,
                cfg.explosion_rate,
                ">",
                "training log",
                f"{history.explosions} explosions, {len(history.skipped_steps)} skipped of {history.total_steps}",
            )
        )
    if history is not None and history.blowups:
        # The forward pass blew up (the guard's clipping cannot help there): always reported.
        explode.append(
            Evidence(
                "loss/state blow-up steps",
                float(history.blowups),
                0.0,
                ">",
                "training log",
                f"first at step {history.blowup_steps[0]}; {history.rollbacks} rollbacks"
                + ("; the run gave up (diverged)" if history.diverged else ""),
            )
        )
    sat: list[Evidence] = []
    dead: list[Evidence] = []
    for label, s in saturation.items():
        for metric, value, thr in (
            ("closed forget-gate fraction", s.forget_closed, cfg.forget_closed),
            ("flat sigmoid-gate fraction", s.sigmoid_saturated, cfg.sigmoid_saturated),
            ("saturated tanh fraction", s.tanh_saturated, cfg.tanh_saturated),
        ):
            if value is not None and value > thr:
                sat.append(Evidence(metric, value, thr, ">", label))
        if s.dead_units is not None and s.dead_units > cfg.dead_units:
            dead.append(
                Evidence(
                    "dead unit fraction",
                    s.dead_units,
                    cfg.dead_units,
                    ">",
                    label,
                    "never active on the batch",
                )
            )
    findings = [
        Finding(v, e)
        for v, e in (
            ("vanishing", vanish),
            ("exploding", explode),
            ("saturated", sat),
            ("dead-units", dead),
        )
        if e
    ]
    return findings
