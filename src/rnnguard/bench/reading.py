"""A plain-words reading of a benchmark table: which recipes reached how far, and whether the
contrasts the guide and the literature describe showed up in this run.

Every sentence is computed from the stored results; where a contrast did not show, it says so.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["reading"]

# Recipes whose structure is the guide's cure for vanishing gradients (gates, IndRNN, linear
# recurrences), against the plain tanh RNN.
_CURED = ("lstm-ln-clip", "gru", "indrnn-relu", "safe-lstm", "lru")


def _names(recipes: list[str]) -> str:
    return ", ".join(f"`{r}`" for r in recipes)


def _lengths(summary: dict[str, Any], task: str) -> dict[str, int]:
    return {
        s["recipe"]: int(s["effective_length"])
        for s in summary.get("searches", [])
        if s.get("task") == task and s.get("complete")
    }


def _capped(summary: dict[str, Any], task: str) -> dict[str, int]:
    """Recipes that solved every length of a grid the preset cut short for them: recipe -> cap."""
    searches = [s for s in summary.get("searches", []) if s.get("task") == task and s.get("grid")]
    longest = max((s["grid"][-1] for s in searches), default=0)
    return {
        s["recipe"]: s["grid"][-1]
        for s in searches
        if s.get("complete") and s["grid"][-1] < longest
        and s.get("effective_length") == s["grid"][-1]
    }  # fmt: skip


def _length_sentence(task: str, eff: dict[str, int], capped: dict[str, int]) -> str:
    best = max(eff.values())
    if best == 0:
        return f"On {task}, no recipe solved even the shortest length of the grid in this budget."
    top = [r for r, n in eff.items() if n == best]
    none = [r for r, n in eff.items() if n == 0]
    text = f"On {task}, {_names(top)} reached the longest length (T={best})"
    if any(r in capped for r in top):
        text = text[:-1] + ", the longest this preset tries it at)"
    others = {r: t for r, t in capped.items() if r not in top}
    if others:
        caps = ", ".join(f"`{r}` T={t}" for r, t in others.items())
        text += f"; solved up to the longest length this preset tries them at: {caps}"
    if none:
        text += f"; {_names(none)} solved no length of the grid"
    return text + "."


def _contrast_sentence(eff: dict[str, int]) -> str | None:
    if "vanilla" not in eff:
        return None
    cured = {r: n for r, n in eff.items() if r in _CURED}
    if not cured:
        return None
    v, best = eff["vanilla"], max(cured.values())
    beaten = [r for r, n in cured.items() if n > v]
    reached = f"reached T={v}" if v else "solved no length of the grid"
    if best > v:
        return (
            f"The tanh RNN (`vanilla`) {reached} where {_names(beaten)} went further: the "
            "vanishing gradient the guide describes, and its structural cures, as the literature "
            "reports them."
        )
    return (
        f"The expected contrast did not show: the tanh RNN (`vanilla`) {reached}, no shorter "
        f"than the gated and IndRNN recipes (best T={best}) at this budget."
    )


def _lm_sentence(summary: dict[str, Any]) -> str | None:
    results = {
        r: res.get("metrics", {})
        for r, res in summary.get("lm_results", {}).items()
        if res.get("status", "ok") == "ok"
    }
    bpc = {r: m["valid_bpc"] for r, m in results.items() if isinstance(m.get("valid_bpc"), float)}
    bpc = {r: v for r, v in bpc.items() if math.isfinite(v)}
    if not bpc:
        return None
    best = min(bpc, key=bpc.__getitem__)
    task = summary.get("lm_task") or "the language model"
    text = f"On {task}, `{best}` reached the lowest BPC ({bpc[best]:.3f})"
    floor = results[best].get("floor_bpc")
    if isinstance(floor, float):
        text += f", {bpc[best] - floor:.3f} above the language's floor of {floor:.3f}"
        far = max(
            (int(k.removeprefix("memory_d")) for k in results[best] if k.startswith("memory_d")),
            default=None,
        )
        if far is not None:
            held = {r: m.get(f"memory_d{far}") for r, m in results.items()}
            held = {r: v for r, v in held.items() if isinstance(v, float)}
            keep = [r for r, v in sorted(held.items(), key=lambda kv: -kv[1]) if v >= 0.5]
            lost = [r for r, v in held.items() if v < 0.1]
            if keep:
                text += f"; at distance {far}, {_names(keep)} still held at least half of each key"
            if lost:
                text += f", {_names(lost)} next to none"
    return text + "."


def reading(summary: dict[str, Any]) -> str:
    """One paragraph saying what the table shows (empty when there is nothing to read yet)."""
    sentences: list[str] = []
    for task in ("adding", "copy"):
        eff = _lengths(summary, task)
        if eff:
            sentences.append(_length_sentence(task, eff, _capped(summary, task)))
            if task == "adding" and (contrast := _contrast_sentence(eff)):
                sentences.append(contrast)
    if lm := _lm_sentence(summary):
        sentences.append(lm)
    return " ".join(sentences)
