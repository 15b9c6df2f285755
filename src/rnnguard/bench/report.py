"""Benchmark report: the table (markdown and self-contained HTML) and its plots, from a result store.

Every number in the "measured" columns comes from the runs stored in the output folder; the
guide's claims and the published references sit in separate, labelled columns.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

from rnnguard.bench.effective import LengthSearch
from rnnguard.bench.plan import plan_from_manifest
from rnnguard.bench.references import GUIDE_CLAIMS, MNIST_PUBLISHED, PUBLISHED, TRIVIAL
from rnnguard.bench.store import ResultStore
from rnnguard.errors import ConfigError
from rnnguard.utils.io import atomic_write_json, atomic_write_text

__all__ = ["COLUMNS", "render_report", "summarize"]

#: Table columns: (key, header). Measured columns first, then the labelled non-measured ones.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("recipe", "recipe"),
    ("eff_adding", "effective length, adding"),
    ("eff_copy", "effective length, copy"),
    ("steps_to_solve", "steps to solve (adding, at eff. length)"),
    ("bpc_valid", "BPC valid"),
    ("bpc_test", "BPC test"),
    ("explosions", "explosions / epoch"),
    ("horizon", "gradient horizon init → end"),
    ("params", "parameters (adding / LM)"),
    ("wall", "training time, all runs (s)"),
    ("guide", "guide's claim (eff. length / BPC / explosions) — not measured"),
    ("published", "published references (other sizes and budgets) — not measured"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.{digits}f}"
    return str(value)


def _feed(job: Any, runs: dict[str, dict[str, Any]]) -> bool:
    """Feed stored results into a job; True when it completed."""
    while True:
        pending = job.pending()
        if not pending:
            return True
        fed = False
        for spec in pending:
            result = runs.get(spec.key())
            if result is not None:
                job.feed(spec, result)
                fed = True
        if not fed:
            return False


def _horizon_text(result: dict[str, Any] | None) -> str:
    if not result:
        return "n/a"

    def one(h: dict[str, Any] | None) -> str:
        if not h or "error" in h:
            return "n/a"
        return str(h["horizon"]) if h.get("horizon") is not None else f">{h.get('max_distance')}"

    init, end = result.get("horizon_init"), result.get("horizon_end")
    if not init and not end:
        return "n/a"
    probe = next((h["max_distance"] + 1 for h in (init, end) if h and "max_distance" in h), None)
    trained = result["spec"]["length"]
    where = f"T={probe}" + (f", trained at T={trained}" if probe and probe != trained else "")
    return f"{one(init)} → {one(end)} ({where})"


def summarize(
    out: str | os.PathLike[str], extra: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Rebuild the benchmark's jobs from ``out``'s manifest and stored runs and compute the table.

    ``extra`` maps run keys to results not in the store (e.g. runs that raised during this invocation).
    """
    store = ResultStore(out, warn=lambda _msg: None)  # unreadable runs go into the summary
    manifest = store.manifest()
    if not manifest:
        raise ConfigError(
            f"out must be a folder written by `rnnguard bench`, got {str(out)!r} without bench.json"
        )
    plan = plan_from_manifest(manifest)
    runs = {r["key"]: r for r in store.all() if "key" in r}
    for key, result in (extra or {}).items():
        runs.setdefault(key, result)
    searches: dict[tuple[str, str], dict[str, Any]] = {}
    complete = True
    for search in plan.searches:
        finished = _feed(search, runs)
        complete &= finished
        summary = search.summary()
        summary["complete"] = finished
        searches[(search.recipe, search.task)] = summary
    lm_results: dict[str, dict[str, Any]] = {}
    if plan.lm_runs is not None:
        complete &= _feed(plan.lm_runs, runs)
        for spec in plan.lm_runs.specs:
            if spec.key() in plan.lm_runs.results:
                lm_results[spec.recipe] = {
                    **plan.lm_runs.results[spec.key()],
                    "spec": spec.to_dict(),
                }
    single_rows = []
    if plan.single_runs is not None:
        complete &= _feed(plan.single_runs, runs)
        single_rows = _single_rows(plan.single_runs)
    length_runs = _length_runs(plan.searches)
    rows = [_row(r, plan, searches, lm_results, runs, length_runs) for r in plan.recipes]
    return {
        "manifest": manifest,
        "complete": complete,
        "rows": rows,
        "searches": list(searches.values()),
        "lm_task": plan.lm_task,
        "lm_note": plan.lm_note,
        "lm_results": lm_results,
        "length_runs": length_runs,
        "single_rows": single_rows,
        "single_notes": list(plan.single_notes),
        "run_rows": _run_rows(plan, runs),
        "unreadable": {str(p): why for p, why in store.unreadable.items()},
    }


