"""The benchmark's table, computed from a result store: one row per recipe, every run behind it.

Every number in the "measured" columns comes from the runs stored in the output folder; the
guide's claims and the published references sit in separate, labelled columns.
"""

from __future__ import annotations

import math
import os
from typing import Any

from rnnguard.bench.claims import claims_table
from rnnguard.bench.effective import LengthSearch
from rnnguard.bench.plan import plan_from_manifest
from rnnguard.bench.references import GUIDE_CLAIMS, MNIST_PUBLISHED, PUBLISHED
from rnnguard.bench.store import ResultStore
from rnnguard.errors import ConfigError

__all__ = ["COLUMNS", "RUN_COLUMNS", "SINGLE_COLUMNS", "summarize"]

#: Table columns: (key, header). Measured columns first, then the labelled non-measured ones.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("recipe", "recipe"),
    ("eff_adding", "effective length, adding"),
    ("eff_copy", "effective length, copy"),
    ("steps_to_solve", "steps to solve (adding, at eff. length)"),
    ("bpc_valid", "BPC valid"),
    ("bpc_test", "BPC test"),
    ("explosions", "explosions / epoch"),
    ("blowups", "loss/state blow-ups (steps) / rollbacks / diverged runs"),
    ("horizon", "gradient horizon init → end"),
    ("params", "parameters (adding / LM)"),
    ("wall", "cost: runs, steps, training time (s)"),
    ("guide", "guide's claim (eff. length / BPC / explosions) — not measured"),
    ("published", "published references (other sizes and budgets) — not measured"),
)


SINGLE_COLUMNS = (
    ("recipe", "recipe"),
    ("task", "task"),
    ("accuracy", "test accuracy (%)"),
    ("steps", "steps"),
    ("wall", "wall time (s)"),
    ("published", "published accuracy (%) — not measured"),
)


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


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_seconds(seconds: float) -> str:
    """Seconds to one decimal, or to the millisecond below one second.

    Tiny runs on a fast machine finish in hundredths of a second; one decimal
    would print a measured time as 0.0.
    """
    return _fmt(seconds, 1 if seconds >= 1.0 else 3)


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
    claims = []
    for job in plan.claim_jobs:
        complete &= _feed(job, runs)
        verdict = job.verdict()
        claims.append({
            "key": job.claim.key, "statement": job.claim.statement, "source": job.claim.source,
            "published": job.claim.published_value, "budget": job.claim.budget(),
            "ours": verdict.measured if verdict else "pending",
            "verdict": verdict.outcome if verdict else "pending",
            "why": verdict.why if verdict else "",
        })  # fmt: skip
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
        "claims": claims,
        "claims_table": claims_table(plan.claim_jobs) if plan.claim_jobs else "",
        "claim_notes": list(plan.claim_notes),
        "run_rows": _run_rows(plan, runs),
        "unreadable": {str(p): why for p, why in store.unreadable.items()},
    }


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
                "wall": _fmt_seconds(float(r["wall_time"])) if "wall_time" in r else "n/a",
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
            "steps": str(spec.steps), "wall": _fmt_seconds(float(r.get("wall_time", 0.0))) if r else "n/a",
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


def _memory_text(metrics: dict[str, Any]) -> str:
    """ "; memory at d=2/8/32: 0.96/0.79/0.62" from synthlang's ``memory_d{d}`` metrics."""
    items = sorted(
        (int(k.removeprefix("memory_d")), v) for k, v in metrics.items() if k.startswith("memory_d")
    )
    if not items:
        return ""
    dists = "/".join(str(d) for d, _ in items)
    return f"; memory at d={dists}: " + "/".join(f"{v:.2f}" for _, v in items)


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
        elif m.get("floor_bpc") is not None:
            row["bpc_valid"] += f" (floor {m['floor_bpc']:.3f}{_memory_text(m)})"
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
    # Counted apart from the (clipped) gradient explosions: these are what rolls a run back.
    row["blowups"] = (
        f"{sum(int(r.get('blowups', 0)) for r in ok_runs)} / "
        f"{sum(int(r.get('rollbacks', 0)) for r in ok_runs)} / "
        f"{sum(bool(r.get('diverged')) for r in ok_runs)} of {len(ok_runs)}"
        if ok_runs
        else "n/a"
    )
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
    steps = sum(int(r.get("steps") or 0) for r in recipe_runs)
    seconds = sum(float(r.get("wall_time", 0.0)) for r in recipe_runs)
    row["wall"] = f"{len(recipe_runs)} runs, {steps} steps, {_fmt_seconds(seconds)}"
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
