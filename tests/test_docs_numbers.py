"""Speed figures in the docs come from recorded runs, and are stated in one place.

docs/speed.md's "Targets" table is the one place the measured speed ratios are stated; every
figure in its "measured" column must appear in a report pasted under "Recorded runs" of the same
file, and no other document states a measured ratio (the README quotes the targets' limits only).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEED = ROOT / "docs" / "speed.md"
NUMBER = re.compile(r"\d+\.\d+")


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_every_target_figure_is_in_a_recorded_run() -> None:
    text = SPEED.read_text(encoding="utf-8")
    reports = "\n".join(re.findall(r"```\n(.*?)```", _section(text, "Recorded runs"), re.S))
    recorded = set(NUMBER.findall(reports))
    table = [line for line in _section(text, "Targets").splitlines() if line.startswith("|")]
    rows = table[2:]  # below the header and its rule
    assert len(rows) >= 8
    figures = [(row, n) for row in rows for n in NUMBER.findall(row.split("|")[2])]
    assert len(figures) >= 20
    missing = [(row.split("|")[1].strip(), n) for row, n in figures if n not in recorded]
    assert missing == [], "figures in the Targets table that no recorded run shows"


def test_measured_ratios_are_stated_only_in_speed_md() -> None:
    limits = {"1.5", "0.33", "1.3", "1.05", "0.2"}  # the targets themselves, not measurements
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if doc == SPEED:
            continue
        ratios = set(re.findall(r"(\d+\.\d+)x\b", doc.read_text(encoding="utf-8")))
        assert ratios <= limits, (doc.name, sorted(ratios - limits))
