"""The doctor: measure a model's gradients, name what is wrong, and prescribe runnable recipes.

The verdict comes only from measurements on a batch — the input gradient horizon, the Lyapunov
exponents of every recurrent layer, gate saturation and dead units, and (optionally) a training
log — compared with the named thresholds of :class:`DoctorConfig`. The model's class is never
consulted. Prescriptions are registered recipes (plus overrides) ranked by how many findings they
address, following the guide's cheat sheet: vanishing -> gated cells with LayerNorm and an open
forget gate; exploding -> clipping, orthogonal init, AdamW; very long sequences -> IndRNN with its
|u| bound or an LRU, with warmup and cosine decay.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rnnguard.diagnose._common import (
    check_sequence_batch,
    eval_mode,
    model_device_dtype,
)
from rnnguard.diagnose.history import ExplosionHistory, read_history
from rnnguard.diagnose.horizon import HorizonSet, gradient_horizons
from rnnguard.diagnose.jacobian import Spectrum, jacobian_spectrum
from rnnguard.diagnose.saturation import LayerSaturation, SaturationThresholds, gate_saturation
from rnnguard.diagnose.trajectory import flat_step, flatten_state, trace_recurrent
from rnnguard.diagnose.usermodel import prepare
from rnnguard.errors import ConfigError
from rnnguard.train.model_call import ForwardArgs, Select
from rnnguard.utils.checks import integer, positive_int

__all__ = [
    "VERDICTS",
    "Diagnosis",
    "DoctorConfig",
    "Evidence",
    "Finding",
    "Prescription",
    "doctor",
    "prescribe",
]

VERDICTS = ("healthy", "vanishing", "exploding", "saturated", "dead-units")


@dataclass(frozen=True)
class DoctorConfig:
    """Named thresholds of the verdicts, and how much to measure.

    vanishing: the normalised input gradient falls below ``horizon_threshold`` and stays below up to
    the start of the sequence, or the top Lyapunov exponents of all recurrent layers predict that.
    exploding: the gradient from the far past exceeds the near one ``exploding_ratio`` times (or
    is not finite), any layer's top Lyapunov exponent predicts that, or a training log flags more than
    ``explosion_rate`` of its steps. saturated: a layer's fraction of closed forget gates,
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
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ConfigError(f"DoctorConfig.{name} must be a number in (0, 1), got {v!r}")
        if (
            isinstance(self.exploding_ratio, bool)
            or not isinstance(self.exploding_ratio, (int, float))
            or not self.exploding_ratio > 1
        ):
            raise ConfigError(
                f"DoctorConfig.exploding_ratio must be a number > 1, got {self.exploding_ratio!r}"
            )
        for name in ("long_sequence", "batch_size", "spectrum_steps"):
            positive_int(f"DoctorConfig.{name}", getattr(self, name))
        if (
            isinstance(self.lyapunov_k, bool)
            or not isinstance(self.lyapunov_k, int)
            or self.lyapunov_k < 0
        ):
            raise ConfigError(
                f"DoctorConfig.lyapunov_k must be an int >= 0, got {self.lyapunov_k!r}"
            )
        integer("DoctorConfig.seed", self.seed)


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


@dataclass
class Prescription:
    """A ranked cure: a registered recipe plus overrides (``Recipe.replace`` keys), with reasons."""

    rank: int
    recipe: str
    overrides: dict[str, Any]
    reason: str
    addresses: list[str]

    def build(self) -> Any:
        """The runnable :class:`~rnnguard.train.recipes.Recipe`."""
        from rnnguard.train.recipes import get_recipe

        return (
            get_recipe(self.recipe).replace(**self.overrides)
            if self.overrides
            else get_recipe(self.recipe)
        )

    def command(self, task: str = "adding", length: int | None = None) -> str:
        """The ``rnnguard train`` command line that runs this prescription."""
        parts = ["rnnguard", "train", "--recipe", self.recipe, "--task", task]
        if length is not None:
            parts += ["--length", str(length)]
        for key, value in _flatten(self.overrides).items():
            parts += ["--set", f"{key}={_cli_value(value)}"]
        return " ".join(parts)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _cli_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass
class Diagnosis:
    """What the doctor measured and concluded."""

    verdicts: list[str]
    findings: list[Finding]
    prescriptions: list[Prescription]
    horizons: HorizonSet
    spectra: dict[str, Spectrum]
    saturation: dict[str, LayerSaturation]
    history: ExplosionHistory | None
    length: int
    batch_size: int
    config: DoctorConfig
    model_info: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    recipe: str | None = None
    task_length: int | None = None

    @property
    def command_length(self) -> int:
        """The task's own length (what ``--length`` means), which may differ from the input's."""
        return self.task_length if self.task_length is not None else self.length

    @property
    def healthy(self) -> bool:
        """True when no problem was found."""
        return self.verdicts == ["healthy"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of everything (what ``diagnosis.json`` holds)."""
        return {
            "verdicts": list(self.verdicts),
            "findings": [
                {
                    "verdict": f.verdict,
                    "evidence": [asdict(e) | {"text": e.text()} for e in f.evidence],
                }
                for f in self.findings
            ],
            "prescriptions": [
                asdict(p) | {"command": p.command(self.task or "adding", self.command_length)}
                for p in self.prescriptions
            ],
            "horizons": self.horizons.to_dict(),
            "spectra": {k: s.to_dict() for k, s in self.spectra.items()},
            "saturation": {k: s.to_dict() for k, s in self.saturation.items()},
            "history": self.history.to_dict() if self.history is not None else None,
            "length": self.length,
            "batch_size": self.batch_size,
            "config": asdict(self.config),
            "model": self.model_info,
            "task": self.task,
            "task_length": self.task_length,
            "recipe": self.recipe,
        }

    def to_json(self) -> str:
        """``to_dict`` as indented JSON (non-finite numbers become null)."""
        return json.dumps(_finite(self.to_dict()), indent=2, sort_keys=False)

    def summary(self) -> str:
        """A short plain-text report."""
        lines = [
            f"verdict: {', '.join(self.verdicts)}  (sequence length {self.length}, batch {self.batch_size})"
        ]
        hz = self.horizons.input
        reach = (
            f"{hz.horizon} steps" if hz.horizon is not None else f"beyond {hz.max_distance} steps"
        )
        where = hz.extra.get("measured_at", "input")
        name = "input gradient horizon" + (f" (at the {where})" if where != "input" else "")
        lines.append(
            f"{name}: {reach}; per-step factor {math.exp(hz.rate):.4g}"
            if math.isfinite(hz.rate)
            else f"{name}: {reach}"
        )
        for label, h in self.horizons.hidden.items():
            reach = (
                f"{h.horizon} steps" if h.horizon is not None else f"beyond {h.max_distance} steps"
            )
            lines.append(f"{label}: hidden-state gradient horizon {reach}")
        for label, spec in self.spectra.items():
            lines.append(
                f"{label}: top Lyapunov exponent {spec.top_lyapunov:.4g}/step, mean sigma_max {float(spec.sigma_max.mean()):.4g}"
            )
        for f in self.findings:
            lines.append(f"{f.verdict}:")
            lines.extend(f"  - {e.text()}" for e in f.evidence)
        if self.prescriptions:
            lines.append("prescriptions:")
            for p in self.prescriptions:
                lines.append(
                    f"  {p.rank}. {p.recipe} {p.overrides or ''}".rstrip() + f": {p.reason}"
                )
                lines.append(f"     {p.command(self.task or 'adding', self.command_length)}")
        return "\n".join(lines)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------------- measurement


def _spectra(
    model: nn.Module, x: Tensor, config: DoctorConfig
) -> tuple[dict[str, Spectrum], dict[str, LayerSaturation]]:
    """Jacobian spectra (forward directions) and saturation of every recurrent layer on ``x``."""
    spectra: dict[str, Spectrum] = {}
    saturation: dict[str, LayerSaturation] = {}
    with eval_mode(model), torch.no_grad(), trace_recurrent(model) as traces:
        model(x)
    gen = torch.Generator().manual_seed(config.seed)
    for mt in traces:
        for d in mt.directions:
            label = mt.label(d)
            saturation[label] = gate_saturation(d, label, config.saturation)
            if d.direction:
                continue  # one direction is enough to characterise the layer's recurrence
            steps = min(config.spectrum_steps, d.inputs.shape[1])
            s0 = flatten_state(d.states[0])
            k = min(config.lyapunov_k, s0.shape[1])
            with eval_mode(model):
                spectra[label] = jacobian_spectrum(
                    flat_step(d.fn),
                    d.inputs[:, :steps],
                    s0,
                    k=1,
                    lyapunov_k=k,
                    generator=gen,
                    label=label,
                )
    return spectra, saturation


def _findings(
    horizons: HorizonSet,
    spectra: dict[str, Spectrum],
    saturation: dict[str, LayerSaturation],
    history: ExplosionHistory | None,
    length: int,
    cfg: DoctorConfig,
) -> list[Finding]:
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


# ---------------------------------------------------------------------- prescriptions


# (recipe, overrides, reason, weight) per verdict; the guide's cheat sheet first, then beyond it.
def _candidates(
    verdict: str, length: int, cfg: DoctorConfig, original: str | None
) -> list[tuple[str, dict[str, Any], str, float]]:
    long = length >= cfg.long_sequence
    chrono = {"init": "chrono", "init_kwargs": {"t_max": "auto"}}
    if verdict == "vanishing":
        out = [
            (
                "lstm-ln-clip",
                chrono if length > 200 else {},
                "gated cell state carries the gradient; LayerNorm and an open forget gate"
                + (" (chrono init spans the task's length)" if length > 200 else " (bias 1)")
                + " keep it flowing",
                3.0,
            ),
            (
                "gru",
                {},
                "update gate interpolates with the previous state, an additive gradient path",
                2.0,
            ),
        ]
        if long:
            out += [
                (
                    "indrnn-relu",
                    {},
                    "per-unit recurrence bounded by |u| <= 2**(1/T) keeps gradients over T steps",
                    3.5,
                ),
                (
                    "lru",
                    {},
                    "linear recurrence with eigenvalues initialised near the unit circle",
                    2.5,
                ),
                (
                    "transformer",
                    {},
                    "attention reaches every step directly, trained with warmup + cosine decay",
                    2.0,
                ),
            ]
        return out
    if verdict == "exploding":
        out = [
            (
                "lstm-ln-clip",
                {},
                "clipping at norm 5, per-gate orthogonal init and AdamW bound each update",
                3.0,
            ),
            ("indrnn-relu", {}, "the |u| <= 2**(1/T) bound caps growth through time", 2.0),
        ]
        if original is not None:
            out.insert(
                0,
                (
                    original,
                    {
                        "guard": {"mode": "norm", "max_norm": 1.0},
                        "init": "safe",
                        "optimizer": {"name": "adamw"},
                    },
                    "same model, with gradient clipping, orthogonal recurrent init and AdamW",
                    3.2,
                ),
            )
        return out
    if verdict == "saturated":
        return [
            (
                "lstm-ln-clip",
                {},
                "LayerNorm keeps gate pre-activations in the sigmoid's sensitive range; forget bias 1 opens the forget gate",
                3.0,
            ),
            ("gru", {}, "fewer gates, no separate cell state to saturate", 1.5),
        ]
    if verdict == "dead-units":
        return [
            ("lstm-ln-clip", {}, "bounded smooth gates cannot die", 2.0),
            ("residual-rnn", {}, "tanh units with an identity path instead of rectifiers", 1.5),
        ]
    return []


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def prescribe(
    verdicts: list[str],
    length: int,
    config: DoctorConfig | None = None,
    original: str | None = None,
    limit: int = 4,
) -> list[Prescription]:
    """Ranked prescriptions for ``verdicts`` on sequences of ``length`` (only registered recipes)."""
    from rnnguard.train.recipes import list_recipes

    cfg = config or DoctorConfig()
    known = list_recipes()
    merged: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        for name, overrides, reason, weight in _candidates(verdict, length, cfg, original):
            if name not in known or (name == original and not overrides):
                continue  # never prescribe the original as it is
            # one entry per recipe: the overrides of different findings combine
            entry = merged.setdefault(
                name,
                {"recipe": name, "overrides": {}, "reasons": [], "addresses": [], "score": 0.0},
            )
            entry["overrides"] = _merge(entry["overrides"], overrides)
            entry["reasons"].append(f"{verdict}: {reason}")
            entry["addresses"].append(verdict)
            entry["score"] += weight
    ranked = sorted(merged.values(), key=lambda e: -e["score"])[:limit]
    return [
        Prescription(i + 1, e["recipe"], e["overrides"], "; ".join(e["reasons"]), e["addresses"])
        for i, e in enumerate(ranked)
    ]


# ---------------------------------------------------------------------- entry points


def _batch_from(
    data: Any, config: DoctorConfig, device: torch.device | None, dtype: torch.dtype | None
) -> tuple[Tensor, str | None]:
    """The batch (moved to ``device`` when given) and the task's name (None for a plain batch)."""
    if isinstance(data, Tensor):
        return (data.to(device) if device is not None else data), None
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], Tensor):
        return (data[0].to(device) if device is not None else data[0]), None
    if hasattr(data, "batch") and hasattr(data, "spec"):
        gen = torch.Generator().manual_seed(config.seed)
        x, _ = data.batch(config.batch_size, gen)
        if device is not None:
            x = x.to(device)
        if x.is_floating_point() and dtype is not None:
            x = x.to(dtype)
        return x, str(getattr(data, "name", type(data).__name__))
    raise TypeError(
        "data must be a batch tensor ((batch, time, features) floats or (batch, time) token ids, "
        f"or time-first), an (x, y) batch or a Task, got {type(data).__name__}"
    )


