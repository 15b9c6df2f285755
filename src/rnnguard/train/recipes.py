"""Recipes: named, serialisable bundles of layer + init + optimiser + schedule + guard settings."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnguard.errors import ConfigError
from rnnguard.train.config import (
    AMP_MODES,
    GuardConfig,
    OptimConfig,
    ScheduleConfig,
    config_from_dict,
)
from rnnguard.utils.checks import positive_int
from rnnguard.utils.registry import Entry, Registry

# Layer/init keyword values spelled "auto" are bound to the task's sequence length at build time:
# IndRNN's |u| <= 2**(1/T) bound and chrono's t_max both depend on T.
LENGTH_BOUND_KEYS = ("max_length", "t_max")
_NESTED = {"optimizer": OptimConfig, "schedule": ScheduleConfig, "guard": GuardConfig}


@dataclass
class Recipe:
    """Everything needed to build and train a model, apart from the task and the budget.

    Example:
        >>> r = get_recipe("lstm-ln-clip").replace(hidden_size=32, **{"optimizer.lr": 3e-3})
        >>> Recipe.from_yaml(r.to_yaml()) == r
        True
    """

    name: str = "custom"
    """Name of the recipe (informational once built)."""
    description: str = ""
    """One line saying what the recipe is."""
    layer: str = "lstm"
    """Registered layer name of the recurrent core (``rnnguard.nn.registry``)."""
    hidden_size: int = 128
    """Width of the core."""
    num_layers: int = 1
    """Stacked layers in the core."""
    embedding_dim: int | None = None
    """Embedding width for token tasks (default: ``hidden_size``)."""
    layer_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the layer (``layer_norm``, ``forget_bias``, ``max_length``...);
    ``max_length: auto`` is replaced by the task's length."""
    init: str | None = None
    """Init scheme name from ``rnnguard.nn.init`` (None: the layer's own default)."""
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    """Arguments of the init scheme (``t_max: auto`` is replaced by the task's length)."""
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser settings."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """Gradient clipping and explosion accounting."""
    amp: str = "auto"
    """Mixed precision: ``auto`` (fp16 + GradScaler on CUDA, off on CPU), ``off``, ``fp16``, ``bf16``."""
    notes: str = ""
    """Longer remarks (sources, known quirks)."""

    def __post_init__(self) -> None:
        for key, value in (("name", self.name), ("layer", self.layer)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"recipe {key} must be a non-empty string, got {value!r}")
        for key in ("hidden_size", "num_layers"):
            positive_int(f"recipe {key}", getattr(self, key))
        if self.embedding_dim is not None and (
            not isinstance(self.embedding_dim, int) or self.embedding_dim < 1
        ):
            raise ConfigError(
                f"recipe embedding_dim must be a positive int or null, got {self.embedding_dim!r}"
            )
        for key in ("layer_kwargs", "init_kwargs"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(f"recipe {key} must be a mapping, got {getattr(self, key)!r}")
        if self.init is not None and not isinstance(self.init, str):
            raise ConfigError(f"recipe init must be an init scheme name or null, got {self.init!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"recipe amp must be one of {AMP_MODES}, got {self.amp!r}")
        for key, cls in _NESTED.items():
            value = getattr(self, key)
            if isinstance(value, dict):
                setattr(self, key, config_from_dict(cls, value, f"recipe {key}"))
            elif not isinstance(value, cls):
                raise ConfigError(
                    f"recipe {key} must be a {cls.__name__} or mapping, got {value!r}"
                )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly)."""
        data = dataclasses.asdict(self)
        data["optimizer"]["betas"] = list(data["optimizer"]["betas"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return config_from_dict(cls, copy.deepcopy(data), "recipe")

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """YAML text of the recipe; also written (atomically) to ``path`` when given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from rnnguard.utils.io import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> Recipe:
        """Load a recipe from a YAML file path or YAML text."""
        import yaml

        from rnnguard.utils.yamlio import load_yaml

        text = str(source)
        looks_like_path = "\n" not in text and (
            text.endswith((".yaml", ".yml")) or Path(text).is_file()
        )
        if isinstance(source, os.PathLike) or looks_like_path:
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"recipe file must be a readable YAML file, got {str(path)!r}")
            text = path.read_text(encoding="utf-8")
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe YAML could not be parsed: {exc}".splitlines()[0]) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"recipe YAML must hold a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with fields replaced; dotted keys reach inside (``**{"optimizer.lr": 3e-3}``) and
        mappings given for ``optimizer``/``schedule``/``guard``/``*_kwargs`` are merged."""
        data = self.to_dict()
        for key, value in overrides.items():
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            parts = key.split(".")
            target = data
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"override key {key!r} does not name a recipe setting")
                target = target[part]
            last = parts[-1]
            # Unknown keys inside optimizer/schedule/guard are rejected by from_dict below.
            if len(parts) == 1 and last not in data:
                raise ConfigError(
                    f"override key {key!r} does not name a recipe setting; expected one of {sorted(data)}"
                )
            if isinstance(value, dict) and isinstance(target.get(last), dict):
                target[last] = {**target[last], **value}
            else:
                target[last] = value
        return Recipe.from_dict(data)

    # ------------------------------------------------------------------ building
    def layer_arguments(self, length: int | None = None) -> dict[str, Any]:
        """Keyword arguments for the core layer, with ``auto`` lengths bound and ``init`` added."""
        kwargs = _bind_length(dict(self.layer_kwargs), length, "layer_kwargs")
        if self.init is not None:
            from rnnguard.nn import init as nn_init

            init_kwargs = dict(self.init_kwargs)
            if self.init == "chrono" and "t_max" not in init_kwargs and length is not None:
                init_kwargs["t_max"] = "auto"  # chrono's horizon is the task's length by default
            init_kwargs = _bind_length(init_kwargs, length, "init_kwargs")
            kwargs["init"] = nn_init.scheme(self.init, **init_kwargs) if init_kwargs else self.init
        return kwargs

    def build_model(self, spec: Any, length: int | None = None) -> Any:
        """A :class:`~rnnguard.models.SequenceModel` for a task spec (``length`` binds ``auto``)."""
        from rnnguard.models import SequenceModel

        return SequenceModel(
            spec,
            self.layer,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            embedding_dim=self.embedding_dim,
            **self.layer_arguments(length),
        )


def _bind_length(kwargs: dict[str, Any], length: int | None, where: str) -> dict[str, Any]:
    for key in LENGTH_BOUND_KEYS:
        if kwargs.get(key) == "auto":
            if length is None:
                raise ConfigError(
                    f"{where}.{key} is 'auto' and needs the task length, got length=None"
                )
            kwargs[key] = int(length)
    return kwargs


# ---------------------------------------------------------------------- registry
#: A registered recipe: ``name``, ``obj`` (a zero-argument factory returning a fresh
#: :class:`Recipe`), ``description``, ``metadata``.
RecipeInfo = Entry[Callable[[], Recipe]]

RECIPES: Registry[Callable[[], Recipe]] = Registry("recipe")


def register_recipe(
    name: str, description: str = "", **metadata: Any
) -> Callable[[Callable[[], Recipe]], Callable[[], Recipe]]:
    """Decorator registering a zero-argument factory that returns a :class:`Recipe`.

    ``metadata``: for example ``source="Li et al., CVPR 2018"`` (every built-in recipe names one;
    docs/recipes.md lists how each deviates from its source).
    """
    return RECIPES.decorator(name, description, **metadata)


def list_recipes() -> dict[str, RecipeInfo]:
    """All registered recipes by name, in registration order."""
    return RECIPES.entries()


def get_recipe(name: str) -> Recipe:
    """A fresh copy of the recipe registered as ``name``."""
    if isinstance(name, Recipe):
        return name
    info = RECIPES.entry(name)
    recipe = info.obj()
    return dataclasses.replace(
        recipe, name=name, description=recipe.description or info.description
    )


# ---------------------------------------------------------------------- built-in recipes
_CONSTANT = ScheduleConfig(name="constant")
_COSINE = ScheduleConfig(name="warmup-cosine", warmup_fraction=0.05, min_lr_ratio=0.1)


@register_recipe(
    "vanilla",
    "tanh RNN, torch default init, Adam, no clipping (the guide's first row)",
    source="Elman (1990); the guide's first row",
)
def _vanilla() -> Recipe:
    return Recipe(
        layer="rnn",
        layer_kwargs={"nonlinearity": "tanh"},
        optimizer=OptimConfig(name="adam", lr=1e-3),
        schedule=_CONSTANT,
        guard=GuardConfig(mode="none"),
    )


@register_recipe(
    "lstm",
    "LSTM, torch default init, Adam, no clipping",
    source="Hochreiter & Schmidhuber (1997); Gers et al. (2000)",
)
def _lstm() -> Recipe:
    return Recipe(
        layer="lstm",
        optimizer=OptimConfig(name="adam", lr=1e-3),
        schedule=_CONSTANT,
        guard=GuardConfig(mode="none"),
    )


@register_recipe(
    "lstm-ln-clip",
    "LayerNorm-LSTM, per-gate orthogonal init, forget bias 1, clip 5, AdamW, warmup+cosine",
    source="Ba, Kiros & Hinton (2016); Pascanu et al. (2013); Jozefowicz et al. (2015)",
)
def _lstm_ln_clip() -> Recipe:
    return Recipe(
        layer="lstm",
        layer_kwargs={"layer_norm": True, "forget_bias": 1.0},
        init="safe",
        optimizer=OptimConfig(name="adamw", lr=2e-3, weight_decay=1e-4),
        schedule=_COSINE,
        guard=GuardConfig(mode="norm", max_norm=5.0),
    )


@register_recipe(
    "indrnn-relu",
    "2-layer ReLU IndRNN with |u| <= 2**(1/T) bound, U(0,1) recurrent init, Adam, warmup+cosine, clip 10",
    source="Li et al., CVPR 2018, Sec. 4.1",
)
def _indrnn_relu() -> Recipe:
    return Recipe(
        layer="indrnn",
        num_layers=2,
        layer_kwargs={"nonlinearity": "relu", "max_length": "auto"},
        init="safe",
        optimizer=OptimConfig(name="adam", lr=3e-3),
        schedule=_COSINE,
        guard=GuardConfig(mode="norm", max_norm=10.0),
        notes="Li et al. (CVPR 2018). max_length 'auto' binds the bound to the task's length.",
    )


@register_recipe(
    "gru",
    "GRU, torch default init, AdamW, clip 1, warmup+cosine",
    source="Cho et al. (2014)",
)
def _gru() -> Recipe:
    return Recipe(
        layer="gru",
        optimizer=OptimConfig(name="adamw", lr=5e-3, weight_decay=1e-4),
        schedule=_COSINE,
        guard=GuardConfig(mode="norm", max_norm=1.0),
    )


@register_recipe(
    "residual-rnn",
    "convex residual tanh RNN h_t = (h_{t-1} + tanh(...)) / 2, orthogonal init, AdamW, clip 1, "
    "warmup+cosine",
    source="the guide's residual RNN",
)
def _residual_rnn() -> Recipe:
    # The plain sum h_{t-1} + tanh(...) grows without bound over a long or carried stream (a
    # language model's loss ran to thousands of nats per character); the convex mix keeps the
    # state within tanh's range.
    return Recipe(
        layer="rnn",
        layer_kwargs={"nonlinearity": "tanh", "residual": True, "residual_scale": 0.5},
        init="safe",
        optimizer=OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4),
        schedule=_COSINE,
        guard=GuardConfig(mode="norm", max_norm=1.0),
    )


