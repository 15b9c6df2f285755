"""What a search leaves behind: the best recipe as YAML, a trials table, plots and a Markdown report."""

from __future__ import annotations

import csv
import io
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnguard.tune.study import DIVERGED_ATTR, FAIL_REASON_ATTR, PRUNED_REASON_ATTR, count_trials
from rnnguard.utils.io import atomic_write_text

# Parameters shown in the table, in this order, when a trial has them.
TABLE_PARAMS = ("layer", "clip", "lr", "warmup_fraction", "weight_decay", "layer_norm")
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "intermediate_values": "plot_intermediate_values",
}


@dataclass
class SearchReport:
    """Files written by :func:`write_report` and the table that was printed."""

    out: Path
    best_recipe: Path | None = None
    """``best.yaml`` (None when no trial completed or trials carry no recipe)."""
    best_value: float | None = None
    best_trial: int | None = None
    trials_csv: Path | None = None
    markdown: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    skipped_plots: dict[str, str] = field(default_factory=dict)
    """Plots that could not be drawn, with the reason (e.g. too few completed trials)."""
    table: str = ""


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _reason(t: Any) -> str:
    return str(t.user_attrs.get(PRUNED_REASON_ATTR) or t.system_attrs.get(FAIL_REASON_ATTR) or "")


def _visible(study: Any) -> list[Any]:
    # Surplus tickets cancelled by racing workers never ran: they are bookkeeping, not trials.
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.system_attrs.get(FAIL_REASON_ATTR) != "surplus"
    ]


def ranked_trials(study: Any) -> list[Any]:
    """Completed trials, best first."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    maximize = study.direction == StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: (-t.value if maximize else t.value, t.number))


def top_trials_table(study: Any, top: int = 10, metric: str = "value") -> str:
    """A plain-text table of the ``top`` completed trials and a line of counts by state."""

    c = count_trials(study)
    counts = {"complete": c.complete, "pruned": c.pruned, "running": c.running,
              "waiting": c.waiting, "failed": c.failed}  # fmt: skip
    ranked = ranked_trials(study)[:top]
    params = [p for p in TABLE_PARAMS if any(p in t.params for t in ranked)]
    header = ["rank", "trial", metric, *params, "secs"]
    rows = [
        [
            str(i + 1),
            str(t.number),
            _fmt(t.value),
            *(_fmt(t.params.get(p)) for p in params),
            _fmt(t.duration.total_seconds() if t.duration else None),
        ]
        for i, t in enumerate(ranked)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    diverged = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(DIVERGED_ATTR))
    if diverged:
        counts[f"pruned ({diverged} diverged)"] = counts.pop("pruned")
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    lines.append(f"{sum(counts.values())} trials: {summary or 'none'}")
    return "\n".join(lines)


def _write_csv(study: Any, path: Path) -> None:
    trials = _visible(study)
    names = sorted({p for t in trials for p in t.params})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", "value", "seconds", "reason", *names])
    for t in trials:
        secs = t.duration.total_seconds() if t.duration else ""
        w.writerow(
            [t.number, t.state.name, "" if t.value is None else t.value, secs, _reason(t)]
            + [t.params.get(n, "") for n in names]
        )
    atomic_write_text(path, buf.getvalue())


def _plots(study: Any, out: Path, report: SearchReport) -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; do not touch a backend the caller already chose
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    for name, fn_name in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks these plots experimental
                ax = getattr(ovm, fn_name)(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            path = out / f"{name}.png"
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            report.plots[name] = path
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
            # e.g. importances need two completed trials with varying parameters
            report.skipped_plots[name] = (
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            plt.close("all")


def best_recipe(study: Any, name: str, description: str = "") -> Any | None:
    """The best completed trial's recipe (``None`` if none completed or it carries none)."""
    from rnnguard.train.recipes import Recipe

    ranked = ranked_trials(study)
    if not ranked or "recipe" not in ranked[0].user_attrs:
        return None
    data = dict(ranked[0].user_attrs["recipe"])
    data.update(name=name, description=description)
    return Recipe.from_dict(data)


def write_report(
    study: Any,
    out: str | Path,
    *,
    recipe_name: str = "tuned",
    metric: str = "value",
    title: str = "",
    top: int = 10,
    plots: bool = True,
    markdown: bool = True,
) -> SearchReport:
    """Write ``best.yaml``, ``trials.csv``, plots and ``report.md`` to ``out``.

    ``plots=False`` / ``markdown=False`` skip the plots / ``report.md``; the recipe and the
    trials table are always written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = SearchReport(out=out)
    ranked = ranked_trials(study)
    if ranked:
        report.best_value, report.best_trial = float(ranked[0].value), ranked[0].number
        desc = (
            f"best of study {study.study_name!r}: trial {ranked[0].number}, "
            f"{metric}={ranked[0].value:.6g}"
        )
        recipe = best_recipe(study, recipe_name, desc)
        if recipe is not None:
            report.best_recipe = out / "best.yaml"
            recipe.to_yaml(report.best_recipe)
    report.trials_csv = out / "trials.csv"
    _write_csv(study, report.trials_csv)
    if plots:
        _plots(study, out, report)
    report.table = top_trials_table(study, top, metric)
    if not markdown:
        return report

    md = [f"# {title or 'Search ' + study.study_name}", ""]
    if report.best_trial is not None:
        md.append(f"Best: trial {report.best_trial}, {metric} = {report.best_value:.6g}.")
        if report.best_recipe is not None:
            md.append(
                "Its recipe is `best.yaml`: `rnnguard train --recipe-file best.yaml` runs it."
            )
    else:
        md.append("No trial has completed yet.")
    md += ["", "## Top trials", "", "```", report.table, "```", ""]
    # A reaper may have tagged a trial that then finished after all: only list unfinished ones.
    pruned = [t for t in _visible(study) if t.state.name != "COMPLETE" and _reason(t)]
    if pruned:
        md += ["## Pruned and failed trials", ""]
        md += [f"- trial {t.number} ({t.state.name.lower()}): {_reason(t)}" for t in pruned]
        md.append("")
    for name, path in report.plots.items():
        md += [f"## {name.replace('_', ' ').capitalize()}", "", f"![{name}]({path.name})", ""]
    for name, why in report.skipped_plots.items():
        md.append(f"- {name.replace('_', ' ')}: not drawn ({why})")
    report.markdown = out / "report.md"
    atomic_write_text(report.markdown, "\n".join(md).rstrip() + "\n")
    return report
