"""GradientGuard and the horizon monitor as callbacks for a ``lightning`` Trainer.

``GuardCallback`` gives Lightning's automatic optimisation the guard's semantics: the logged norm is
the true pre-clip norm (under ``precision="16-mixed"`` Lightning unscales before the callback
runs), a step with a non-finite gradient leaves weights and optimiser state untouched and does not
advance step-interval learning-rate schedulers, gradients are clipped by norm, value, AutoClip or
AGC, and explosions are counted per epoch. ``HorizonCallback`` measures the input gradient horizon
on a fixed batch every N steps. Both log through the Trainer's loggers.

Example:
    >>> import lightning as L  # doctest: +SKIP
    >>> from rnnguard.integrations.lightning import GuardCallback, HorizonCallback
    >>> trainer = L.Trainer(callbacks=[GuardCallback(mode="norm", max_norm=1.0),
    ...                                HorizonCallback(every=100)])  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from rnnguard.errors import ConfigError, require_extra

require_extra("lightning", "lightning")

import lightning.pytorch as pl  # noqa: E402  (after the check that names the extra)

from rnnguard.diagnose.horizon import input_horizon  # noqa: E402
from rnnguard.diagnose.monitor import horizon_record  # noqa: E402
from rnnguard.diagnose.usermodel import prepare  # noqa: E402
from rnnguard.train.guard import GradientGuard, GuardReport  # noqa: E402
from rnnguard.train.model_call import ForwardArgs, Select  # noqa: E402
from rnnguard.utils.checks import fraction, integer  # noqa: E402

__all__ = ["GuardCallback", "HorizonCallback"]


class GuardCallback(pl.Callback):
    """Measure, clip and skip non-finite optimiser steps of a Lightning Trainer with a GradientGuard.

    Args:
        guard: the :class:`~rnnguard.train.guard.GradientGuard` to use; or leave it out and pass
            its arguments (``mode="norm"``, ``max_norm=1.0``, ``mode="agc"``, ...) as keywords.
        prefix: prefix of the logged metric names.
        log_every_step: log every optimiser step (otherwise only steps that clipped, skipped or
            exploded, plus the running counts).

    Logged per optimiser step: ``grad_norm`` (true, pre-clip), ``grad_norm_clipped``, ``clipped``,
    ``skipped``, ``exploded``, the cumulative ``explosions``, ``skipped_steps`` and ``overflows``,
    and ``loss_scale`` under a GradScaler. A skipped step sets every gradient to ``None`` before the
    optimiser runs, so the optimiser leaves those parameters and its state alone (under a GradScaler
    the scaler also skips it and lowers its scale). Lightning still counts it in ``global_step``;
    step-interval schedulers are held back for it. Do not also set ``Trainer(gradient_clip_val=)``.
    Under manual optimisation the optimiser step is guarded the same way, but the schedulers are
    yours to step: skip them when ``last_report.skipped``.
    """

    def __init__(
        self,
        guard: GradientGuard | None = None,
        *,
        prefix: str = "guard/",
        log_every_step: bool = True,
        **guard_kwargs: Any,
    ) -> None:
        if guard is not None and guard_kwargs:
            raise ConfigError(
                "pass either guard= or GradientGuard keywords, not both "
                f"(got guard and {sorted(guard_kwargs)})"
            )
        if guard is not None and not isinstance(guard, GradientGuard):
            raise TypeError(f"guard must be a GradientGuard, got {type(guard).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.guard = guard if guard is not None else GradientGuard(**guard_kwargs)
        self.prefix = prefix
        self.log_every_step = bool(log_every_step)
        self.last_report: GuardReport | None = None
        self.held_scheduler_steps = 0
        """Step-interval scheduler updates held back because their step was skipped."""
        self._skipped_this_batch = False
        self._patched: tuple[pl.LightningModule, Any] | None = None

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse Lightning's own clipping and hold schedulers back on skipped steps."""
        if stage != "fit":
            return
        if trainer.gradient_clip_val:
            raise ConfigError(
                "GuardCallback clips the gradients itself: leave Trainer(gradient_clip_val=...) "
                "unset and give the guard its mode and threshold instead"
            )
        self._hold_schedulers(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._patched is not None:
            module, original = self._patched
            if original is None:
                module.__dict__.pop("lr_scheduler_step", None)
            else:
                module.lr_scheduler_step = original  # type: ignore[method-assign]
            self._patched = None

    def _hold_schedulers(self, pl_module: pl.LightningModule) -> None:
        # Lightning steps schedulers through this module hook; wrapping the instance keeps any
        # override the user wrote, and lets a skipped step leave step-interval schedules alone.
        if self._patched is not None:
            return
        own = pl_module.__dict__.get("lr_scheduler_step")
        bound = pl_module.lr_scheduler_step

        def lr_scheduler_step(scheduler: Any, metric: Any) -> None:
            if self._skipped_this_batch and _interval(pl_module, scheduler) == "step":
                self.held_scheduler_steps += 1
                return
            bound(scheduler, metric)

        pl_module.lr_scheduler_step = lr_scheduler_step  # type: ignore[method-assign]
        self._patched = (pl_module, own)

    # ------------------------------------------------------------------ per step
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        while self.guard.stats.epoch < trainer.current_epoch:
            self.guard.new_epoch()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._skipped_this_batch = False

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        """Gradients are complete (and unscaled under AMP) here: measure, clip, or veto the step."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        scaler = _scaler(trainer)
        scale = float(scaler.get_scale()) if scaler is not None else None
        report = self.guard.clip(params, loss_scale=scale)
        self.last_report = report
        if report.skipped:
            self._skipped_this_batch = True
            for p in params:
                p.grad = None  # optimisers skip parameters without a gradient: no update at all
        if self.log_every_step or report.skipped or report.clipped or report.exploded:
            s = self.guard.stats
            values = {
                "grad_norm": report.norm_before,
                "grad_norm_clipped": report.norm_after,
                "clipped": float(report.clipped),
                "skipped": float(report.skipped),
                "exploded": float(report.exploded),
                "explosions": float(s.exploded),
                "skipped_steps": float(s.skipped),
                "overflows": float(s.overflows),
            }
            pl_module.log_dict(
                {self.prefix + k: v for k, v in values.items()}, on_step=True, on_epoch=False
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        scaler = _scaler(trainer)
        if scaler is not None and self.last_report is not None:
            # after scaler.update(): the scale the next step will use
            self.last_report.loss_scale = float(scaler.get_scale())
            pl_module.log(self.prefix + "loss_scale", self.last_report.loss_scale, on_step=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"guard": self.guard.state_dict(), "held_scheduler_steps": self.held_scheduler_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.guard.load_state_dict(state_dict["guard"])
        self.held_scheduler_steps = int(state_dict.get("held_scheduler_steps", 0))


def _scaler(trainer: pl.Trainer) -> Any:
    """The enabled GradScaler of the Trainer's precision plugin, if any."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def _interval(pl_module: pl.LightningModule, scheduler: Any) -> str | None:
    for config in pl_module.trainer.lr_scheduler_configs:
        if config.scheduler is scheduler:
            return str(config.interval)
    return None


class HorizonCallback(pl.Callback):
    """Every ``every`` optimiser steps, measure the input gradient horizon on one fixed batch.

    Args:
        every: measure when ``trainer.global_step`` is a multiple of this.
        batch: the probe inputs, (batch, time, features) floats or (batch, time) token ids; by
            default the inputs of the first training batch (see ``inputs``), kept all run long.
        inputs: picks the model inputs out of a training batch (default: the batch itself if it
            is a tensor, else its first item or its ``"x"``/``"input"``/``"inputs"`` entry).
        model: what to measure (default: the LightningModule itself); a module or any callable.
        forward_args, forward_kwargs, batch_first, output: how the model is called and read, as
            for :func:`rnnguard.diagnose.doctor` (e.g. a hidden state for a time-first language
            model; the layout is inferred when ``batch_first`` is None).
        threshold: normalised gradient below which the past counts as forgotten.
        prefix: prefix of the logged metric names.

    Logged: ``horizon`` (``inf`` when the gradient reaches the start of the sequence),
    ``max_distance``, ``rate_per_step``, ``far_ratio``, ``peak_ratio``. ``records`` keeps every
    measurement with its step; ``seconds`` the time spent measuring. Rank zero measures.
    """

    def __init__(
        self,
        every: int = 100,
        *,
        batch: torch.Tensor | None = None,
        inputs: Callable[[Any], torch.Tensor] | None = None,
        model: torch.nn.Module | Callable[..., Any] | None = None,
        forward_args: ForwardArgs = (),
        forward_kwargs: dict[str, Any] | None = None,
        batch_first: bool | None = None,
        output: Select = None,
        threshold: float = 1e-3,
        prefix: str = "horizon/",
    ) -> None:
        self.every = integer("every", every, minimum=1)
        if batch is not None and not isinstance(batch, torch.Tensor):
            raise TypeError(f"batch must be a tensor or None, got {type(batch).__name__}")
        if inputs is not None and not callable(inputs):
            raise TypeError(f"inputs must be callable or None, got {type(inputs).__name__}")
        if model is not None and not callable(model):
            raise TypeError(
                f"model must be a torch.nn.Module, a callable or None, got {type(model).__name__}"
            )
        self.threshold = fraction("threshold", threshold)
        self.prefix = prefix
        self.inputs = inputs
        self.model = model
        self._call: dict[str, Any] = {
            "args": forward_args,
            "kwargs": forward_kwargs,
            "batch_first": batch_first,
            "output": output,
        }
        self._view: tuple[torch.nn.Module, torch.Tensor] | None = None
        self.records: list[dict[str, Any]] = []
        self.seconds = 0.0
        self._x = batch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._x is None:
            x = self.inputs(batch) if self.inputs is not None else _inputs_of(batch)
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"HorizonCallback: the training batch's inputs must be a tensor, got "
                    f"{type(x).__name__}; pass inputs= to pick them out"
                )
            self._x = x.detach().clone()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # global_step counts optimiser steps, so accumulation measures once per update
        step = trainer.global_step
        if step == 0 or step % self.every or not trainer.is_global_zero or self._x is None:
            return
        if self.records and self.records[-1]["step"] == step:
            return  # accumulating: the same optimiser step seen again
        self.measure(trainer, pl_module)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Measure now on the probe batch and log the result."""
        if self._x is None:
            raise ConfigError("HorizonCallback has no probe batch yet: pass batch= or train first")
        start = time.perf_counter()
        if self._view is None:  # found once: how to call the model, and its input layout
            target = self.model if self.model is not None else pl_module
            self._view = prepare(target, self._x.to(pl_module.device), **self._call)
        view, x = self._view
        hz = input_horizon(view, x, threshold=self.threshold)
        self.seconds += time.perf_counter() - start
        rec = horizon_record(hz)
        self.records.append({"step": trainer.global_step, **rec})
        values = {
            "horizon": math.inf if rec["horizon"] is None else float(rec["horizon"]),
            "max_distance": float(rec["max_distance"]),
            **{
                k: (math.nan if rec[k] is None else float(rec[k]))
                for k in ("rate_per_step", "far_ratio", "peak_ratio")
            },
        }
        pl_module.log_dict(
            {self.prefix + k: v for k, v in values.items()},
            on_step=True,
            on_epoch=False,
            rank_zero_only=True,
        )
        return rec


def _inputs_of(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs"):
            if key in batch:
                return batch[key]
        raise ConfigError(
            f"HorizonCallback: cannot tell the inputs in a batch with keys {sorted(batch)}; "
            "pass inputs= to pick them out"
        )
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch
