"""The one HTML helper behind the doctor's and the benchmark's self-contained reports.

Cells passed to :func:`row` and :func:`table` are HTML already: escape text with :func:`escape`
first. Images are embedded as base64 so a report is one file that can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["escape", "image", "page", "row", "table"]

escape = html.escape


def row(cells: Iterable[str], tag: str = "td") -> str:
    """One table row of ``cells`` (HTML already)."""
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table: ``header`` is plain text (escaped here), ``rows`` hold HTML cells."""
    return (
        "<table>"
        + row((escape(h) for h in header), tag="th")
        + "".join(row(r) for r in rows)
        + "</table>"
    )


def image(path: str | Path, alt: str) -> str:
    """An ``<img>`` with the PNG at ``path`` embedded."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def page(title: str, body: str, css: str = "") -> str:
    """A complete HTML document: ``title`` (plain text), ``body`` (HTML), optional ``css``."""
    style = f"<style>{css}</style>" if css else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>{style}</head><body>\n{body}\n</body></html>\n"
    )
