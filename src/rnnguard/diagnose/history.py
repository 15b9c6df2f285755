"""Explosion history of a training run, read from the trainer's ``metrics.jsonl``.

Training records carry the gradient norm *before* clipping (``grad_norm``) and the guard's
``skipped`` / ``exploded`` flags; steps flagged bad are always logged, others every few steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnguard.errors import ConfigError, DataError
from rnnguard.utils.io import read_jsonl

__all__ = ["ExplosionHistory", "read_history", "summarize_history"]


@dataclass
class ExplosionHistory:
    """Pre-clip gradient norms and guard events of one run.

    ``steps``/``grad_norm`` hold the logged training records; ``exploded_steps`` and
    ``skipped_steps`` every step the guard flagged; ``blowup_steps`` every step whose loss or
    recurrent state the trainer judged blown up; ``total_steps`` the last step seen.
    """

    steps: np.ndarray
    grad_norm: np.ndarray
    exploded_steps: list[int] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    clipped_fraction: float = 0.0
    total_steps: int = 0
    rollbacks: int = 0
    diverged: bool = False
    blowup_steps: list[int] = field(default_factory=list)

    @property
    def blowups(self) -> int:
        """Steps whose loss or recurrent state blew up (the forward pass, not the gradient)."""
        return len(self.blowup_steps)

    @property
    def explosions(self) -> int:
        """Steps flagged as exploding (pre-clip norm far above the running median, or non-finite)."""
        return len(self.exploded_steps)

    @property
    def explosion_rate(self) -> float:
        """Flagged (exploded or skipped) steps per training step."""
        bad = set(self.exploded_steps) | set(self.skipped_steps)
        return len(bad) / self.total_steps if self.total_steps else 0.0

    def norm_quantiles(self) -> dict[str, float | None]:
        """Median, 99th percentile and maximum of the finite logged pre-clip norms."""
        finite = self.grad_norm[np.isfinite(self.grad_norm)]
        if not finite.size:
            return {"median": None, "p99": None, "max": None}
        return {
            "median": float(np.median(finite)),
            "p99": float(np.percentile(finite, 99)),
            "max": float(finite.max()),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the full curve)."""
        return {
            "total_steps": self.total_steps,
            "logged_steps": len(self.steps),
            "explosions": self.explosions,
            "skipped": len(self.skipped_steps),
            "explosion_rate": self.explosion_rate,
            "clipped_fraction": self.clipped_fraction,
            "blowups": self.blowups,
            "rollbacks": self.rollbacks,
            "diverged": self.diverged,
            "grad_norm": self.norm_quantiles(),
            "exploded_steps": self.exploded_steps[:100],
        }


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def summarize_history(records: Iterable[Mapping[str, Any]]) -> ExplosionHistory:
    """Build an :class:`ExplosionHistory` from trainer records (``FitResult.history`` or JSONL lines)."""
    steps, norms, exploded, skipped, blown = [], [], set(), set(), set()
    clipped = 0
    rollbacks, diverged, last = 0, False, 0
    for rec in records:
        if not isinstance(rec, Mapping):
            raise ConfigError(f"history records must be mappings, got {type(rec).__name__}")
        step = int(rec.get("step", 0) or 0)
        last = max(last, step)
        kind = rec.get("kind")
        if kind == "event":
            rollbacks += rec.get("event") == "rollback"
            diverged |= rec.get("event") == "diverged"
            continue
        if kind != "train":
            continue
        steps.append(step)
        norms.append(_float(rec.get("grad_norm")))
        clipped += bool(rec.get("clipped"))
        if rec.get("exploded"):
            exploded.add(step)
        if rec.get("skipped"):
            skipped.add(step)
        if rec.get("blowup") in ("loss", "state"):
            blown.add(step)
    order = np.argsort(steps, kind="stable")
    return ExplosionHistory(
        steps=np.asarray(steps, dtype=np.int64)[order],
        grad_norm=np.asarray(norms, dtype=np.float64)[order],
        exploded_steps=sorted(exploded),
        skipped_steps=sorted(skipped),
        clipped_fraction=clipped / len(steps) if steps else 0.0,
        total_steps=last,
        rollbacks=rollbacks,
        diverged=diverged,
        blowup_steps=sorted(blown),
    )


def read_history(path: str | os.PathLike[str]) -> ExplosionHistory:
    """Read a run folder (its ``metrics.jsonl``) or a JSONL file written by the trainer."""
    target = Path(path)
    if target.is_dir():
        target = target / "metrics.jsonl"
    if not target.is_file():
        raise DataError(
            f"training log not found: {str(target)!r} (a run folder written by `rnnguard train --out`)"
        )
    records = read_jsonl(target)
    if not any(r.get("kind") == "train" for r in records):
        raise DataError(f"training log {str(target)!r} holds no training records")
    return summarize_history(records)
