"""The doctor: measure a model's gradients, name what is wrong, and prescribe runnable recipes.

:func:`doctor` runs the pipeline measurement -> findings -> prescriptions: it measures the input
gradient horizon, the Lyapunov exponents of every recurrent layer and gate saturation on a batch
(here), compares them with the named thresholds of :class:`DoctorConfig`
(:mod:`rnnguard.diagnose.findings`), and ranks registered recipes that treat what was found
(:mod:`rnnguard.diagnose.prescriptions`). The model's class is never consulted.
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
from rnnguard.diagnose.findings import VERDICTS, DoctorConfig, Evidence, Finding, find_problems
from rnnguard.diagnose.history import ExplosionHistory, read_history
from rnnguard.diagnose.horizon import HorizonSet, gradient_horizons
from rnnguard.diagnose.jacobian import Spectrum, jacobian_spectrum
from rnnguard.diagnose.prescriptions import Prescription, prescribe
from rnnguard.diagnose.saturation import LayerSaturation, gate_saturation
from rnnguard.diagnose.trajectory import flat_step, flatten_state, trace_recurrent
from rnnguard.diagnose.usermodel import prepare
from rnnguard.errors import ConfigError
from rnnguard.train.model_call import ForwardArgs, Select
from rnnguard.utils.progress import progress as progress_bar

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
    task_args: dict[str, Any] = field(default_factory=dict)
    """The task's own arguments (a text file, a data folder), repeated in prescription commands."""

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
                asdict(p)
                | {"command": p.command(self.task or "adding", self.command_length, self.task_args)}
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
            "task_args": {k: str(v) for k, v in self.task_args.items()},
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
                if p.settings:
                    lines.append(f"     ({p.settings})")
                lines.append(
                    f"     {p.command(self.task or 'adding', self.command_length, self.task_args)}"
                )
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


def _check_finite_weights(model: nn.Module) -> None:
    """Weights already NaN or infinite leave nothing to measure: say which, not a shape error."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            kind = "NaN" if bool(torch.isnan(p.detach()).any()) else "infinite"
            raise ConfigError(
                f"model parameter {name!r} holds {kind} values, so its gradients cannot be "
                "measured; diagnose the model as it was before it diverged (an earlier checkpoint)"
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
    progress: bool | None = None,
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
    ``progress``: a bar over the measurements (default: when stderr is a terminal).

    Example (a word-level language model, token ids (time, batch), ``forward(input, hidden)``):
        >>> diagnosis = doctor(lm, tokens, forward_args=(lm.init_hidden(16),))  # doctest: +SKIP
    """
    cfg = config if config is not None else DoctorConfig()
    if not isinstance(cfg, DoctorConfig):
        raise TypeError(f"config must be a DoctorConfig, got {type(cfg).__name__}")
    if isinstance(model, str) or not callable(model):
        model, recipe = _model_from_recipe(model, data, cfg, recipe)
    if isinstance(model, nn.Module):
        _check_finite_weights(model)
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
    with progress_bar(2, "doctor: gradient horizons", unit="step", enabled=progress) as bar:
        horizons = gradient_horizons(view, x, threshold=cfg.horizon_threshold)
        bar.update(1)
        bar.set_description("doctor: Jacobian spectra, saturation")
        spectra, saturation = _spectra(view, x, cfg)
        bar.update(1)
    findings = find_problems(horizons, spectra, saturation, hist, length, cfg)
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
