"""One generic registry of named objects: layers, tasks, recipes, init schemes, search spaces, presets.

Each area keeps one :class:`Registry` and fills it with decorators::

    LAYERS: Registry[type[nn.Module]] = Registry("layer")

    @LAYERS.decorator("lstm")
    class LSTM(nn.Module): ...

    LAYERS.get("lstm")        # the class
    LAYERS.entries()          # {"lstm": Entry(name, obj, description, metadata)}

One duplicate policy: a name is registered once. Registering it again with the same definition
(the same object, or a re-import of the same module) replaces the entry; a different definition
raises :class:`~rnnguard.errors.ConfigError`. One message for a missing name:
``unknown layer 'x'; expected one of: gru, lstm``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from rnnguard.errors import ConfigError

__all__ = ["Entry", "Registry"]

T = TypeVar("T")
Obj = TypeVar("Obj")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name, a one-line description and free-form metadata."""

    name: str
    obj: T
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0].strip() if doc else ""


def _same_definition(a: Any, b: Any) -> bool:
    """Whether ``b`` is ``a`` or the same definition loaded again (a reloaded module)."""
    if a is b:
        return True
    key = ("__module__", "__qualname__")
    return all(hasattr(a, k) and hasattr(b, k) for k in key) and all(
        getattr(a, k) == getattr(b, k) for k in key
    )


class Registry(Generic[T]):
    """Named objects of one kind (``what``: "layer", "task", ...), in registration order.

    ``builtins`` names modules whose import registers the built-in entries; they are imported on
    the first lookup, so ``create_task("ptb-char")`` works without importing the module first.
    """

    def __init__(self, what: str, builtins: Sequence[str] = ()) -> None:
        self.what = what
        self._entries: dict[str, Entry[T]] = {}
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins

    def register(self, name: str, obj: T, description: str = "", **metadata: Any) -> T:
        """Add ``obj`` as ``name`` (description defaults to the first line of its docstring)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.what} name must be a non-empty str, got {name!r}")
        old = self._entries.get(name)
        if old is not None and not _same_definition(old.obj, obj):
            raise ConfigError(f"{self.what} {name!r} is already registered (to {_label(old.obj)})")
        self._entries[name] = Entry(
            name, obj, description or _first_doc_line(obj), MappingProxyType(dict(metadata))
        )
        return obj

    def decorator(self, name: str, description: str = "", **metadata: Any) -> Callable[[Obj], Obj]:
        """A decorator registering the decorated class or function as ``name``."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.what} name must be a non-empty str, got {name!r}")

        def deco(obj: Obj) -> Obj:
            self.register(name, obj, description, **metadata)  # type: ignore[arg-type]
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugins that register temporary entries)."""
        self.entry(name)
        del self._entries[name]

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a clear error lists the known names otherwise."""
        self._load_builtins()
        if not isinstance(name, str) or name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.what} {name!r}; expected one of: {known}")
        return self._entries[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``."""
        return self.entry(name).obj

    def entries(self) -> dict[str, Entry[T]]:
        """All entries by name, in registration order (a copy)."""
        self._load_builtins()
        return dict(self._entries)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self.entries())

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self._entries)} entries)"

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a real missing dependency inside the module
                    raise


def _label(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__
