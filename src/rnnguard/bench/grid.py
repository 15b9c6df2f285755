"""Benchmark grid: one run's specification (:class:`RunSpec`) and the named presets.

A preset fixes, for every recipe, the synthetic tasks and length grid of the effective-length
search, the per-length budget, the seeds, and the language-model run (PTB-char or a text file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from rnnguard.errors import ConfigError
from rnnguard.utils.checks import integer, positive_int

__all__ = [
    "PRESETS",
    "LMSettings",
    "LengthSettings",
    "Preset",
    "RunSpec",
    "SingleSettings",
    "get_preset",
]

KINDS = ("length", "lm", "single")


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run of the benchmark (and so its result key)."""

    recipe: str
    task: str
    length: int
    seed: int
    steps: int
    batch_size: int
    kind: str = "length"
    """``length`` (effective-length search), ``lm`` (language model) or ``single`` (e.g. MNIST)."""
    hidden_size: int | None = None
    """Override of the recipe's width (None: the recipe's own)."""
    num_layers: int | None = None
    """Override of the recipe's depth (None: the recipe's own)."""
    eval_every: int = 50
    eval_batches: int = 2
    steps_per_epoch: int = 100
    task_kwargs: tuple[tuple[str, Any], ...] = ()
    """Extra task arguments as sorted (name, value) pairs (e.g. PTB slice sizes)."""
    horizon: bool = True
    """Measure the gradient horizon at init and at the end."""
    horizon_length: int | None = None
    """Sequence length the horizon is measured at (None: the run's), the same for every recipe."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("recipe", "task"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty str, got {getattr(self, name)!r}")
        for name in ("length", "steps", "batch_size", "eval_batches", "steps_per_epoch"):
            positive_int(name, getattr(self, name))
        integer("seed", self.seed)
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["task_kwargs"] = dict(self.task_kwargs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data["task_kwargs"] = tuple(sorted(dict(data.get("task_kwargs") or {}).items()))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def key(self) -> str:
        """Stable short hash of the spec: recipe, task, length, seed and the whole budget."""
        data = self.to_dict()
        # Where PTB-char lives does not change the run: moving the data must not redo the grid.
        data["task_kwargs"].pop("data_dir", None)
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.recipe}/{self.task}/T={self.length}/seed={self.seed}"


@dataclass(frozen=True)
class LengthSettings:
    """Effective-length search on one synthetic task: grid and per-length budget."""

    task: str
    lengths: tuple[int, ...]
    steps: int
    batch_size: int = 32
    eval_every: int = 50
    eval_batches: int = 2
    longest: tuple[tuple[str, int], ...] = ()
    """(recipe, T) pairs: the longest grid length that recipe is tried at in this preset, for
    recipes whose longer runs cost more than the preset's budget (they are in a larger preset)."""

    def lengths_for(self, recipe: str) -> tuple[int, ...]:
        """The grid lengths ``recipe`` is searched over."""
        cap = dict(self.longest).get(recipe)
        return self.lengths if cap is None else tuple(t for t in self.lengths if t <= cap)


@dataclass(frozen=True)
class LMSettings:
    """The language-model run: ``task`` (PTB-char or the built-in synthlang), or ``text`` with a
    file given on the command line."""

    task: str = "ptb-char"
    task_kwargs: tuple[tuple[str, Any], ...] = ()
    """Extra arguments of the task as sorted (name, value) pairs (e.g. synthlang's grammar)."""
    length: int = 50
    steps: int = 200
    batch_size: int = 32
    train_tokens: int | None = None
    eval_tokens: int | None = None
    steps_per_epoch: int = 100
    eval_every: int = 0


@dataclass(frozen=True)
class SingleSettings:
    """A task run once per recipe and scored by its own metric (sequential / permuted MNIST)."""

    task: str
    length: int
    steps: int
    batch_size: int = 64
    eval_every: int = 0
    eval_limit: int | None = None
    """Score on the first this many test examples (None: all)."""
    hidden_size: int | None = None


