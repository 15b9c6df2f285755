"""The README's table of published claims is the recorded reproduce run's, word for word."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "results" / "reproduce" / "report.md"
HEADER = "| claim | published | ours | verdict |"


def _table(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(HEADER)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_readme_claims_table_is_the_recorded_one() -> None:
    recorded = _table(REPORT.read_text(encoding="utf-8"))
    assert len(recorded) >= 2 + 6  # header, rule and the published claims at least
    assert not any("pending" in row for row in recorded), "the recorded run is incomplete"
    assert _table((ROOT / "README.md").read_text(encoding="utf-8")) == recorded
