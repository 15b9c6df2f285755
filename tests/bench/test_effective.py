"""Effective-length search on a fake trainer with a known solved set."""

from __future__ import annotations

import pytest

from rnnguard.bench.effective import LengthSearch, effective_length
from rnnguard.bench.grid import RunSpec
from rnnguard.errors import ConfigError

GRID = (10, 20, 50, 100, 200, 500, 1000)


def test_largest_prefix_confirmed_by_second_seed() -> None:
    # Seed 0 solves up to 200 (and, irrelevantly, 1000); seed 1 solves up to 200 too.
    solved = {(n, 0) for n in (10, 20, 50, 100, 200, 1000)} | {
        (n, 1) for n in (10, 20, 50, 100, 200)
    }
    assert effective_length(lambda n, s: (n, s) in solved, GRID) == 200


def test_a_gap_stops_the_search() -> None:
    # 50 fails, so 100 and 200 do not count even though they are solved.
    solved = {(n, s) for n in (10, 20, 100, 200) for s in (0, 1)}
    assert effective_length(lambda n, s: (n, s) in solved, GRID) == 20


def test_unconfirmed_length_falls_back_to_shorter_confirmed() -> None:
    solved = {(n, 0) for n in (10, 20, 50, 100)} | {(10, 1), (20, 1)}
    assert effective_length(lambda n, s: (n, s) in solved, GRID) == 20


def test_nothing_solved_and_everything_solved() -> None:
    assert effective_length(lambda n, s: False, GRID) == 0
    assert effective_length(lambda n, s: True, GRID) == 1000
    assert effective_length(lambda n, s: s == 0, GRID) == 0  # never confirmed


def test_search_trains_only_what_it_needs() -> None:
    calls: list[tuple[int, int]] = []

    def make(n: int, s: int) -> RunSpec:
        return RunSpec("r", "adding", n, s, steps=1, batch_size=1)

    search = LengthSearch("r", "adding", GRID, make)
    solved = {(10, 0), (20, 0), (50, 0), (20, 1), (50, 1), (10, 1)}
    while pending := search.pending():
        for spec in pending:
            calls.append((spec.length, spec.seed))
            search.feed(spec, {"solved": (spec.length, spec.seed) in solved, "solved_step": 7})
    # seed 0 ascends until its first failure (100), then seed 1 confirms the candidate 50 at once.
    assert calls == [(10, 0), (20, 0), (50, 0), (100, 0), (50, 1)]
    summary = search.summary()
    assert summary["effective_length"] == 50 and summary["confirmed"]
    assert summary["first_failed_length"] == 100 and summary["steps_to_solve"] == 7


def test_bad_grid() -> None:
    with pytest.raises(ConfigError, match="lengths"):
        LengthSearch("r", "adding", (20, 10), lambda n, s: RunSpec("r", "a", n, s, 1, 1))
    with pytest.raises(ConfigError, match="seeds"):
        LengthSearch("r", "adding", (10,), lambda n, s: RunSpec("r", "a", n, s, 1, 1), (0, 0))


def _exhaustive(solved: set[tuple[int, int]], grid: tuple[int, ...]) -> int:
    """The definition applied to every grid point of both seeds (what the search avoids running)."""
    prefix = []
    for n in grid:
        if (n, 0) not in solved:
            break
        prefix.append(n)
    return next((n for n in reversed(prefix) if (n, 1) in solved), 0)


def test_search_equals_the_exhaustive_grid_on_every_solved_set_and_runs_less() -> None:
    import itertools

    grid = (10, 20, 50, 100, 200)
    points = [(n, s) for n in grid for s in (0, 1)]
    runs_total = 0
    for bits in itertools.product((False, True), repeat=len(points)):  # all 1024 solved sets
        solved = {p for p, b in zip(points, bits) if b}
        runs: list[int] = []

        def oracle(n: int, s: int, _solved: set = solved, _runs: list = runs) -> bool:
            _runs.append(n)
            return (n, s) in _solved

        assert effective_length(oracle, grid) == _exhaustive(solved, grid), sorted(solved)
        runs_total += len(runs)
    assert runs_total < 0.6 * len(points) * 2 ** len(points)  # far fewer than the full grid
