"""The benchmark report as Markdown (``report.md``) and the table the CLI prints."""

from __future__ import annotations

from typing import Any

from rnnguard.bench.reading import reading
from rnnguard.bench.references import TRIVIAL
from rnnguard.bench.summary import COLUMNS, RUN_COLUMNS, SINGLE_COLUMNS

__all__ = ["DEFINITIONS", "context_lines", "markdown_table", "render_markdown", "table_text"]


def markdown_table(
    rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...] = COLUMNS
) -> str:
    def cell(v: str) -> str:
        return v.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k, "n/a")) for k, _ in columns) + " |")
    return "\n".join(lines)


def context_lines(summary: dict[str, Any]) -> list[str]:
    m = summary["manifest"]
    lines = [
        f"- preset: `{m.get('preset')}` — {m.get('description', '')}",
        f"- command: `{m.get('command', 'n/a')}`",
    ]
    machine = m.get("machine", {})
    if machine:
        desc = ", ".join(f"{k} {v}" for k, v in machine.items())
        lines.append(f"- machine: {desc}")
    if m.get("wall_time") is not None:
        lines.append(f"- total wall time of the last invocation: {m['wall_time']:.1f} s "
                     f"with {m.get('workers', '?')} worker(s)")  # fmt: skip
    grids: dict[str, list[int]] = {}  # a task's whole grid: the union of its recipes' grids
    caps: dict[str, list[str]] = {}
    budgets = {s["task"]: s["template"] for s in m.get("searches", [])}
    for s in m.get("searches", []):
        grids[s["task"]] = sorted({*grids.get(s["task"], []), *s["lengths"]})
    for s in m.get("searches", []):
        if s["lengths"] and s["lengths"][-1] < grids[s["task"]][-1]:
            caps.setdefault(s["task"], []).append(f"{s['recipe']} to T={s['lengths'][-1]}")
    for task, lengths in grids.items():
        t = budgets[task]
        capped = f" ({', '.join(caps[task])})" if task in caps else ""
        lines.append(
            f"- {task}: lengths {lengths}{capped}, {t['steps']} steps × batch {t['batch_size']} per "
            f"length, width {t.get('hidden_size') or 'recipe'}, held-out eval every "
            f"{t['eval_every']} steps ({t['eval_batches']} batches); baseline: "
            f"{TRIVIAL.get(task, 'n/a')}"
        )
    if summary["lm_task"]:
        spec = (m.get("lm") or {}).get("specs", [{}])[0]
        lines.append(
            f"- language model: {summary['lm_task']}, BPTT {spec.get('length')}, {spec.get('steps')} "
            f"steps × batch {spec.get('batch_size')}, width {spec.get('hidden_size') or 'recipe'}"
        )
        first = next(iter(summary["lm_results"].values()), None)
        if first and first.get("baseline") is not None:
            lines.append(f"- language-model baseline (unigram, valid): {first['baseline']:.3f} BPC")
    if summary["lm_note"]:
        lines.append(f"- note: {summary['lm_note']}")
    for note in summary.get("single_notes", []):
        lines.append(f"- note: {note}")
    for path, why in summary.get("unreadable", {}).items():
        lines.append(f"- note: unreadable run file `{path}` ({why}) left out; a rerun trains it")
    if not summary["complete"]:
        lines.append(
            "- **incomplete**: some runs have not finished; rerun the same command to resume."
        )
    return lines


DEFINITIONS = """\
Definitions. *Effective length*: the largest grid length solved with every shorter length solved
(search seed), confirmed by a second seed (if that fails, the next shorter solved length is tried).
*Solved*: the held-out metric passes the task's threshold within the per-length budget.
*Explosions / epoch*: GradientGuard's count (pre-clip gradient norm above 10× its running median, or
non-finite) per epoch of the language-model run. *Gradient horizon*: the distance k at which
||dL_T/dx_{T-k}|| falls below 1e-3 of its value at k = 0 (">T" = never within the sequence), before
and after training, on the longest adding run. *BPC*: mean cross-entropy over all predicted
characters (end-of-line tokens included) divided by ln 2; "worse than unigram" marks a model that
predicts worse than character frequencies alone (it did not learn, or its state blew up). On the
built-in *synthlang* language the *floor* is its exact entropy rate (no model can go below it;
BPC − floor is what the model missed) and *memory at d* is the share of a key's bits the model still
held when the key had to be recalled d characters later (1 = all, 0 = none).
The last two columns are not our measurements: the guide's numbers have no stated setup, and the
published ones use other model sizes and far larger budgets."""


CLAIM_DEFINITIONS = """\
Verdicts. *Reproduced*: our run shows what the source claims. *Not reproduced*: it shows the
opposite (a claimed failure solved, a claimed solution missed on at least the source's budget).
*Inconclusive at this budget*: neither, typically because our budget or size is far below the
source's (each row states both). The guide's numbers have no stated setup: its BPC cells can only
be reproduced or left undecided at our size."""


def claims_brief(claims: list[dict[str, Any]]) -> str:
    """The claims in four columns: what is claimed, the published value, ours, the verdict."""
    rows = ["| claim | published | ours | verdict |", "|---|---|---|---|"]
    rows += [
        f"| {c['statement']} | {c['published']} | {c['ours']} | **{c['verdict']}** |"
        for c in claims
    ]
    return "\n".join(rows)


def render_markdown(summary: dict[str, Any], plots: dict[str, str]) -> str:
    lines = ["# rnnguard long-range benchmark", "", *context_lines(summary), ""]
    if summary.get("claims_table"):
        lines += ["## Published claims", "", *[f"- note: {n}" for n in summary["claim_notes"]],
                  "", claims_brief(summary["claims"]), "", CLAIM_DEFINITIONS, "",
                  "### Each claim with its source, settings and budgets", "",
                  summary["claims_table"], ""]  # fmt: skip
    if summary["rows"]:
        lines += [markdown_table(summary["rows"]), ""]
        if text := reading(summary):
            lines += [f"**Reading.** {text}", ""]
        lines += [DEFINITIONS, ""]
    if summary.get("single_rows"):
        lines += ["## Sequential / permuted MNIST", "",
                  markdown_table(summary["single_rows"], SINGLE_COLUMNS), ""]  # fmt: skip
    for title, name in plots.items():
        lines += [f"## {title}", "", f"![{title}](plots/{name})", ""]
    if summary.get("run_rows"):
        lines += ["## Every run behind the table", "",
                  markdown_table(summary["run_rows"], RUN_COLUMNS), ""]  # fmt: skip
    return "\n".join(lines)


def table_text(summary: dict[str, Any]) -> str:
    """The table as markdown (what the CLI prints): the claims' verdicts, the recipes' table."""
    parts = [summary["claims_table"]] if summary.get("claims_table") else []
    if summary["rows"] or not parts:
        parts.append(markdown_table(summary["rows"]))
    if text := reading(summary):
        parts.append(f"Reading: {text}")
    return "\n\n".join(parts)