@dataclass(frozen=True)
class Preset:
    """A named benchmark grid."""

    name: str
    description: str
    length_tasks: tuple[LengthSettings, ...]
    lm: LMSettings | None
    recipes: tuple[str, ...] | None = None
    """Recipes to run (None: every registered recipe)."""
    seeds: tuple[int, int] = (0, 1)
    """Search seed and confirmation seed."""
    hidden_size: int | None = 32
    """Width override for every recipe (None: each recipe's own)."""
    num_layers: int | None = None
    lm_hidden_size: int | None = None
    """Width override for the language-model run (None: ``hidden_size``)."""
    lm_num_layers: int | None = None
    device: str = "cpu"
    single_tasks: tuple[SingleSettings, ...] = ()
    """Tasks run once per recipe when their data is found (MNIST)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, **changes: Any) -> Preset:
        return dataclasses.replace(self, **changes)


# The quick demo's language: keys recalled 2, 8 and 32 characters later, simple enough that a
# recipe that can carry information that far shows it within a few hundred steps.
QUICK_LANGUAGE = (("branching", 1), ("distances", (2, 8, 32)), ("fillers", 4), ("keys", 8))

_QUICK = Preset(
    name="quick",
    description=(
        "every recipe, width 32; adding (T=10/20/50, up to 1000 steps per length) and copy "
        "(T=2/5/10, up to 600 steps); a 500-step run (width 64) on the built-in synthlang "
        "language, whose keys are recalled 2, 8 and 32 characters later"
    ),
    length_tasks=(
        LengthSettings("adding", (10, 20, 50), steps=1000, batch_size=32, eval_every=100),
        LengthSettings("copy", (2, 5, 10), steps=600, batch_size=32, eval_every=100),
    ),
    lm=LMSettings(
        task="synthlang",
        task_kwargs=QUICK_LANGUAGE,
        length=50,
        steps=500,
        batch_size=32,
        train_tokens=100_000,
        eval_tokens=10_000,
        steps_per_epoch=100,
    ),
    hidden_size=32,
    lm_hidden_size=64,
)

_STANDARD = Preset(
    name="standard",
    description=(
        "every recipe at the literature's width 128 and batch 50 (Le et al. 2015, Li et al. 2018); "
        "adding to T=1000 with up to 3000 steps per length (to T=500 for gru and safe-lstm, T=100 "
        "for transformer, T=50 for lru: their longer runs are in the paper preset), copy to T=100 "
        "(lru to T=20, transformer to T=50) with up to 2000 steps; a run stops once solved and a "
        "length is tried only while every shorter one is solved; PTB-char, width 128, 2000 steps "
        "of BPTT 100, scored on the first 50k valid/test characters"
    ),
    length_tasks=(
        LengthSettings(
            "adding",
            (10, 20, 50, 100, 200, 500, 1000),
            steps=3000,
            batch_size=50,
            eval_every=100,
            # Per training step at width 128, batch 50, one thread of an idle 2-core machine
            # (`rnnguard train --recipe R --task adding --length T --batch-size 50 --set
            # hidden_size=128 --steps 8 --threads 1 --log-every 1`, metrics.jsonl's `time`): gru
            # 0.55 s and safe-lstm 1.6 s at T=1000, transformer 0.7 s and lru 1.0 s at T=200;
            # about twice that inside the benchmark, both cores busy. A run that does not solve
            # spends all 3000 steps, so one such run and its confirmation seed would take most of
            # the preset's 2.5 h.
            longest=(("gru", 500), ("safe-lstm", 500), ("transformer", 100), ("lru", 50)),
        ),
        LengthSettings(
            "copy",
            (10, 20, 50, 100),
            steps=2000,
            batch_size=50,
            eval_every=100,
            longest=(("transformer", 50), ("lru", 20)),
        ),
    ),
    lm=LMSettings(length=100, steps=2000, batch_size=32, eval_tokens=50_000, steps_per_epoch=500),
    hidden_size=128,
    lm_hidden_size=128,
)

_PAPER = Preset(
    name="paper",
    description=(
        "the papers' sizes, for a GPU: width 128, adding to T=5000, copy to T=1000, 20000 steps; "
        "PTB-char 1x1000, BPTT 150, batch 128, full valid/test"
    ),
    length_tasks=(
        LengthSettings(
            "adding",
            (10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            steps=20000,
            batch_size=50,
            eval_every=500,
            eval_batches=8,
        ),
        LengthSettings(
            "copy", (10, 20, 50, 100, 200, 500, 1000), steps=20000, batch_size=64, eval_every=500
        ),
    ),
    lm=LMSettings(length=150, steps=50000, batch_size=128, steps_per_epoch=260, eval_every=5000),
    hidden_size=128,
    lm_hidden_size=1000,
    lm_num_layers=1,
    device="auto",
    single_tasks=(
        SingleSettings("smnist", 784, steps=20000, batch_size=64, hidden_size=128),
        SingleSettings("pmnist", 784, steps=20000, batch_size=64, hidden_size=128),
    ),
)

_REPRODUCE = Preset(
    name="reproduce",
    description=(
        "published claims and the guide's table, one verdict each (reproduced, not reproduced, "
        "inconclusive at this budget): adding at T up to 2000, copy at T=100, PTB-char at width 128 "
        "(skipped without its data); see rnnguard.bench.claims"
    ),
    length_tasks=(),
    lm=None,
    hidden_size=128,
    extra={"claims": True},
)

PRESETS: dict[str, Preset] = {p.name: p for p in (_QUICK, _STANDARD, _PAPER, _REPRODUCE)}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``quick``, ``standard``, ``paper`` or ``reproduce``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}")
    return PRESETS[name]
