"""Prescriptions: registered recipes (plus overrides) ranked by how many findings they address.

The cure table (:data:`CURES`) follows the guide's cheat sheet: vanishing -> gated cells with
LayerNorm and an open forget gate; exploding -> clipping, orthogonal init, AdamW; very long
sequences -> IndRNN with its |u| bound or an LRU, with warmup and cosine decay. Each cure says
*why* it helps in words that name no setting; the settings themselves are read from the
:class:`~rnnguard.train.recipes.Recipe` a prescription builds (:func:`recipe_settings`), so the
text cannot drift from the recipe.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rnnguard.diagnose.findings import DoctorConfig

__all__ = ["CURES", "Cure", "Prescription", "prescribe", "recipe_settings"]

#: The recipe a prescription of ``Cure(recipe=ORIGINAL)`` starts from: the diagnosed model's own.
ORIGINAL = ""


@dataclass(frozen=True)
class Cure:
    """One row of the cure table: a recipe (plus overrides) and why it treats a verdict."""

    recipe: str
    """Registered recipe name, or :data:`ORIGINAL` (the diagnosed model's recipe, when known)."""
    why: str
    """The mechanism, in words that restate no value of the recipe."""
    weight: float
    """Score added to the recipe for each verdict it addresses (ranks the prescriptions)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """``Recipe.replace`` keys applied on top of the recipe."""
    when: Callable[[int, DoctorConfig], bool] | None = None
    """Only offered when ``when(length, config)`` holds (None: always)."""


def _long(length: int, cfg: DoctorConfig) -> bool:
    return length >= cfg.long_sequence


_CHRONO = {"init": "chrono", "init_kwargs": {"t_max": "auto"}}

#: The cure table, by verdict; the guide's cheat sheet first, then beyond it.
CURES: dict[str, tuple[Cure, ...]] = {
    "vanishing": (
        Cure(
            "lstm-ln-clip",
            "the gated cell state carries the gradient; LayerNorm, an open forget gate and chrono "
            "gate biases spanning the task's length keep it flowing",
            3.0,
            _CHRONO,
            when=lambda length, cfg: length > 200,
        ),
        Cure(
            "lstm-ln-clip",
            "the gated cell state carries the gradient; LayerNorm and an open forget gate keep "
            "it flowing",
            3.0,
            when=lambda length, cfg: length <= 200,
        ),
        Cure("gru", "the update gate interpolates with the previous state: an additive path", 2.0),
        Cure(
            "indrnn-relu",
            "a per-unit recurrence bounded by the task's length keeps gradients over every step",
            3.5,
            when=_long,
        ),
        Cure("lru", "a linear recurrence with eigenvalues near the unit circle", 2.5, when=_long),
        Cure(
            "transformer",
            "attention reaches every step directly, with a warmup and a decaying learning rate",
            2.0,
            when=_long,
        ),
    ),
    "exploding": (
        Cure(
            ORIGINAL,
            "the same model, with its updates bounded",
            3.2,
            {
                "guard": {"mode": "norm", "max_norm": 1.0},
                "init": "safe",
                "optimizer": {"name": "adamw"},
            },
        ),
        Cure(
            "lstm-ln-clip",
            "bounded update sizes and orthogonal recurrent weights keep each step in range",
            3.0,
        ),
        Cure("indrnn-relu", "the recurrent weights' bound caps growth through time", 2.0),
    ),
    "saturated": (
        Cure(
            "lstm-ln-clip",
            "LayerNorm keeps gate pre-activations in the sigmoid's sensitive range and the forget "
            "bias opens the forget gate",
            3.0,
        ),
        Cure("gru", "fewer gates and no separate cell state to saturate", 1.5),
    ),
    "dead-units": (
        Cure("lstm-ln-clip", "bounded smooth gates cannot die", 2.0),
        Cure("residual-rnn", "tanh units with an identity path instead of rectifiers", 1.5),
    ),
}

_OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


def recipe_settings(recipe: Any) -> str:
    """The stability-relevant settings of a :class:`~rnnguard.train.recipes.Recipe`, in words.

    Example:
        >>> recipe_settings(get_recipe("lstm-ln-clip"))  # doctest: +SKIP
        'lstm, layer_norm, forget_bias 1, init safe, AdamW lr 0.002, warmup-cosine, clip norm 5'
    """
    parts = [
        recipe.layer if recipe.num_layers == 1 else f"{recipe.num_layers}-layer {recipe.layer}"
    ]
    for key, value in recipe.layer_kwargs.items():
        if value is True:
            parts.append(key)
        elif value not in (False, None):
            parts.append(f"{key} {_value(value)}")
    if recipe.init is not None:
        args = ", ".join(f"{k}={_value(v)}" for k, v in recipe.init_kwargs.items())
        parts.append(f"init {recipe.init}" + (f" ({args})" if args else ""))
    opt = recipe.optimizer
    parts.append(f"{_OPTIMIZER_NAMES.get(opt.name, opt.name)} lr {_value(opt.lr)}")
    parts.append(recipe.schedule.name)
    parts.append(_guard_words(recipe.guard))
    return ", ".join(parts)


def _guard_words(guard: Any) -> str:
    if guard.mode == "none":
        return "no clipping"
    value = {
        "norm": ("max_norm", guard.max_norm),
        "value": ("clip_value", guard.clip_value),
        "auto": ("percentile", guard.percentile),
        "agc": ("agc_clip", guard.agc_clip),
    }[guard.mode][1]
    return f"clip {guard.mode} {_value(value)}"


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class Prescription:
    """A ranked cure: a registered recipe plus overrides (``Recipe.replace`` keys), with reasons."""

    rank: int
    recipe: str
    overrides: dict[str, Any]
    reason: str
    addresses: list[str]
    settings: str = ""
    """What the prescribed recipe sets, read from the recipe (:func:`recipe_settings`)."""

    def build(self) -> Any:
        """The runnable :class:`~rnnguard.train.recipes.Recipe`."""
        from rnnguard.train.recipes import get_recipe

        recipe = get_recipe(self.recipe)
        return recipe.replace(**self.overrides) if self.overrides else recipe

    def command(
        self,
        task: str = "adding",
        length: int | None = None,
        task_args: dict[str, Any] | None = None,
    ) -> str:
        """The ``rnnguard train`` command line that runs this prescription.

        ``task_args``: the task's own arguments (a text file's ``path``, PTB's ``data_dir``, ...),
        so the command trains on the same data.
        """
        parts = ["rnnguard", "train", "--recipe", self.recipe, "--task", task]
        if length is not None:
            parts += ["--length", str(length)]
        for key, value in (task_args or {}).items():
            flag = {"path": "--text", "data_dir": "--data-dir"}.get(key)
            parts += [flag, shlex.quote(str(value))] if flag else ["--task-arg", f"{key}={value}"]
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
    """Ranked prescriptions for ``verdicts`` on sequences of ``length`` (only registered recipes).

    ``original``: the registered recipe the diagnosed model came from, so that a cure can be
    "the same, plus a fix"; it is never prescribed unchanged.
    """
    from rnnguard.train.recipes import list_recipes

    cfg = config or DoctorConfig()
    known = list_recipes()
    merged: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        for cure in CURES.get(verdict, ()):
            if cure.when is not None and not cure.when(length, cfg):
                continue
            name = original if cure.recipe == ORIGINAL else cure.recipe
            if name is None or name not in known or (name == original and not cure.overrides):
                continue  # never prescribe the original as it is
            # one entry per recipe: the overrides of different findings combine
            entry = merged.setdefault(
                name,
                {"recipe": name, "overrides": {}, "reasons": [], "addresses": [], "score": 0.0},
            )
            entry["overrides"] = _merge(entry["overrides"], cure.overrides)
            entry["reasons"].append(f"{verdict}: {cure.why}")
            entry["addresses"].append(verdict)
            entry["score"] += cure.weight
    ranked = sorted(merged.values(), key=lambda e: -e["score"])[:limit]
    out = []
    for i, e in enumerate(ranked):
        p = Prescription(
            i + 1, e["recipe"], e["overrides"], "; ".join(e["reasons"]), e["addresses"]
        )
        p.settings = recipe_settings(p.build())
        out.append(p)
    return out