RUN_COLUMNS = (
    ("recipe", "recipe"),
    ("task", "task"),
    ("length", "T"),
    ("seed", "seed"),
    ("outcome", "outcome"),
    ("metric", "final held-out metric"),
    ("steps", "steps (budget)"),
    ("wall", "training time (s)"),
    ("key", "run file"),
)


def _run_rows(plan: Any, runs: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Every run the plan used, in plan order: the evidence behind each cell of the table."""
    rows = []
    for job in plan.jobs:
        results = job.results.items() if isinstance(job, LengthSearch) else None
        specs = (
            [job.make_spec(n, seed) for (n, seed), _ in sorted(results)]
            if results is not None
            else [sp for sp in job.specs if sp.key() in job.results]
        )
        for spec in specs:
            r = runs.get(spec.key(), {})
            if r.get("status") == "error":
                outcome = f"failed: {r.get('error')}"
            elif spec.kind == "length":
                outcome = "solved" if r.get("solved") else "not solved"
            else:
                outcome = "done"
            name = r.get("metric_name", "metric")
            rows.append({
                "recipe": spec.recipe, "task": spec.task, "length": str(spec.length),
                "seed": str(spec.seed), "outcome": outcome,
                "metric": f"{name} {_fmt(r.get('metric'), 4)}" if "metric" in r else "n/a",
                "steps": f"{r.get('steps', 'n/a')} ({spec.steps})",
                "wall": _fmt(float(r["wall_time"]), 1) if "wall_time" in r else "n/a",
                "key": f"runs/{spec.key()}.json" if r.get("status", "ok") == "ok" else "not stored",
            })  # fmt: skip
    return rows


def _single_rows(job: Any) -> list[dict[str, str]]:
    """One row per (recipe, task) of the once-per-recipe runs (MNIST)."""
    rows = []
    for spec in job.specs:
        r = job.results.get(spec.key())
        if r is None:
            value = "incomplete"
        elif r.get("status") == "error":
            value = f"failed: {r.get('error')}"
        else:
            value = _fmt(100.0 * float(r.get("metrics", {}).get("accuracy", float("nan"))), 1)
        pub = MNIST_PUBLISHED.get(spec.recipe, {}).get(spec.task, "–")
        rows.append({
            "recipe": spec.recipe, "task": spec.task, "accuracy": value,
            "steps": str(spec.steps), "wall": _fmt(float(r.get("wall_time", 0.0)), 1) if r else "n/a",
            "published": pub,
        })  # fmt: skip
    return rows


def _length_runs(searches: list[LengthSearch]) -> dict[str, list[dict[str, Any]]]:
    """Per recipe, the seed-0 runs of every search (for curves and horizons), shortest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in searches:
        for (length, seed), r in sorted(s.results.items()):
            if seed == s.seeds[0] and r.get("status", "ok") == "ok":
                out.setdefault(s.recipe, []).append({**r, "task": s.task, "length": length})
    return out


def _row(
    recipe: str,
    plan: Any,
    searches: dict[tuple[str, str], dict[str, Any]],
    lm: dict[str, dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    length_runs: dict[str, list[dict[str, Any]]],
) -> dict[str, str]:
    row: dict[str, str] = {"recipe": recipe}
    recipe_runs = [r for r in runs.values() if r.get("spec", {}).get("recipe") == recipe]
    for task in ("adding", "copy"):
        s = searches.get((recipe, task))
        if s is None:
            row[f"eff_{task}"] = "not run"
            continue
        if not s["complete"]:
            row[f"eff_{task}"] = "incomplete"
            continue
        eff = s["effective_length"]
        errors = [p for p in s["points"] if p.get("error")]
        if eff == 0:
            text = f"<{s['grid'][0]}"
        elif eff == s["grid"][-1]:
            text = f"≥{eff} (grid max)"
        else:
            text = str(eff)
        if s["candidate_length"] != eff:
            text += f" (seed 0: {s['candidate_length'] or '<' + str(s['grid'][0])})"
        if errors:
            text += f" [{len(errors)} run(s) failed: {errors[0]['error']}]"
        row[f"eff_{task}"] = text
    adding = searches.get((recipe, "adding"))
    if adding and adding["complete"]:
        if adding["steps_to_solve"] is not None:
            row["steps_to_solve"] = f"{adding['steps_to_solve']} (T={adding['effective_length']})"
        elif adding["candidate_length"]:
            row["steps_to_solve"] = "no length confirmed by both seeds"
        else:
            row["steps_to_solve"] = "never solved"
    else:
        row["steps_to_solve"] = "not run" if adding is None else "incomplete"
    lm_run = lm.get(recipe)
    if plan.lm_task is None:
        row["bpc_valid"] = row["bpc_test"] = "no data"
    elif lm_run is None:
        row["bpc_valid"] = row["bpc_test"] = "incomplete"
    elif lm_run.get("status") == "error":
        row["bpc_valid"] = row["bpc_test"] = f"failed: {lm_run.get('error')}"
    else:
        m = lm_run.get("metrics", {})
        row["bpc_valid"] = _fmt(m.get("valid_bpc"))
        row["bpc_test"] = _fmt(m.get("test_bpc"))
        base = lm_run.get("baseline")
        valid = m.get("valid_bpc")
        if base is not None and valid is not None and not valid <= base:
            # A model worse than counting characters did not learn: say so beside the number
            # (a residual RNN whose carried state grows without bound ends up here).
            row["bpc_valid"] += f" (worse than unigram {base:.3f})"
    ok_runs = [r for r in recipe_runs if r.get("status", "ok") == "ok"]
    if lm_run is not None and lm_run.get("status", "ok") == "ok":
        row["explosions"] = _fmt(float(lm_run.get("explosions_per_epoch", float("nan"))), 2)
    elif ok_runs:
        # No language-model run: the rate over the synthetic runs, marked as such.
        total = sum(r.get("explosions_total", 0) for r in ok_runs)
        epochs = sum(
            max(1, -(-int(r.get("steps", 0)) // int(r["spec"].get("steps_per_epoch", 100))))
            for r in ok_runs
        )
        row["explosions"] = f"{total / max(1, epochs):.2f} (synthetic runs)"
    else:
        row["explosions"] = "n/a"
    # Horizon on the longest adding run trained with the search seed.
    seed_runs = [r for r in length_runs.get(recipe, []) if r["task"] == "adding"]
    longest = (
        seed_runs[-1] if seed_runs else next((r for r in ok_runs if r.get("horizon_init")), None)
    )
    row["horizon"] = _horizon_text(longest)
    add_params = next(
        (r.get("num_params") for r in ok_runs if r.get("spec", {}).get("task") == "adding"), None
    )
    lm_params = lm_run.get("num_params") if lm_run and lm_run.get("status", "ok") == "ok" else None
    row["params"] = f"{_fmt(add_params)} / {_fmt(lm_params) if plan.lm_task else 'no LM run'}"
    row["wall"] = f"{sum(float(r.get('wall_time', 0.0)) for r in recipe_runs):.1f}"
    claim = GUIDE_CLAIMS.get(recipe)
    row["guide"] = (
        f"{claim['effective_length']:g} / {claim['bpc']:g} / {claim['explosions_per_epoch']:g}"
        if claim
        else "–"
    )
    pub = PUBLISHED.get(recipe)
    row["published"] = (
        f"PTB-char test BPC: {pub['ptb_bpc']}; adding: {pub['adding']}" if pub else "–"
    )
    return row


# ---------------------------------------------------------------------- rendering
def _markdown_table(
    rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...] = COLUMNS
) -> str:
    def cell(v: str) -> str:
        return v.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(k, "n/a")) for k, _ in columns) + " |")
    return "\n".join(lines)


