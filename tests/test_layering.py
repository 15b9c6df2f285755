"""Imports flow one way: each package imports only the packages below it, and no module cycles.

The layers, bottom to top (docs/architecture.md)::

    errors, utils  <-  nn  <-  tasks  <-  models  <-  train  <-  diagnose  <-  tune, bench
                   <-  integrations  <-  cli

Every ``import`` statement counts, at module level or inside a function (a deferred import is
still a dependency), read from the source with ``ast`` so nothing needs to be importable.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "rnnguard"

#: Rank of each top-level part of the package; a module may import its own part and lower ranks.
LAYERS: dict[str, int] = {
    "errors": 0,
    "utils": 1,
    "nn": 2,
    "tasks": 3,
    "models": 4,
    "train": 5,
    "diagnose": 6,
    "tune": 7,
    "bench": 7,
    "integrations": 8,
    "cli": 9,
}
TOP = max(LAYERS.values())

#: Imports allowed against the rule, each with the reason it cannot be avoided.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The deepest existing module that ``name`` (a module or module.attribute) points into."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path, source: str | None = None) -> Iterator[tuple[str, int, bool]]:
    """(imported rnnguard module, line, at module level) for every import in ``path``."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    top = {id(node) for node in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            if target == "rnnguard" or target.startswith("rnnguard."):
                yield _resolve(target), node.lineno, id(node) in top


def _part(module: str) -> str | None:
    """The layer a module belongs to (None for the package's own ``__init__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _check(module: str, target: str, line: int) -> str | None:
    """Why ``module`` may not import ``target``, or None when it may."""
    part, other = _part(module), _part(target)
    if part is None or other == part or (module, target) in EXCEPTIONS:
        return None  # rnnguard/__init__.py re-exports the public API from every layer
    assert part in LAYERS, f"{module}: add its package to LAYERS in {__file__}"
    if other is None:
        # The top-level package imports every layer: only the top layer may lean on it.
        return None if LAYERS[part] == TOP else f"{module}:{line} imports the rnnguard package"
    if LAYERS[other] >= LAYERS[part]:
        return f"{module}:{line} imports {target} ({other} is not below {part})"
    return None


def _violations() -> list[str]:
    found = {
        _check(module, target, line)
        for module, path in MODULES.items()
        for target, line, _ in _imports(module, path)
    }
    return sorted(v for v in found if v)


def test_every_package_imports_only_the_layers_below_it() -> None:
    assert not _violations(), "\n".join(_violations())


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_level_import_cycles() -> None:
    graph = {
        module: {
            target
            for target, _, top in _imports(module, path)
            if top and target != module and not _is_parent(target, module)
        }
        for module, path in MODULES.items()
    }
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def _is_parent(target: str, module: str) -> bool:
    # Importing a submodule runs its package's __init__ first: that edge is not a choice.
    return module.startswith(target + ".")


def test_the_checker_sees_every_kind_of_import() -> None:
    source = (
        "import rnnguard.cli\n"
        "from rnnguard.train import trainer\n"
        "def f():\n    from rnnguard.diagnose.doctor import doctor\n"
        "from . import guard\n"
        "import torch\n"
    )
    path = ROOT / "train" / "probe.py"
    found = {t: top for t, _, top in _imports("rnnguard.train.probe", path, source)}
    assert found == {
        "rnnguard.cli": True,
        "rnnguard.train.trainer": True,
        "rnnguard.diagnose.doctor": False,
        "rnnguard.train.guard": True,
    }


def test_the_rule_rejects_upward_and_sideways_imports() -> None:
    assert _check("rnnguard.train.trainer", "rnnguard.diagnose.monitor", 3)
    assert _check("rnnguard.nn.layers", "rnnguard.cli.train", 3)
    assert _check("rnnguard.bench.report", "rnnguard.tune.study", 3)  # same rank: no sideways
    assert _check("rnnguard.utils.io", "rnnguard", 3)
    assert _check("rnnguard.diagnose.doctor", "rnnguard.train.recipes", 3) is None
    assert _check("rnnguard.cli", "rnnguard", 3) is None
    assert _check("rnnguard.nn.cells", "rnnguard.nn.layers", 3) is None  # within a package


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