@register_recipe(
    "safe-lstm",
    "the guide's SafeLSTM: 2 layers, Glorot/orthogonal init, total forget bias 1 (fixed), AdamW, clip 5, AMP",
    source="the guide's SafeLSTM script",
)
def _safe_lstm() -> Recipe:
    return Recipe(
        layer="lstm",
        num_layers=2,
        layer_kwargs={"forget_bias": 1.0},
        init="safe",
        optimizer=OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4),
        schedule=_CONSTANT,
        guard=GuardConfig(mode="norm", max_norm=5.0),
        amp="auto",
        notes=(
            "The guide's _init_weights fills the forget-gate slice of both bias_ih and bias_hh with "
            "1, so the effective forget bias is 2 while the comment says 1; here forget_bias is the "
            "total over both vectors and equals 1. Its loop is CUDA-only; this recipe runs anywhere "
            "(AMP fp16 with GradScaler on CUDA, fp32 on CPU)."
        ),
    )


@register_recipe(
    "lru",
    "Linear Recurrent Unit (Orvieto et al. 2023), AdamW, warmup+cosine, clip 1",
    source="Orvieto et al., ICML 2023, Sec. 3 and App. D",
)
def _lru() -> Recipe:
    # A stack, as in the paper: with one block the only nonlinearity comes after the linear
    # recurrence, so it cannot form value x marker before summing (the adding problem).
    return Recipe(
        layer="lru",
        num_layers=4,
        optimizer=OptimConfig(name="adamw", lr=2e-3, weight_decay=1e-4),
        schedule=ScheduleConfig(name="warmup-cosine", warmup_fraction=0.1, min_lr_ratio=0.1),
        guard=GuardConfig(mode="norm", max_norm=1.0),
    )


@register_recipe(
    "transformer",
    "causal Transformer encoder baseline, AdamW, warmup+cosine, clip 1",
    source="Vaswani et al. (2017)",
)
def _transformer() -> Recipe:
    return Recipe(
        layer="transformer",
        num_layers=2,
        optimizer=OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-2),
        schedule=ScheduleConfig(name="warmup-cosine", warmup_fraction=0.1, min_lr_ratio=0.1),
        guard=GuardConfig(mode="norm", max_norm=1.0),
    )