def _context_lines(summary: dict[str, Any]) -> list[str]:
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
    grids = {s["task"]: s["lengths"] for s in m.get("searches", [])}
    budgets = {s["task"]: s["template"] for s in m.get("searches", [])}
    for task, lengths in grids.items():
        t = budgets[task]
        lines.append(
            f"- {task}: lengths {lengths}, {t['steps']} steps × batch {t['batch_size']} per length, "
            f"width {t.get('hidden_size') or 'recipe'}, held-out eval every {t['eval_every']} steps "
            f"({t['eval_batches']} batches); baseline: {TRIVIAL.get(task, 'n/a')}"
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


_DEFINITIONS = """\
Definitions. *Effective length*: the largest grid length solved with every shorter length solved
(search seed), confirmed by a second seed (if that fails, the next shorter solved length is tried).
*Solved*: the held-out metric passes the task's threshold within the per-length budget.
*Explosions / epoch*: GradientGuard's count (pre-clip gradient norm above 10× its running median, or
non-finite) per epoch of the language-model run. *Gradient horizon*: the distance k at which
||dL_T/dx_{T-k}|| falls below 1e-3 of its value at k = 0 (">T" = never within the sequence), before
and after training, on the longest adding run. *BPC*: mean cross-entropy over all predicted
characters (end-of-line tokens included) divided by ln 2; "worse than unigram" marks a model that
predicts worse than character frequencies alone (it did not learn, or its state blew up).
The last two columns are not our measurements: the guide's numbers have no stated setup, and the
published ones use other model sizes and far larger budgets."""


SINGLE_COLUMNS = (
    ("recipe", "recipe"),
    ("task", "task"),
    ("accuracy", "test accuracy (%)"),
    ("steps", "steps"),
    ("wall", "wall time (s)"),
    ("published", "published accuracy (%) — not measured"),
)


def render_markdown(summary: dict[str, Any], plots: dict[str, str]) -> str:
    lines = ["# rnnguard long-range benchmark", "", *_context_lines(summary), "",
             _markdown_table(summary["rows"]), "", _DEFINITIONS, ""]  # fmt: skip
    if summary.get("single_rows"):
        lines += ["## Sequential / permuted MNIST", "",
                  _markdown_table(summary["single_rows"], SINGLE_COLUMNS), ""]  # fmt: skip
    for title, name in plots.items():
        lines += [f"## {title}", "", f"![{title}](plots/{name})", ""]
    if summary.get("run_rows"):
        lines += ["## Every run behind the table", "",
                  _markdown_table(summary["run_rows"], RUN_COLUMNS), ""]  # fmt: skip
    return "\n".join(lines)


def _html_table(
    title: str, rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...]
) -> str:
    if not rows:
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for _, h in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(r.get(k, 'n/a'))}</td>" for k, _ in columns) + "</tr>"
        for r in rows
    )
    return f"<h2>{esc(title)}</h2><table><tr>{head}</tr>{body}</table>"


