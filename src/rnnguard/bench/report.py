"""The benchmark report folder: ``report.md``, ``report.html``, ``summary.json`` and ``plots/``.

The pieces live by concern: the table computed from the stored runs (:mod:`.summary`), its
Markdown (:mod:`.report_markdown`) and HTML (:mod:`.report_html`) renderings, and the plots
(:mod:`.report_plots`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rnnguard.bench.report_html import render_html
from rnnguard.bench.report_markdown import render_markdown, table_text
from rnnguard.bench.report_plots import write_plots
from rnnguard.bench.summary import COLUMNS, summarize
from rnnguard.utils.io import atomic_write_json, atomic_write_text

__all__ = ["COLUMNS", "render_report", "summarize", "table_text"]


def render_report(
    out: str | os.PathLike[str], extra: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``summary.json`` and ``plots/`` in ``out``."""
    folder = Path(out)
    summary = summarize(folder, extra)
    plot_files = write_plots(summary, folder / "plots")
    atomic_write_text(folder / "report.md",
                      render_markdown(summary, {t: p.name for t, p in plot_files.items()}))  # fmt: skip
    atomic_write_text(folder / "report.html", render_html(summary, plot_files))
    atomic_write_json(
        folder / "summary.json", {k: v for k, v in summary.items() if k != "length_runs"}
    )
    return summary
