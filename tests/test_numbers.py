"""Numbers written as ``3e-3``, ``1e4``, ``inf`` parse wherever a number is expected."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from rnnguard.cli import main
from rnnguard.cli.args import parse_pairs, whole
from rnnguard.train.recipes import Recipe
from rnnguard.utils.yamlio import load_yaml, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3e-3", 0.003), ("1e4", 10000), ("-2E3", -2000), ("1.5e3", 1500.0), ("inf", math.inf),
     ("-Infinity", -math.inf), ("+inf", math.inf), (".inf", math.inf), ("10", 10), ("1_000", 1000),
     ("0.5", 0.5), ("1e400", math.inf)],
)  # fmt: skip
def test_yaml_reads_numbers_as_people_write_them(text: str, expected: float) -> None:
    value = load_yaml(text)
    assert value == expected and type(value) is type(expected)
    assert parse_number(text) == expected


def test_yaml_keeps_what_is_not_a_number() -> None:
    assert load_yaml("nan") != load_yaml("nan")  # a float NaN
    assert load_yaml("[1e, infx, abc, true, '3e-3']") == ["1e", "infx", "abc", True, "3e-3"]
    assert load_yaml("lr: 3e-3\nsteps: 1e4") == {"lr": 0.003, "steps": 10000}


def test_set_and_recipe_yaml_take_exponents() -> None:
    assert parse_pairs(["optimizer.lr=3e-3", "guard.max_norm=inf"], "--set") == {
        "optimizer.lr": 0.003,
        "guard.max_norm": math.inf,
    }
    recipe = Recipe.from_yaml("layer: gru\nhidden_size: 1e2\noptimizer:\n  lr: 3e-3\n")
    assert recipe.hidden_size == 100 and recipe.optimizer.lr == 0.003


def test_whole_number_flags() -> None:
    assert whole("1e3") == 1000 and whole("1_000") == 1000 and whole("7") == 7
    for bad in ("1.5", "abc", "inf", "3e-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number"):
            whole(bad)


def test_train_cli_takes_the_readme_spelling(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--recipe", "gru", "--set", "hidden_size=8", "--set", "optimizer.lr=3e-3",
               "--task", "adding", "--length", "1e1", "--batch-size", "8", "--eval-batches", "1",
               "--steps", "1e1", "--no-progress", "--out", str(out)])  # fmt: skip
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 10 and result["recipe"]["optimizer"]["lr"] == 0.003
