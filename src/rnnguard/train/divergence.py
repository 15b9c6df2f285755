"""Divergence judged on evidence: non-finite values, or a loss or state blow-up.

A clipped, finite gradient spike is what clipping is for: the guard counts it as an explosion, but
it is no reason to roll back. What is: a non-finite loss, gradient or recurrent state; a training
loss far above both the task's trivial loss and the level the run has established (the median of
its recent healthy losses); or a recurrent state whose size jumps far above its recent values.

A run that starts far above the trivial loss and comes down is learning, not diverging, and its
way down is rarely smooth: a ReLU IndRNN at T=50 went from 290 to 1.1 in nine steps, back up to 27
for five steps, then on to solve the task. Judged against its single lowest loss, that swing was a
blow-up and the rollbacks that followed ended the run; against the median of its recent losses,
which still remembers where it came from, it is noise.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import torch

__all__ = ["BLOWUP_KINDS", "CAUSES", "DivergenceMonitor", "state_rms"]

#: Verdicts of :meth:`DivergenceMonitor.judge`, mildest first (the order ranks are merged in).
BLOWUP_KINDS = ("state", "loss", "nonfinite")
#: Each verdict in words.
CAUSES = {
    "nonfinite": "non-finite values",
    "loss": "a loss blow-up",
    "state": "a recurrent-state blow-up",
}


def state_rms(state: Any) -> float | None:
    """Root mean square over every floating tensor of a (nested) recurrent state (None if none)."""
    total, count = 0.0, 0
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.is_floating_point() and item.numel():
                total += float(item.detach().float().pow(2).sum())
                count += item.numel()
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return math.sqrt(total / count) if count else None


class DivergenceMonitor:
    """Judges each training step: healthy (None) or a blow-up (``"nonfinite"``, ``"loss"``, ``"state"``).

    Args:
        trivial_loss: the loss of an untrained model (``task.trivial_loss``), or None when the
            task does not say; then only the recent losses are the reference.
        loss_factor: a loss above this many times the trivial loss is a blow-up when it is
            also ``rise_factor`` times the median of the last ``window`` healthy losses: a run
            that climbs far above both what an untrained model scores and its own recent level.
            A run that starts high and comes down is learning, and is left alone.
        rise_factor: see ``loss_factor``.
        jump_factor: so is a loss above this many times the median of recent losses, when it is
            also above the trivial loss (a run that had learned and lost it all at once).
        state_factor: a state RMS above this many times the median of recent ones (and above 1,
            the scale of a saturating activation) is a blow-up.
        window: healthy steps remembered for the medians.

    Only healthy steps enter the medians, so a run that keeps blowing up is compared with the
    run before it did, not with its own blown-up values.
    """

    MIN_HISTORY = 5
    """Healthy steps needed before the recent median is trusted."""

    def __init__(
        self,
        trivial_loss: float | None = None,
        *,
        loss_factor: float = 5.0,
        rise_factor: float = 2.0,
        jump_factor: float = 10.0,
        state_factor: float = 10.0,
        window: int = 50,
    ) -> None:
        valid = trivial_loss is not None and math.isfinite(trivial_loss) and trivial_loss > 0
        self.trivial_loss = float(trivial_loss) if valid and trivial_loss is not None else None
        self.loss_factor = loss_factor
        self.rise_factor = rise_factor
        self.jump_factor = jump_factor
        self.state_factor = state_factor
        self.losses: deque[float] = deque(maxlen=window)
        self.states: deque[float] = deque(maxlen=window)

    def loss_limit(self) -> float | None:
        """The loss above which a step is a blow-up (None while there is no reference yet)."""
        trivial = self.trivial_loss
        if not self.losses:
            return None
        level = statistics.median(self.losses)
        limits = []
        if trivial is not None:
            limits.append(max(self.loss_factor * trivial, self.rise_factor * level))
        if len(self.losses) >= self.MIN_HISTORY:
            limits.append(max(self.jump_factor * level, trivial or 0.0))
        return min(limits) if limits else None

    def judge(
        self, loss: float, rms: float | None = None, nonfinite_grad: bool = False
    ) -> str | None:
        """The verdict on one step; a healthy step is remembered for the medians."""
        if (
            nonfinite_grad
            or not math.isfinite(loss)
            or (rms is not None and not math.isfinite(rms))
        ):
            return "nonfinite"
        limit = self.loss_limit()
        if limit is not None and loss > limit:
            return "loss"
        if (
            rms is not None
            and len(self.states) >= self.MIN_HISTORY
            and rms > max(1.0, self.state_factor * statistics.median(self.states))
        ):
            return "state"
        self.losses.append(loss)
        if rms is not None:
            self.states.append(rms)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "states": list(self.states)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses.clear()
        self.losses.extend(float(v) for v in state.get("losses", []))
        self.states.clear()
        self.states.extend(float(v) for v in state.get("states", []))