def render_html(summary: dict[str, Any], plot_files: dict[str, Path]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for _, h in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(r.get(k, 'n/a'))}</td>" for k, _ in COLUMNS) + "</tr>"
        for r in summary["rows"]
    )
    context = "".join(f"<li>{esc(line[2:])}</li>" for line in _context_lines(summary))
    single = ""
    if summary.get("single_rows"):
        shead = "".join(f"<th>{esc(h)}</th>" for _, h in SINGLE_COLUMNS)
        sbody = "".join(
            "<tr>"
            + "".join(f"<td>{esc(r.get(k, 'n/a'))}</td>" for k, _ in SINGLE_COLUMNS)
            + "</tr>"
            for r in summary["single_rows"]
        )
        single = f"<h2>Sequential / permuted MNIST</h2><table><tr>{shead}</tr>{sbody}</table>"
    figures = ""
    for title, path in plot_files.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures += (
            f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{data}'>"
        )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 6px;font-size:13px;vertical-align:top}"
        "th{background:#eee}th:nth-last-child(-n+2),td:nth-last-child(-n+2){background:#fff8e0}"
        "img{max-width:100%}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rnnguard benchmark</title>"
        f"<style>{style}</style></head><body><h1>rnnguard long-range benchmark</h1>"
        f"<ul>{context}</ul><table><tr>{head}</tr>{body}</table>"
        f"<p>{esc(_DEFINITIONS)}</p>{single}{figures}{_html_table('Every run behind the table', summary.get('run_rows', []), RUN_COLUMNS)}</body></html>\n"
    )


