"""The benchmark report's plots: effective length, learning curves, BPC vs time, horizons."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def write_plots(summary: dict[str, Any], folder: Path) -> dict[str, Path]:
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
