"""Search spaces: how an Optuna trial becomes a :class:`~rnnguard.train.recipes.Recipe`.

Parameters that only make sense for some cells are suggested only for them (zoneout, forget bias
and ``chrono`` init for gated cells, ``r_min`` for the LRU...), so every suggested recipe builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnguard.train.guard import CLIP_MODES
from rnnguard.utils.registry import Entry, Registry

__all__ = [
    "CELLS",
    "CLIP_MODES",
    "INITS",
    "SPACES",
    "SearchSpace",
    "get_space",
    "list_spaces",
    "register_space",
]

CELLS = ("rnn", "lstm", "gru", "indrnn", "lru")
INITS = {
    "rnn": ("torch", "safe", "irnn"),
    "lstm": ("torch", "safe", "chrono"),
    "gru": ("torch", "safe", "chrono"),
    "indrnn": ("torch", "safe"),
}


@dataclass(frozen=True)
class SearchSpace:
    """A named space: which cells are searched and whether the architecture varies at all."""

    name: str
    description: str
    cells: tuple[str, ...]
    """Cells to choose from; empty: keep the base recipe's layer and layer settings."""
    regularisers: bool = True
    """Also search zoneout and DropConnect."""

    def suggest(self, trial: Any, base: Any) -> Any:
        """Ask ``trial`` for every parameter and return the recipe they describe."""
        from rnnguard.train.recipes import Recipe

        data = base.to_dict()
        if self.cells:
            layer = _categorical(trial, "layer", self.cells)
            data.update(layer=layer, layer_kwargs=_layer_kwargs(trial, layer, self.regularisers))
            data.update(init=None, init_kwargs={})
            if layer in INITS:
                # One name per cell: Optuna needs a name to keep the same choices in every trial.
                init = trial.suggest_categorical(f"init_{layer}", list(INITS[layer]))
                data["init"] = init
                if init == "chrono":
                    data["init_kwargs"] = {"t_max": "auto"}  # bound to the task length
        data["guard"] = {**data["guard"], **_guard(trial)}
        data["optimizer"] = {
            **data["optimizer"],
            "name": "adamw",
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
            "amsgrad": trial.suggest_categorical("amsgrad", [False, True]),
        }
        data["schedule"] = {
            **data["schedule"],
            "name": "warmup-cosine",
            "warmup_fraction": trial.suggest_float("warmup_fraction", 0.0, 0.2),
            "min_lr_ratio": 0.1,
        }
        data.update(name="tuned", description=f"trial {trial.number} of a '{self.name}' search")
        return Recipe.from_dict(data)


def _categorical(trial: Any, name: str, choices: tuple[str, ...]) -> str:
    # A one-element choice still goes through Optuna so it appears in the trial's parameters.
    return str(trial.suggest_categorical(name, list(choices)))


def _layer_kwargs(trial: Any, layer: str, regularisers: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if layer == "lru":
        # The LRU normalises internally; its stability knob is the eigenvalue ring.
        kw["r_min"] = trial.suggest_float("r_min", 0.0, 0.95)
        kw["r_max"] = trial.suggest_categorical("r_max", [0.99, 0.999])
        return kw
    kw["layer_norm"] = trial.suggest_categorical("layer_norm", [False, True])
    if layer == "rnn":
        kw["nonlinearity"] = trial.suggest_categorical("nonlinearity", ["tanh", "relu"])
        kw["residual"] = trial.suggest_categorical("residual", [False, True])
    if layer in ("lstm", "gru"):
        kw["forget_bias"] = trial.suggest_float("forget_bias", 0.0, 3.0)
    if layer == "indrnn":
        kw["nonlinearity"] = "relu"
        kw["max_length"] = "auto"  # the |u| <= 2**(1/T) bound for the task's length
    if regularisers:
        kw["zoneout"] = trial.suggest_float("zoneout", 0.0, 0.3)
        kw["dropconnect"] = trial.suggest_float("dropconnect", 0.0, 0.3)
    return kw


def _guard(trial: Any) -> dict[str, Any]:
    mode = trial.suggest_categorical("clip", list(CLIP_MODES))
    out: dict[str, Any] = {"mode": mode}
    if mode == "norm":
        out["max_norm"] = trial.suggest_float("max_norm", 0.1, 20.0, log=True)
    elif mode == "value":
        out["clip_value"] = trial.suggest_float("clip_value", 0.01, 1.0, log=True)
    elif mode == "auto":
        out["percentile"] = trial.suggest_float("percentile", 5.0, 50.0)
    elif mode == "agc":
        out["agc_clip"] = trial.suggest_float("agc_clip", 0.005, 0.1, log=True)
    return out


SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Add ``space`` to the registry under ``space.name``."""
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
    return SPACES.register(space.name, space, space.description)


def list_spaces() -> dict[str, Entry[SearchSpace]]:
    """All registered search spaces by name (``entry.obj`` is the space)."""
    return SPACES.entries()


def get_space(name: str | SearchSpace) -> SearchSpace:
    """The space registered as ``name``."""
    if isinstance(name, SearchSpace):
        return name
    return SPACES.get(name)


register_space(
    SearchSpace(
        "default",
        "every cell (rnn, lstm, gru, indrnn, lru) with its stability settings, clipping and optimiser",
        CELLS,
    )
)
register_space(
    SearchSpace(
        "gated",
        "LSTM and GRU only: layer norm, init, forget bias, zoneout, DropConnect, clipping, optimiser",
        ("lstm", "gru"),
    )
)
register_space(
    SearchSpace(
        "no-reg",
        "every cell, without zoneout/DropConnect (short budgets rarely reward regularisation)",
        CELLS,
        regularisers=False,
    )
)
register_space(
    SearchSpace(
        "training",
        "keep the base recipe's model; search clipping, learning rate, warmup, weight decay, AMSGrad",
        (),
    )
)