# ---------------------------------------------------------------------- plots
def _plots(summary: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write the PNGs; returns title -> path (empty when matplotlib is missing)."""
    from rnnguard.errors import MissingExtraError, require_extra

    try:
        require_extra("matplotlib", "plot")
    except MissingExtraError:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(fig: Any, name: str, title: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out[title] = path

    # 1. effective-length bars
    searches = [s for s in summary["searches"] if s.get("complete")]
    if searches:
        tasks = sorted({s["task"] for s in searches})
        recipes = list(dict.fromkeys(s["recipe"] for s in searches))
        fig, ax = plt.subplots(figsize=(max(6, len(recipes) * 0.9), 3.8))
        width = 0.8 / len(tasks)
        for i, task in enumerate(tasks):
            vals = [
                next((s["effective_length"] for s in searches
                      if s["recipe"] == r and s["task"] == task), 0)
                for r in recipes
            ]  # fmt: skip
            ax.bar([j + i * width for j in range(len(recipes))], [max(v, 0.8) for v in vals],
                   width, label=task)  # fmt: skip
        ax.set_xticks([j + width * (len(tasks) - 1) / 2 for j in range(len(recipes))])
        ax.set_xticklabels(recipes, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("effective length (bars at 0.8 = none)")
        ax.legend()
        save(fig, "effective_length.png", "Effective length")
    # 2. learning curves of the longest adding run per recipe
    length_runs = summary["length_runs"]
    if length_runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for recipe, rs in length_runs.items():
            adding = [r for r in rs if r["task"] == "adding" and r.get("curve")]
            if adding:
                r = adding[-1]
                xs = [p[0] for p in r["curve"]]
                ys = [max(p[2], 1e-6) for p in r["curve"]]
                ax.plot(xs, ys, label=f"{recipe} (T={r['length']})")
        ax.axhline(1 / 6, color="grey", ls="--", lw=1, label="baseline 1/6")
        ax.axhline(0.01, color="green", ls=":", lw=1, label="solved 0.01")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training MSE (adding)")
        ax.legend(fontsize=7)
        save(fig, "learning_curves.png", "Learning curves (longest adding run per recipe)")
    # 3. BPC vs wall time
    lm = {k: v for k, v in summary["lm_results"].items() if v.get("status", "ok") == "ok"}
    if lm:
        fig, ax = plt.subplots(figsize=(7, 4))
        for recipe, r in lm.items():
            line = ax.plot([p[1] for p in r.get("curve", [])],
                           [p[2] / math.log(2) for p in r.get("curve", [])], label=recipe)  # fmt: skip
            valid = r.get("metrics", {}).get("valid_bpc")
            if valid is not None and r.get("curve"):
                ax.plot([r["curve"][-1][1]], [valid], "o", color=line[0].get_color())
        ax.set_yscale("log")  # a diverging run must not flatten every other curve
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("training BPC (line), valid BPC (dot)")
        ax.legend(fontsize=7)
        save(fig, "bpc_wall_time.png", f"BPC vs wall time ({summary['lm_task']})")
    # 4. horizon curves
    curves = []
    for recipe, rs in length_runs.items():
        adding = [r for r in rs if r["task"] == "adding"]
        if adding and adding[-1].get("horizon_init") and "curve" in adding[-1]["horizon_init"]:
            curves.append((recipe, adding[-1]))
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for recipe, r in curves:
            for ax, key in zip(axes, ("horizon_init", "horizon_end")):
                h = r.get(key) or {}
                if "curve" in h:
                    ax.plot([p[0] for p in h["curve"]], [max(p[1], 1e-12) for p in h["curve"]],
                            label=f"{recipe} (trained at T={r['length']})")  # fmt: skip
        for ax, title in zip(axes, ("at initialisation", "after training")):
            ax.set_yscale("log")
            ax.axhline(1e-3, color="grey", ls="--", lw=1)
            ax.set_title(title)
            ax.set_xlabel("distance k")
        axes[0].set_ylabel("||dL_T/dx_{T-k}|| / ||dL_T/dx_T||")
        axes[1].legend(fontsize=7)
        save(fig, "horizons.png", "Gradient horizon curves (adding)")
    return out


def render_report(
    out: str | os.PathLike[str], extra: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``summary.json`` and ``plots/`` in ``out``."""
    folder = Path(out)
    summary = summarize(folder, extra)
    plot_files = _plots(summary, folder / "plots")
    atomic_write_text(folder / "report.md",
                      render_markdown(summary, {t: p.name for t, p in plot_files.items()}))  # fmt: skip
    atomic_write_text(folder / "report.html", render_html(summary, plot_files))
    atomic_write_json(
        folder / "summary.json", {k: v for k, v in summary.items() if k != "length_runs"}
    )
    return summary


def table_text(summary: dict[str, Any]) -> str:
    """The table as markdown (what the CLI prints)."""
    return _markdown_table(summary["rows"])
