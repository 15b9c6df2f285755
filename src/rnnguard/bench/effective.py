"""Effective length: the longest grid length a recipe learns within a fixed per-length budget.

Definition used throughout the benchmark: train from scratch at each length of a geometric grid
(shortest first) with the search seed; a length counts as solved when the held-out metric passes
the task's threshold. The candidate is the largest length solved with every shorter length solved.
It is then confirmed with a second seed; if the second seed fails there, the next shorter solved
length is tried, and so on. Effective length = the largest candidate both seeds solved (0: none).

Why shortest first and no bisection: on a geometric grid a run's cost grows with its length, and a
failing run spends its whole budget, so the cheapest search stops at the first failure. Probing by
doubling or bisecting grid indices reaches long lengths that fail; on the 9-length grid 10..5000,
with cost proportional to length, it cost the same or up to 9x more wherever the recipe stops
solving below T=1000 (and saved at most a fifth above). A run stops as soon as it is solved, and
the second seed runs only the candidate unless it fails there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rnnguard.bench.grid import RunSpec
from rnnguard.errors import ConfigError

__all__ = ["Job", "LengthSearch", "SingleRuns", "effective_length"]


def _solved(result: dict[str, Any] | None) -> bool:
    return bool(result and result.get("solved"))


class Job:
    """A unit of the benchmark that asks for runs and is fed their results."""

    def pending(self) -> list[RunSpec]:
        """Runs needed now, given the results fed so far (empty when done)."""
        raise NotImplementedError

    def feed(self, spec: RunSpec, result: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return not self.pending()


@dataclass
class LengthSearch(Job):
    """Effective-length search for one recipe on one task (see the module docstring)."""

    recipe: str
    task: str
    lengths: tuple[int, ...]
    make_spec: Callable[[int, int], RunSpec]
    """``make_spec(length, seed)`` builds the run for one grid point."""
    seeds: tuple[int, int] = (0, 1)
    results: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lengths or list(self.lengths) != sorted(set(self.lengths)):
            raise ConfigError(f"lengths must be increasing and non-empty, got {self.lengths!r}")
        if len(self.seeds) != 2 or self.seeds[0] == self.seeds[1]:
            raise ConfigError(f"seeds must be two different ints, got {self.seeds!r}")

    def feed(self, spec: RunSpec, result: dict[str, Any]) -> None:
        self.results[(spec.length, spec.seed)] = result

    def solved_prefix(self) -> list[int]:
        """Lengths solved by the search seed before its first failure (so far)."""
        prefix = []
        for length in self.lengths:
            r = self.results.get((length, self.seeds[0]))
            if not _solved(r):
                break
            prefix.append(length)
        return prefix

    def pending(self) -> list[RunSpec]:
        first, second = self.seeds
        for length in self.lengths:
            r = self.results.get((length, first))
            if r is None:
                return [self.make_spec(length, first)]
            if not _solved(r):
                break
        for length in reversed(self.solved_prefix()):
            r = self.results.get((length, second))
            if r is None:
                return [self.make_spec(length, second)]
            if _solved(r):
                return []
        return []

    def summary(self) -> dict[str, Any]:
        """Effective length and the evidence behind it (valid once :attr:`done`)."""
        prefix = self.solved_prefix()
        effective = 0
        for length in reversed(prefix):
            if _solved(self.results.get((length, self.seeds[1]))):
                effective = length
                break
        failed = next(
            (
                n
                for n in self.lengths
                if (n, self.seeds[0]) in self.results
                and not _solved(self.results[(n, self.seeds[0])])
            ),
            None,
        )
        at = self.results.get((effective, self.seeds[0])) if effective else None
        return {
            "recipe": self.recipe,
            "task": self.task,
            "effective_length": effective,
            "candidate_length": prefix[-1] if prefix else 0,
            "confirmed": bool(effective) and effective == (prefix[-1] if prefix else 0),
            "first_failed_length": failed,
            "grid": list(self.lengths),
            "steps_to_solve": at.get("solved_step") if at else None,
            "runs": len(self.results),
            "points": [
                {"length": n, "seed": s, "solved": _solved(r), "metric": r.get("metric"),
                 "error": r.get("error")}
                for (n, s), r in sorted(self.results.items())
            ],
        }  # fmt: skip


@dataclass
class SingleRuns(Job):
    """Independent runs with no search (the language-model runs)."""

    specs: list[RunSpec]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def pending(self) -> list[RunSpec]:
        return [s for s in self.specs if s.key() not in self.results]

    def feed(self, spec: RunSpec, result: dict[str, Any]) -> None:
        self.results[spec.key()] = result


def effective_length(
    solved: Callable[[int, int], bool], lengths: tuple[int, ...], seeds: tuple[int, int] = (0, 1)
) -> int:
    """Effective length for a ``solved(length, seed)`` oracle (runs the search sequentially)."""

    def make(length: int, seed: int) -> RunSpec:
        return RunSpec("oracle", "oracle", length, seed, steps=1, batch_size=1)

    search = LengthSearch("oracle", "oracle", tuple(lengths), make, seeds)
    while pending := search.pending():
        for spec in pending:
            search.feed(spec, {"solved": bool(solved(spec.length, spec.seed))})
    return int(search.summary()["effective_length"])