def doctor(
    model: nn.Module | str | Any,
    data: Any,
    *,
    config: DoctorConfig | None = None,
    history: Any = None,
    recipe: str | None = None,
    forward_args: ForwardArgs = (),
    forward_kwargs: dict[str, Any] | None = None,
    batch_first: bool | None = None,
    output: Select = None,
) -> Diagnosis:
    """Diagnose ``model`` on a batch (tensor or ``(x, y)``) or a Task, and prescribe cures.

    ``model`` is used as it is: a module or any callable, called ``model(x, *forward_args,
    **forward_kwargs)`` (``forward_args`` may be a function of the batch size, for a hidden state
    sized to the batch); it may read float features or token ids, time-first or batch-first
    (``batch_first=None`` infers it from the input its first recurrent layer receives; a batch
    given here is in the model's own layout, a Task's is converted), and return predictions alone,
    in a tuple such as ``(output, hidden)``, or in a dict (``output`` picks them: a key, an index
    or a function). Token inputs are measured at the first recurrent layer's input.

    ``model`` may also be a recipe (name or Recipe) when ``data`` is a Task: its model is built
    with ``config.seed`` and the recipe's name is used for prescriptions.
    ``history``: a training run folder, its ``metrics.jsonl``, an :class:`ExplosionHistory` or a
    list of trainer records, adding the run's explosion rate to the evidence. ``recipe``: the
    registered recipe the model came from, so a prescription can be "the same, plus a fix".

    Example (a word-level language model, token ids (time, batch), ``forward(input, hidden)``):
        >>> diagnosis = doctor(lm, tokens, forward_args=(lm.init_hidden(16),))  # doctest: +SKIP
    """
    cfg = config if config is not None else DoctorConfig()
    if not isinstance(cfg, DoctorConfig):
        raise TypeError(f"config must be a DoctorConfig, got {type(cfg).__name__}")
    if isinstance(model, str) or not callable(model):
        model, recipe = _model_from_recipe(model, data, cfg, recipe)
    if isinstance(model, nn.Module):
        device, dtype = model_device_dtype(model)
        x, task_name = _batch_from(data, cfg, device, dtype)
    else:  # a callable: its modules are found by running it, on the batch as it comes
        x, task_name = _batch_from(data, cfg, None, None)
    _check_batch_rank(x)
    view, x = prepare(
        model,
        x,
        x_batch_first=True if task_name is not None else None,
        batch_first=batch_first,
        args=forward_args,
        kwargs=forward_kwargs,
        output=output,
    )
    check_sequence_batch(x)
    length = x.shape[1]
    hist = _history(history)
    horizons = gradient_horizons(view, x, threshold=cfg.horizon_threshold)
    spectra, saturation = _spectra(view, x, cfg)
    findings = _findings(horizons, spectra, saturation, hist, length, cfg)
    verdicts = [f.verdict for f in findings] or ["healthy"]
    prescriptions = prescribe(verdicts, length, cfg, recipe) if findings else []
    info = {
        "parameters": sum(p.numel() for p in view.parameters()),
        "layout": "batch-first" if view.batch_first else "time-first",
        "input": "features" if x.is_floating_point() else "token ids",
        "recurrent_layers": {
            label: {"state_size": spec.state_size} for label, spec in spectra.items()
        },
    }
    return Diagnosis(
        verdicts=verdicts,
        findings=findings,
        prescriptions=prescriptions,
        horizons=horizons,
        spectra=spectra,
        saturation=saturation,
        history=hist,
        length=length,
        batch_size=x.shape[0],
        config=cfg,
        model_info=info,
        task=task_name,
        recipe=recipe,
        task_length=getattr(data, "length", None) if task_name is not None else None,
    )


