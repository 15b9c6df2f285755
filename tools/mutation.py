#!/usr/bin/env python3
"""Mutation testing of the core modules, each against its own fast tests (mutmut).

    python3 dev.py mutation                 # every group below (installs mutmut when missing)
    python3 dev.py mutation guard findings  # some of them
    python3 dev.py mutation --list          # the groups, their code and tests

Each group is run by mutmut in its own copy of ``src/`` and ``tests/`` under ``.mutation/GROUP``
(ignored by git), with mutmut's settings written into that copy's pyproject.toml: only the
group's module is mutated and only the group's test files are collected, so a mutant costs a few
seconds, not the whole suite. mutmut then runs, for each mutant, just the collected tests that
execute the mutated function. The result of each group is written to ``.mutation/GROUP/results.txt``
(one ``name: status`` line per mutant) and summarised on stdout; docs/mutation.md records a run.
Needs mutmut (the ``mutation`` extra; ``dev.py mutation`` installs it).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"


@dataclass(frozen=True)
class Group:
    source: str
    """The module mutated."""
    tests: tuple[str, ...]
    """Its fast tests (pytest arguments)."""
    functions: tuple[str, ...] = ()
    """Only mutate these functions (mutmut name patterns); empty: the whole module."""


GROUPS: dict[str, Group] = {
    "guard": Group(
        "src/rnnguard/train/guard.py",
        (
            "tests/train/test_guard.py",
            "tests/train/test_guard_combinations.py",
            "tests/train/test_guard_contract.py",
            "tests/test_checks.py::test_guard_from_config_takes_every_config_field",
        ),
    ),
    "findings": Group(
        "src/rnnguard/diagnose/findings.py",
        ("tests/diagnose/test_findings.py",),
    ),
    # The regularisers and the mask sampler of nn/functional (the rest of the module, the
    # recurrences, is checked against torch.nn and the fused paths by slower tests).
    "masks": Group(
        "src/rnnguard/nn/functional.py",
        (
            "tests/nn/test_mask_rates.py",
            "tests/nn/test_mask_contract.py",
            "tests/nn/test_regularisers.py",
            "tests/nn/test_native.py::test_masks_are_bernoulli_with_the_rate_rounded_to_16_bits",
            "tests/nn/test_native.py::test_mask_extremes_and_odd_shapes",
            "tests/nn/test_properties.py",
            "tests/nn/test_errors.py",
        ),
        (
            "x_zoneout",
            "x_drop_connect",
            "x__check_rate",
            "x__bernoulli",
            "x_sample_masks",
            "x__zoneout_state",
            "x_check_direction_masks",
        ),
    ),
}

#: mutmut's statuses that count as caught.
CAUGHT = ("killed", "timeout", "segfault", "suspicious")


def _module(source: str) -> str:
    return source.removeprefix("src/").removesuffix(".py").replace("/", ".")


def _patterns(group: Group) -> list[str]:
    mod = _module(group.source)
    if not group.functions:
        return [f"{mod}.*"]
    return [f"{mod}.{f}__mutmut_*" for f in group.functions]


def _config(group: Group) -> str:
    tests = ", ".join(f'"{t}"' for t in group.tests)
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["{group.source}"]\n'
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider"]\n'
    )


def prepare(name: str, group: Group) -> Path:
    """A fresh copy of the code and tests with the group's mutmut settings."""
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(text + _config(group))
    return work


def run(name: str, group: Group, children: int) -> Counter[str]:
    """Run mutmut on one group; return the count of each status among the group's mutants."""
    work = prepare(name, group)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    patterns = _patterns(group)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
    subprocess.run([*cmd, *patterns], cwd=work, env=env, check=False)
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = []
    counts: Counter[str] = Counter()
    for line in listing.splitlines():
        key, _, status = line.strip().rpartition(": ")
        if key and any(fnmatch.fnmatch(key, p) for p in patterns):
            counts[status] += 1
            lines.append(f"{key}: {status}")
    (work / "results.txt").write_text("\n".join(lines) + "\n")
    return counts


def summary(name: str, counts: Counter[str]) -> str:
    caught = sum(counts[s] for s in CAUGHT)
    total = sum(counts.values())
    left = total - caught
    rate = 100.0 * left / total if total else 0.0
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{name}: {total} mutants, {caught} caught, {left} not caught ({rate:.1f}%): {detail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("groups", nargs="*", help=f"groups to run (default: all of {sorted(GROUPS)})")
    p.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1)")
    p.add_argument("--list", action="store_true", help="show the groups and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, g in GROUPS.items():
            print(
                f"{name}: {g.source} {list(g.functions) or '(whole module)'}\n    tests: {list(g.tests)}"
            )
        return 0
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        p.error(f"unknown group(s) {unknown}; expected some of {sorted(GROUPS)}")
    lines = [summary(n, run(n, GROUPS[n], args.max_children)) for n in args.groups or GROUPS]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
