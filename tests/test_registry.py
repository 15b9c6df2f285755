"""The generic registry behind layers, tasks, recipes, init schemes and search spaces."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import rnnguard
from rnnguard.errors import ConfigError
from rnnguard.nn.init import INIT_SCHEMES
from rnnguard.nn.registry import LAYERS
from rnnguard.tasks.registry import TASKS
from rnnguard.train.recipes import RECIPES
from rnnguard.tune.space import SPACES
from rnnguard.utils.registry import Registry


def test_decorator_registers_with_description_and_metadata() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.decorator("b", source="paper")
    def make_b() -> int:
        """Makes a b.

        More text that is not part of the description.
        """
        return 2

    reg.register("a", 1, "the number one")
    assert reg.get("b") is make_b and reg.get("a") == 1
    assert reg.names() == ["b", "a"]  # registration order
    entry = reg.entry("b")
    assert (entry.description, dict(entry.metadata)) == ("Makes a b.", {"source": "paper"})
    assert "a" in reg and "c" not in reg and len(reg) == 2


def test_unknown_name_lists_the_known_ones_sorted() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2)
    reg.register("a", 1)
    with pytest.raises(ConfigError, match=r"^unknown widget 'x'; expected one of: a, b$"):
        reg.get("x")
    with pytest.raises(ConfigError, match=r"unknown widget 3"):
        reg.get(3)  # type: ignore[arg-type]


def test_a_name_is_registered_once() -> None:
    reg: Registry[object] = Registry("widget")

    def f() -> None: ...

    def g() -> None: ...

    reg.register("f", f)
    reg.register("f", f, "same object again: allowed (a module imported twice)")
    assert reg.entry("f").description.startswith("same object")
    with pytest.raises(ConfigError, match=r"widget 'f' is already registered"):
        reg.register("f", g)
    reg.unregister("f")
    reg.register("f", g)
    assert reg.get("f") is g
    with pytest.raises(ConfigError, match="non-empty"):
        reg.register("", g)


def test_builtins_are_imported_on_first_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "widgets_ok.py").write_text(
        "from tests_registry_target import REG\nREG.register('w', 1)\n"
    )
    (tmp_path / "widgets_broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    target = types.ModuleType("tests_registry_target")
    monkeypatch.setitem(sys.modules, "tests_registry_target", target)
    reg: Registry[int] = Registry("widget", builtins=("widgets_ok", "widgets_absent"))
    target.REG = reg  # type: ignore[attr-defined]
    assert "widgets_ok" not in sys.modules  # nothing imported before the first lookup
    assert reg.names() == ["w"]  # an absent builtin module is skipped
    broken: Registry[int] = Registry("widget", builtins=("widgets_broken",))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        broken.names()  # a builtin module missing a dependency is a real error
    monkeypatch.delitem(sys.modules, "widgets_ok")


@pytest.mark.parametrize(
    ("registry", "what", "known"),
    [
        (LAYERS, "layer", "lstm"),
        (TASKS, "task", "adding"),
        (RECIPES, "recipe", "lstm-ln-clip"),
        (INIT_SCHEMES, "init scheme", "safe"),
        (SPACES, "search space", "default"),
    ],
)
def test_every_area_uses_the_one_registry(
    registry: Registry[object], what: str, known: str
) -> None:
    assert isinstance(registry, Registry) and known in registry
    with pytest.raises(ConfigError, match=rf"^unknown {what} 'nope'; expected one of: .*{known}"):
        registry.get("nope")
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(known, object())


def test_init_scheme_names_still_work_as_strings() -> None:
    layer = rnnguard.LSTM(3, 4, init="safe")
    assert layer.init == "safe"
    with pytest.raises(ConfigError, match=r"unknown init scheme 'nope'"):
        rnnguard.LSTM(3, 4, init="nope")