def _check_batch_rank(x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"data must hold a tensor, got {type(x).__name__}")
    want = 3 if x.is_floating_point() else 2
    if x.dim() != want:
        kind = "float features" if want == 3 else "integer tokens"
        raise ConfigError(
            f"data of {kind} must have {want} dimensions ((batch, time{', features' * (want == 3)}) "
            f"or time-first), got shape {tuple(x.shape)}"
        )


def _model_from_recipe(
    recipe: Any, data: Any, cfg: DoctorConfig, name: str | None
) -> tuple[nn.Module, str | None]:
    from rnnguard.train.recipes import Recipe, get_recipe

    if not isinstance(recipe, (str, Recipe)):
        raise TypeError(
            "model must be a torch.nn.Module, a callable or a recipe (name or Recipe), got "
            f"{type(recipe).__name__}"
        )
    if not (hasattr(data, "batch") and hasattr(data, "spec")):
        raise TypeError("a recipe needs a Task as data (to know the input and output sizes)")
    built = get_recipe(recipe) if isinstance(recipe, str) else recipe
    torch.manual_seed(cfg.seed)
    return built.build_model(data.spec, length=getattr(data, "length", None)), name or built.name


def _history(history: Any) -> ExplosionHistory | None:
    from rnnguard.diagnose.history import summarize_history

    if history is None or isinstance(history, ExplosionHistory):
        return history
    if isinstance(history, (list, tuple)):
        return summarize_history(history)
    if isinstance(history, (str,)) or hasattr(history, "__fspath__"):
        return read_history(history)
    raise TypeError(
        f"history must be a path, a list of records or an ExplosionHistory, got {type(history).__name__}"
    )
