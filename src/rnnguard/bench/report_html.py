"""The benchmark report as one self-contained HTML page (``report.html``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnguard.bench.reading import reading
from rnnguard.bench.report_markdown import CLAIM_DEFINITIONS, DEFINITIONS, context_lines
from rnnguard.bench.summary import COLUMNS, RUN_COLUMNS, SINGLE_COLUMNS
from rnnguard.utils.html import escape, image, page, table

__all__ = ["render_html"]

_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
    "td,th{border:1px solid #bbb;padding:4px 6px;font-size:13px;vertical-align:top}"
    "th{background:#eee}th:nth-last-child(-n+2),td:nth-last-child(-n+2){background:#fff8e0}"
    "img{max-width:100%}"
)


def _table(rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...]) -> str:
    return table(
        [h for _, h in columns], [[escape(r.get(k, "n/a")) for k, _ in columns] for r in rows]
    )


CLAIM_COLUMNS = (
    ("statement", "claim"),
    ("source", "source"),
    ("published", "published"),
    ("budget", "budget"),
    ("ours", "ours"),
    ("verdict", "verdict"),
    ("why", "why"),
)


def render_html(summary: dict[str, Any], plot_files: dict[str, Path]) -> str:
    """The report page: context, the table, definitions, MNIST rows, plots and every run."""
    parts = [
        "<h1>rnnguard long-range benchmark</h1>",
        "<ul>"
        + "".join(f"<li>{escape(line[2:])}</li>" for line in context_lines(summary))
        + "</ul>",
    ]
    if summary.get("claims"):
        parts.append("<h2>Published claims</h2>")
        parts += [f"<p>note: {escape(n)}</p>" for n in summary.get("claim_notes", [])]
        parts.append(_table(summary["claims"], CLAIM_COLUMNS))
        parts.append(f"<p>{escape(CLAIM_DEFINITIONS)}</p>")
    if summary["rows"]:
        parts.append(_table(summary["rows"], COLUMNS))
        if text := reading(summary):
            parts.append(f"<p><b>Reading.</b> {escape(text)}</p>")
        parts.append(f"<p>{escape(DEFINITIONS)}</p>")
    if summary.get("single_rows"):
        parts.append(
            "<h2>Sequential / permuted MNIST</h2>" + _table(summary["single_rows"], SINGLE_COLUMNS)
        )
    for title, path in plot_files.items():
        parts.append(f"<h2>{escape(title)}</h2>" + image(path, title))
    if summary.get("run_rows"):
        parts.append(
            "<h2>Every run behind the table</h2>" + _table(summary["run_rows"], RUN_COLUMNS)
        )
    return page("rnnguard benchmark", "".join(parts), _CSS)
