"""GradientGuard: one object for the unscale -> measure -> skip non-finite -> clip -> step sequence.

The order matters and is easy to get wrong by hand: clipping must see *unscaled* gradients under
AMP, a step with a non-finite gradient must leave the weights untouched without stalling the loss
scaler, and the learning-rate schedule must not advance on a step that did not happen.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from rnnguard.errors import ConfigError
from rnnguard.utils.checks import number

if TYPE_CHECKING:  # config.py imports CLIP_MODES from here
    from rnnguard.train.config import GuardConfig

CLIP_MODES = ("none", "norm", "value", "auto", "agc")


@dataclass
class GuardReport:
    """What happened in one :meth:`GradientGuard.step`."""

    norm_before: float
    """Total gradient norm of the true (unscaled) gradients, before clipping."""
    norm_after: float
    """Total gradient norm after clipping (equal to ``norm_before`` when nothing was clipped)."""
    clipped: bool
    """Whether clipping changed the gradients."""
    skipped: bool
    """Whether the optimiser step was skipped because a gradient was not finite."""
    exploded: bool
    """Non-finite gradient, or a norm above ``explosion_factor`` x the running median."""
    overflow: bool = False
    """Non-finite under a GradScaler whose scale was still >= ``min_loss_scale``: the scaler
    calibrating (counted apart from explosions)."""
    threshold: float | None = None
    """The clipping threshold used this step (``None`` for modes without one)."""
    loss_scale: float | None = None
    """The GradScaler's scale after its update (``None`` without a scaler)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuardStats:
    """Cumulative and per-epoch counts kept by a :class:`GradientGuard`."""

    steps: int = 0
    """Calls to ``step``."""
    skipped: int = 0
    """Optimiser steps skipped for non-finite gradients."""
    clipped: int = 0
    """Steps whose gradients were changed by clipping."""
    exploded: int = 0
    """Steps counted as gradient explosions (non-finite, or norm > factor x median)."""
    epoch: int = 0
    """Index of the current epoch."""
    explosions_per_epoch: list[int] = field(default_factory=lambda: [0])
    """Explosions counted in each epoch so far (index = epoch)."""
    skipped_per_epoch: list[int] = field(default_factory=lambda: [0])
    """Skipped steps in each epoch so far."""
    overflows: int = 0
    """Non-finite steps attributed to fp16 loss-scale calibration (see ``GuardReport.overflow``)."""
    max_norm_seen: float = 0.0
    """Largest finite pre-clip norm observed."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardStats:
        fields: dict[str, Any] = {
            k: (list(v) if isinstance(v, list) else v) for k, v in data.items()
        }
        return cls(**fields)


class GradientGuard:
    """Wraps ``optimizer.step()`` with unscaling, a non-finite check, clipping and explosion counting.

    Loops that update the weights by hand call :meth:`clip` instead of :meth:`step`.

    Args:
        mode: ``"none"`` (measure only), ``"norm"`` (clip the total norm at ``max_norm``, as
            ``torch.nn.utils.clip_grad_norm_``), ``"value"`` (clamp each element to
            ``[-clip_value, clip_value]``), ``"auto"`` (AutoClip: clip the norm at the
            ``percentile``-th percentile of the history of pre-clip norms) or ``"agc"`` (adaptive
            gradient clipping: each output unit's gradient norm is kept below ``agc_clip`` x the
            norm of its weights).
        max_norm: threshold for ``mode="norm"``.
        clip_value: threshold for ``mode="value"``.
        percentile: percentile of the norm history used by ``mode="auto"``.
        history_size: how many recent finite norms AutoClip and the explosion test remember.
        agc_clip: ratio used by ``mode="agc"``.
        agc_eps: floor on parameter norms for ``mode="agc"`` (so zero-initialised weights can move).
        explosion_factor: a step explodes when its pre-clip norm exceeds this many times the
            running median of earlier norms.
        min_history: explosions by ratio are only counted once this many norms were seen.
        norm_type: p of the p-norm used for the total norm.
        steps_per_epoch: if given, the epoch advances automatically every that many steps;
            otherwise call :meth:`new_epoch`.
        min_loss_scale: under an enabled GradScaler, a non-finite step while the scale is at least
            this is an overflow of the fp16 range (the scaler lowers its scale and retries), not an
            explosion; below it the gradient itself is taken to be non-finite.

    Example:
        >>> guard = GradientGuard(mode="norm", max_norm=1.0)
        >>> report = guard.step(optimizer, scaler=scaler, scheduler=scheduler)  # doctest: +SKIP
        >>> report = guard.clip(model.parameters())  # no optimizer: check report.skipped  # doctest: +SKIP
    """

    def __init__(
        self,
        mode: str = "norm",
        max_norm: float = 1.0,
        *,
        clip_value: float = 1.0,
        percentile: float = 10.0,
        history_size: int = 1000,
        agc_clip: float = 0.01,
        agc_eps: float = 1e-3,
        explosion_factor: float = 10.0,
        min_history: int = 10,
        norm_type: float = 2.0,
        steps_per_epoch: int | None = None,
        min_loss_scale: float = 1.0,
    ) -> None:
        if mode not in CLIP_MODES:
            raise ConfigError(f"mode must be one of {CLIP_MODES}, got {mode!r}")
        for name, value in (
            ("max_norm", max_norm),
            ("clip_value", clip_value),
            ("agc_clip", agc_clip),
            ("agc_eps", agc_eps),
            ("explosion_factor", explosion_factor),
            ("norm_type", norm_type),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        # Checked as a number first: a string would only fail later, inside a comparison.
        if not 0 < number("percentile", percentile) <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
        for name, ivalue in (("history_size", history_size), ("min_history", min_history)):
            if not isinstance(ivalue, int) or ivalue < 1:
                raise ConfigError(f"{name} must be a positive int, got {ivalue!r}")
        if steps_per_epoch is not None and (
            not isinstance(steps_per_epoch, int) or steps_per_epoch < 1
        ):
            raise ConfigError(
                f"steps_per_epoch must be a positive int or None, got {steps_per_epoch!r}"
            )
        self.mode = mode
        self.max_norm = float(max_norm)
        self.clip_value = float(clip_value)
        self.percentile = float(percentile)
        self.history_size = history_size
        self.agc_clip = float(agc_clip)
        self.agc_eps = float(agc_eps)
        self.explosion_factor = float(explosion_factor)
        self.min_history = min_history
        self.norm_type = float(norm_type)
        self.steps_per_epoch = steps_per_epoch
        self.min_loss_scale = float(min_loss_scale)
        self.history: deque[float] = deque(maxlen=history_size)
        self.stats = GuardStats()

    # ------------------------------------------------------------------ public API
    def step(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: Any = None,
        scheduler: Any = None,
    ) -> GuardReport:
        """Unscale, measure, skip if non-finite, clip, step, update the scaler, advance the schedule."""
        scaler_on = scaler is not None and scaler.is_enabled()
        scale_before = float(scaler.get_scale()) if scaler_on else None
        if scaler_on:
            # Clip thresholds refer to true gradients: unscale first (pytorch#40907).
            scaler.unscale_(optimizer)
        report = self.clip(
            [p for g in optimizer.param_groups for p in g["params"]], loss_scale=scale_before
        )
        if not report.skipped:
            if scaler_on:
                scaler.step(optimizer)  # gradients are already unscaled; scaler will not redo it
            else:
                optimizer.step()
        if scaler_on:
            # Always update, so that a non-finite step lowers the scale instead of repeating.
            scaler.update()
            report.loss_scale = float(scaler.get_scale())
        if not report.skipped and scheduler is not None:
            scheduler.step()
        return report

    def clip(
        self,
        parameters: torch.Tensor | Iterable[torch.Tensor] | torch.nn.Module,
        *,
        loss_scale: float | None = None,
    ) -> GuardReport:
        """Measure and clip the gradients of ``parameters`` in place, and count the step; no update.

        For loops that update weights themselves (no optimizer object): apply the update only when
        ``report.skipped`` is False, and advance any schedule only then. The gradients must be the
        true ones: under a GradScaler, unscale them first and pass the scale they were unscaled
        from as ``loss_scale`` (a non-finite gradient at a scale >= ``min_loss_scale`` is then an
        fp16 overflow, not an explosion). :meth:`step` is this plus the optimizer's step.

        Example (a hand-written SGD update):
            >>> report = guard.clip(model.parameters())  # doctest: +SKIP
            >>> if not report.skipped:  # doctest: +SKIP
            ...     for p in model.parameters():
            ...         p.data.add_(p.grad, alpha=-lr)
        """
        params = [p for p in _parameter_list(parameters) if p.grad is not None]
        if loss_scale is not None and (
            isinstance(loss_scale, bool) or not isinstance(loss_scale, (int, float))
        ):
            raise TypeError(f"loss_scale must be a number or None, got {type(loss_scale).__name__}")
        spe = self.steps_per_epoch
        if spe is not None and self.stats.steps > 0 and self.stats.steps % spe == 0:
            self.new_epoch()
        grads = [p.grad for p in params]
        total = self._total_norm_tensor(grads)  # type: ignore[arg-type]
        norm_before = float(total)
        finite = math.isfinite(norm_before)

        overflow = not finite and loss_scale is not None and loss_scale >= self.min_loss_scale
        report = GuardReport(
            norm_before=norm_before,
            norm_after=norm_before,
            clipped=False,
            skipped=not finite,
            exploded=not finite and not overflow,
            overflow=overflow,
        )
        if finite:
            report.exploded = self._is_explosion(norm_before)
            threshold = self._clip(params, total)
            report.threshold = threshold
            if self.mode != "none":
                report.norm_after = self._total_norm(grads)  # type: ignore[arg-type]
                report.clipped = report.norm_after < norm_before * (1 - 1e-6)
            self.history.append(norm_before)
            self.stats.max_norm_seen = max(self.stats.max_norm_seen, norm_before)

        s = self.stats
        s.steps += 1
        s.skipped += int(report.skipped)
        s.skipped_per_epoch[-1] += int(report.skipped)
        s.clipped += int(report.clipped)
        s.overflows += int(report.overflow)
        s.exploded += int(report.exploded)
        s.explosions_per_epoch[-1] += int(report.exploded)
        return report

    def new_epoch(self) -> None:
        """Start counting explosions for a new epoch."""
        self.stats.epoch += 1
        self.stats.explosions_per_epoch.append(0)
        self.stats.skipped_per_epoch.append(0)

    def running_median(self) -> float | None:
        """Median of the remembered finite norms (``None`` before any step)."""
        if not self.history:
            return None
        return float(torch.tensor(list(self.history), dtype=torch.float64).median())

    def state_dict(self) -> dict[str, Any]:
        """Counts and norm history, for checkpoints."""
        return {"stats": self.stats.to_dict(), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = GuardStats.from_dict(state["stats"])
        self.history = deque(state.get("history", []), maxlen=self.history_size)

    # ------------------------------------------------------------------ internals
    def _total_norm(self, grads: Iterable[torch.Tensor]) -> float:
        return float(self._total_norm_tensor(grads))

    def _total_norm_tensor(self, grads: Iterable[torch.Tensor]) -> torch.Tensor:
        """The total norm as ``torch.nn.utils.clip_grad_norm_`` computes it, kept a tensor.

        Same ops in the same order (per-tensor norms, foreach where torch uses it, then the norm of
        their stack), so clipping with it is bit-identical to torch's. Half-precision gradients
        are measured in float32, so their sum of squares cannot overflow.
        """
        low = (torch.float16, torch.bfloat16)
        wide = [g.detach().float() if g.dtype in low else g.detach() for g in grads]
        if not wide:
            return torch.tensor(0.0)
        get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
        if get_total_norm is not None:  # torch >= 2.6
            return get_total_norm(wide, self.norm_type)  # type: ignore[no-any-return]
        norms = [torch.linalg.vector_norm(g, self.norm_type) for g in wide]
        dev = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(dev) for n in norms]), self.norm_type)

    def _is_explosion(self, norm: float) -> bool:
        if len(self.history) < self.min_history:
            return False
        median = self.running_median()
        return median is not None and norm > self.explosion_factor * median

    def _clip(self, params: list[torch.Tensor], total: torch.Tensor) -> float | None:
        """Clip in place; return the norm threshold used (None for value/agc/none)."""
        if self.mode == "none" or not params:
            return None
        if self.mode == "value":
            for p in params:
                p.grad.detach().clamp_(-self.clip_value, self.clip_value)  # type: ignore[union-attr]
            return None
        if self.mode == "agc":
            self._agc(params)
            return None
        if self.mode == "norm":
            threshold = self.max_norm
        else:  # auto: percentile of past norms and this one (AutoClip, Seetharaman et al. 2020)
            values = torch.tensor([*self.history, float(total)], dtype=torch.float64)
            threshold = float(torch.quantile(values, self.percentile / 100.0))
        clip_with_norm = getattr(torch.nn.utils, "clip_grads_with_norm_", None)
        if clip_with_norm is not None:  # torch >= 2.6: torch's own scaling, foreach included
            clip_with_norm(params, threshold, total)
            return threshold
        # torch's coefficient, kept a tensor as torch keeps it: a Python float rounds it
        # differently in the last bit, which a large learning rate turns into another run.
        coef = torch.clamp(threshold / (total + 1e-6), max=1.0)
        for p in params:
            g = p.grad.detach()  # type: ignore[union-attr]
            g.mul_(coef.to(g.device))
        return threshold

    def _agc(self, params: list[torch.Tensor]) -> None:
        for p in params:
            g = p.grad.detach()  # type: ignore[union-attr]
            w = p.detach()
            if w.ndim <= 1:
                w_norm = torch.linalg.vector_norm(w.float())
                g_norm = torch.linalg.vector_norm(g.float())
            else:  # unit-wise: one norm per output row
                dims = tuple(range(1, w.ndim))
                w_norm = torch.linalg.vector_norm(w.float(), dim=dims, keepdim=True)
                g_norm = torch.linalg.vector_norm(g.float(), dim=dims, keepdim=True)
            max_norm = w_norm.clamp(min=self.agc_eps) * self.agc_clip
            scale = torch.where(
                g_norm > max_norm, max_norm / g_norm.clamp(min=1e-6), torch.ones_like(g_norm)
            )
            g.mul_(scale.to(g.dtype))

    @classmethod
    def from_config(cls, config: GuardConfig, **kwargs: Any) -> GradientGuard:
        """The guard a :class:`~rnnguard.train.config.GuardConfig` describes; ``kwargs`` add the
        settings a config does not hold (``steps_per_epoch``, ``history_size``...).

        Example:
            >>> GradientGuard.from_config(GuardConfig(mode="agc", agc_clip=0.02), steps_per_epoch=100)
            GradientGuard(mode='agc', max_norm=1.0, explosion_factor=10.0)
        """
        return cls(**dataclasses.asdict(config), **kwargs)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, max_norm={self.max_norm}, explosion_factor={self.explosion_factor}"

    def __repr__(self) -> str:
        return f"GradientGuard({self.extra_repr()})"


def _parameter_list(parameters: Any) -> list[torch.Tensor]:
    """The tensors of ``parameters``: a module, one tensor, or an iterable of tensors."""
    if isinstance(parameters, torch.nn.Module):
        return list(parameters.parameters())
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            "parameters must be a tensor, an iterable of tensors or a torch.nn.Module, "
            f"got {type(parameters).__name__}"
        )
    out = list(parameters)
    for i, p in enumerate(out):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameters must hold tensors; item {i} is a {type(p).__name__}")
    return out
