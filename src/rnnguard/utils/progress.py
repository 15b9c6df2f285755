"""Progress bars for the steps that take more than a few seconds (tqdm, on stderr).

A bar shows only when stderr is a terminal, and never when ``RNNGUARD_PROGRESS=0`` (or ``off``,
``no``, ``false``) is set or the caller passes ``enabled=False``; otherwise the same calls do
nothing, so library code can always ask for a bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["Bar", "progress", "progress_enabled"]

_OFF = ("0", "off", "no", "false")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether to draw bars: ``enabled`` when given, else stderr is a terminal and not switched off."""
    if enabled is not None:
        return bool(enabled)
    if os.environ.get("RNNGUARD_PROGRESS", "").strip().lower() in _OFF:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Bar:
    """What callers use: ``update``, ``set_description``, ``set_postfix_str`` and ``write``."""

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar

    @property
    def active(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    def set_count(self, n: int) -> None:
        if self._bar is not None and n != self._bar.n:
            self._bar.n = n
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_total(self, total: int | None) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def set_description(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=True)

    def set_postfix_str(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    @contextlib.contextmanager
    def external(self) -> Iterator[None]:
        """Lift the bar while other code prints, then draw it again."""
        if self._bar is None:
            yield
            return
        with type(self._bar).external_write_mode(file=sys.stderr):
            yield

    def write(self, text: str, file: Any = None) -> None:
        """Print a line above the bar (plainly when there is none)."""
        if self._bar is not None:
            self._bar.write(text, file=file or sys.stdout)
        else:
            print(text, file=file or sys.stdout, flush=True)


@contextlib.contextmanager
def progress(
    total: int | None, desc: str, *, unit: str = "it", enabled: bool | None = None
) -> Iterator[Bar]:
    """A bar of ``total`` steps (``None``: a counter) described by ``desc``; closed on exit."""
    if not progress_enabled(enabled):
        yield Bar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)
    try:
        yield Bar(bar)
    finally:
        bar.close()
