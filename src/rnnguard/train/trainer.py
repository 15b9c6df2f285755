"""``fit``: guarded training with evaluation, atomic checkpoints, exact resume, rollback and DDP.

The loop itself is :class:`Trainer`; the pieces it uses live beside it: ``state`` (result,
callback context, progress), ``checkpoint`` (files and RNG states), ``resume``, ``evaluation``,
``model_call`` (calling a model and splitting its output) and ``device``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnguard.train import distributed
from rnnguard.train.callbacks import (
    Callback,
    MetricsWriter,
    ProgressBar,
    TensorBoardWriter,
    tensorboard_available,
)
from rnnguard.train.checkpoint import (
    checkpoint_file,
    checkpoint_paths,
    get_rng_state,
    remove_stale_temporaries,
    seed_all,
)
from rnnguard.train.config import TrainConfig
from rnnguard.train.device import (
    autocast,
    detach_state,
    host_copy,
    resolve_amp,
    resolve_device,
    to_device,
)
from rnnguard.train.divergence import BLOWUP_KINDS, CAUSES, DivergenceMonitor, state_rms
from rnnguard.train.evaluation import evaluate, output_size
from rnnguard.train.guard import GradientGuard
from rnnguard.train.model_call import ModelCall, accepts_state
from rnnguard.train.recipes import Recipe, get_recipe
from rnnguard.train.resume import find_checkpoint, restore
from rnnguard.train.run_config import describe_run, write_run_file
from rnnguard.train.state import FitResult, Progress, TrainContext
from rnnguard.utils.cpu import flush_denormals
from rnnguard.utils.io import atomic_torch_save, atomic_write_json
from rnnguard.utils.memory import check_batch_fits

__all__ = ["Trainer", "fit"]

logger = logging.getLogger(__name__)

RANK_SEED_STRIDE = 7919


def fit(
    model_or_recipe: nn.Module | Recipe | str,
    task: Any,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    recipe: Recipe | None = None,
) -> FitResult:
    """Train a model (or a recipe's model) on a task under a :class:`TrainConfig`.

    With a ``nn.Module`` the optimiser, schedule and guard settings come from ``recipe`` (default:
    ``Recipe()``: AdamW, warmup+cosine, clip 1). The module maps ``x`` either to its outputs
    ``(B, T, output_size)``, like a plain PyTorch model, or to ``(outputs, state)`` like
    :class:`~rnnguard.models.SequenceModel`; anything else is a TypeError. On a stateful task
    the state is carried across batches when ``forward`` takes it back (``model(x, state)``).
    Under ``torchrun`` the model is wrapped in DistributedDataParallel; rank 0 writes logs and
    checkpoints. The process group stays up for further calls;
    :func:`rnnguard.train.distributed.shutdown` ends it.

    Resuming (``config.resume``) continues exactly; optimiser or schedule settings that the recipe
    changes, and a changed ``steps`` budget, take effect from the resumed position.

    Example:
        >>> from rnnguard.tasks import create_task
        >>> result = fit("lstm", create_task("adding", length=20), TrainConfig(steps=50))  # doctest: +SKIP
        >>> result.metrics["mse"]  # doctest: +SKIP
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_task(task)
    for cb in callbacks:
        if not isinstance(cb, Callback) and not any(
            hasattr(cb, h) for h in ("on_train_start", "on_step_end", "on_eval_end", "on_train_end")
        ):
            raise TypeError(f"callbacks must be Callback objects, got {type(cb).__name__}")
    want_cuda = config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available()
    )
    dist_info = distributed.setup(want_cuda)
    return Trainer(model_or_recipe, task, config, list(callbacks), recipe, dist_info).run()


def _check_task(task: Any) -> None:
    missing = [a for a in ("spec", "batch", "loss", "metric", "is_solved") if not hasattr(task, a)]
    if missing:
        raise TypeError(
            f"task must follow the Task protocol, got {type(task).__name__} missing {missing}"
        )


def _build_model(
    model_or_recipe: nn.Module | Recipe | str, recipe: Recipe | None, task: Any
) -> tuple[nn.Module, Recipe]:
    """The model to train and the recipe that says how."""
    if isinstance(model_or_recipe, str):
        model_or_recipe = get_recipe(model_or_recipe)
    if isinstance(model_or_recipe, Recipe):
        return model_or_recipe.build_model(
            task.spec, length=getattr(task, "length", None)
        ), model_or_recipe
    if isinstance(model_or_recipe, nn.Module):
        return model_or_recipe, recipe if recipe is not None else Recipe(name="custom")
    raise TypeError(
        "model_or_recipe must be an nn.Module, a Recipe or a recipe name, got "
        f"{type(model_or_recipe).__name__}"
    )


class Trainer:
    """One training run: built from its inputs (resumed if asked), then :meth:`run` once."""

    def __init__(
        self,
        model_or_recipe: nn.Module | Recipe | str,
        task: Any,
        config: TrainConfig,
        user_callbacks: list[Callback],
        recipe: Recipe | None,
        dist_info: distributed.DistInfo,
    ) -> None:
        self.task, self.config, self.dist = task, config, dist_info
        self.device = device = resolve_device(
            config.device, dist_info.local_rank, dist_info.world_size
        )
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.out = out = Path(config.out) if config.out else None
        if out is not None and dist_info.is_main:
            remove_stale_temporaries(out)

        if isinstance(model_or_recipe, (Recipe, str)):  # an impossible size: one line, no swapping
            r = get_recipe(model_or_recipe) if isinstance(model_or_recipe, str) else model_or_recipe
            check_batch_fits(config.batch_size, task, r.hidden_size, r.num_layers)
        # Same seed on every rank: DDP also broadcasts rank 0's weights.
        seed_all(config.seed)
        self.model, self.recipe = model, recipe = _build_model(model_or_recipe, recipe, task)
        run = describe_run(recipe, config, task, model) if out is not None else None
        ckpt = find_checkpoint(config, out, run)
        if out is not None and run is not None and dist_info.is_main:
            # Before any step: a run killed before its first checkpoint resumes as itself.
            write_run_file(out, run)
        model.to(device)
        self.amp = resolve_amp(config.amp or recipe.amp, device)
        self.optimizer = recipe.optimizer.build(model)
        self.scheduler = recipe.schedule.build(self.optimizer, max(1, config.steps))
        self.guard = GradientGuard.from_config(recipe.guard, steps_per_epoch=config.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(self.amp == "fp16"))
        self.train_gen = torch.Generator().manual_seed(
            config.seed * 1_000_033 + 1 + dist_info.rank * RANK_SEED_STRIDE
        )
        if dist_info.enabled and callable(getattr(task, "set_shard", None)):
            # Tasks that read a data stream (not a generator) split it so ranks see different data.
            task.set_shard(dist_info.rank, dist_info.world_size)

        step, history, self.carry, self.progress = 0, [], None, Progress()
        if ckpt is not None:
            restored = restore(
                ckpt,
                model=model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                guard=self.guard,
                recipe=recipe,
                config=config,
                train_gen=self.train_gen,
                task=task,
                device=device,
                dist_info=dist_info,
                out=out,
            )
            step, history = restored.step, restored.history
            self.carry, self.progress = restored.carry, restored.progress

        wrapped: nn.Module = model
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.forward = ModelCall(wrapped, output_size(task), takes_state=accepts_state(model))

        # Writers on rank 0 only, user callbacks on every rank.
        builtin: list[Callback] = []
        self.writer: MetricsWriter | None = None
        if dist_info.is_main:
            if out is not None:
                self.writer = MetricsWriter(out)
                # A fresh start drops lines from an earlier attempt; a resume those after its checkpoint.
                self.writer.truncate_after(step if ckpt is not None else -1)
                builtin.append(self.writer)
                use_tb = config.tensorboard
                if use_tb or (use_tb is None and tensorboard_available()):
                    builtin.append(TensorBoardWriter(out))
            builtin.append(ProgressBar(config.progress))
        self.callbacks = builtin + user_callbacks
        self.ctx = TrainContext(
            model=model,
            task=task,
            config=config,
            recipe=recipe,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            guard=self.guard,
            scaler=self.scaler,
            device=device,
            dist=dist_info,
            out=out,
            step=step,
            history=history,
        )
        self.stateful = bool(getattr(task, "stateful", False))
        self.monitor = DivergenceMonitor(getattr(task, "trivial_loss", None))
        self.monitor.load_state_dict(self.progress.monitor)
        self.t0 = time.time()

    # ------------------------------------------------------------------ the loop
    def run(self) -> FitResult:
        """Train until the budget is spent, the task is solved (if asked) or the run diverged."""
        ctx, config, progress = self.ctx, self.config, self.progress
        self.t0 = time.time()
        task = self.task
        # A callback may draw a probe batch from the task here (HorizonMonitor does); a task that
        # reads a stream (text) must not notice, or a resumed run would read other windows.
        stream_state = (
            copy.deepcopy(task.state_dict())
            if callable(getattr(task, "state_dict", None))
            else None
        )
        for cb in self.callbacks:
            cb.on_train_start(ctx)
        if stream_state is not None and callable(getattr(task, "load_state_dict", None)):
            task.load_state_dict(stream_state)
        if progress.good is None:
            progress.good = self._snapshot()
        if (progress.solved and config.stop_when_solved) or progress.diverged:
            ctx.should_stop = True  # a finished run stays finished

        while ctx.step < config.steps and not ctx.should_stop:
            verdict = self._train_step()
            if verdict is not None and progress.bad_streak >= config.divergence_patience:
                self._on_divergence(verdict)
            at_end = ctx.step >= config.steps
            if (config.eval_every and ctx.step % config.eval_every == 0) or at_end:
                self._evaluate()
            self._flush_extra()
            if self.dist.enabled and (at_end or ctx.step % max(1, config.eval_every or 1) == 0):
                ctx.should_stop = bool(distributed.broadcast_object(ctx.should_stop, self.dist))
            stopping = ctx.should_stop or ctx.step >= config.steps
            if self.out is not None and (
                stopping or (config.checkpoint_every and ctx.step % config.checkpoint_every == 0)
            ):
                self._save_checkpoint()

        if progress.last_eval_step != ctx.step:  # e.g. steps=0 or stopped between evaluations
            progress.last_metrics = self._run_eval()
            self._publish_eval(progress.last_metrics)
            self._flush_extra()
        return self._finish()

    def _train_step(self) -> str | None:
        """One guarded step, logged and handed to the callbacks; returns its blow-up verdict."""
        ctx, config, progress = self.ctx, self.config, self.progress
        self.model.train()
        x, y = self.task.batch(config.batch_size, self.train_gen)
        x, y = to_device(x, self.device), to_device(y, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        flush = config.flush_denormals and self.device.type == "cpu"
        with flush_denormals(flush):
            with autocast(self.device, self.amp):
                output, new_state = self.forward(x, self.carry)
                loss = self.task.loss(output, y)
            if self.stateful:
                self.carry = detach_state(
                    new_state
                )  # truncated BPTT: keep the state, cut the graph
            self.scaler.scale(loss).backward()
            report = self.guard.step(self.optimizer, scaler=self.scaler, scheduler=self.scheduler)
        ctx.step += 1
        loss_value = float(loss.detach())
        # fp16 loss-scale overflows are the scaler calibrating, not divergence; a clipped, finite
        # gradient spike is counted by the guard but is no evidence of divergence either.
        verdict = self.monitor.judge(
            loss_value,
            state_rms(new_state),
            nonfinite_grad=report.skipped and not report.overflow,
        )
        if self.dist.enabled:  # every rank must roll back (or not) together
            verdict = distributed.worst_verdict(verdict, BLOWUP_KINDS, self.dist, self.device)
        bad = verdict is not None
        progress.bad_streak = progress.bad_streak + 1 if bad else 0
        progress.blowups += verdict in ("loss", "state")
        record: dict[str, Any] = {
            "kind": "train",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "loss": loss_value,
            "grad_norm": report.norm_before,
            "grad_norm_clipped": report.norm_after,
            "lr": self.optimizer.param_groups[0]["lr"],
            "clipped": report.clipped,
            "skipped": report.skipped,
            "overflow": report.overflow,
            "exploded": report.exploded,
            "explosions": self.guard.stats.exploded,
            "blowup": verdict,
            "blowups": progress.blowups,
            "loss_scale": report.loss_scale,
            "time": round(self._wall(), 3),
        }
        record["logged"] = bad or ctx.step % config.log_every == 0 or ctx.step == config.steps
        if record["logged"]:
            ctx.history.append(record)
        for cb in self.callbacks:
            cb.on_step_end(ctx, record)
        return verdict

    def _on_divergence(self, verdict: str) -> None:
        """Roll back to the last good weights with a lower rate, or give up.

        Giving up needs ``max_rollbacks`` rollbacks in a row without the held-out metric
        improving in between: a run that recovers and keeps learning is never declared diverged.
        """
        ctx, config, progress = self.ctx, self.config, self.progress
        progress.bad_streak = 0
        event: dict[str, Any] = {
            "kind": "event",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "event": "rollback",
            "cause": verdict,
        }
        if progress.stalled_rollbacks >= config.max_rollbacks:
            progress.diverged = True
            event["event"] = "diverged"
            ctx.should_stop = True
        else:
            assert progress.good is not None
            self.model.load_state_dict(progress.good["model"])
            self.optimizer.load_state_dict(progress.good["optimizer"])
            # What the monitor knew then: the restored weights are judged against their own
            # losses, not those of the abandoned trajectory (from the initial weights, those
            # were lower, and every step after the rollback would look like a blow-up).
            if "monitor" in progress.good:  # absent in checkpoints of older versions
                self.monitor.load_state_dict(progress.good["monitor"])
            progress.lr_scale *= config.lr_backoff
            self.scheduler.scale_base_lr(config.lr_backoff)
            self.carry = None
            progress.rollbacks += 1
            progress.stalled_rollbacks += 1
            event["lr_scale"] = progress.lr_scale
        event["rollbacks"] = progress.rollbacks
        ctx.history.append(event)
        ctx.extra_records.append(event)
        logger.warning(
            "step %d: %d consecutive steps with %s: %s",
            ctx.step,
            config.divergence_patience,
            CAUSES[verdict],
            f"giving up (diverged) after {progress.stalled_rollbacks} rollbacks without progress"
            if progress.diverged
            else f"rolled back to the last good weights, learning rate x{progress.lr_scale:g}",
        )

    def _evaluate(self) -> None:
        """Evaluate, note a first solve, and keep the weights as rollback target if healthy."""
        ctx, progress = self.ctx, self.progress
        progress.last_metrics = self._run_eval()
        progress.last_eval_step = ctx.step
        value = progress.last_metrics.get(ctx.metric_name, float("nan"))
        if not progress.solved and self.task.is_solved(value):
            progress.solved_step = ctx.step
        self._publish_eval(progress.last_metrics, time=round(self._wall(), 3))
        if progress.bad_streak == 0 and math.isfinite(value):
            progress.good = self._snapshot()  # the weights just evaluated are a safe place
            better = bool(getattr(self.task, "higher_is_better", False))
            best = progress.best_metric
            if best is None or (value > best if better else value < best):
                progress.best_metric = value
                progress.stalled_rollbacks = 0  # progress: earlier rollbacks were worth it
        if progress.solved and self.config.stop_when_solved:
            ctx.should_stop = True

    # ------------------------------------------------------------------ helpers
    def _wall(self) -> float:
        return self.progress.wall_before + time.time() - self.t0

    def _run_eval(self) -> dict[str, float]:
        config = self.config
        return evaluate(
            self.model,
            self.task,
            batches=config.eval_batches,
            batch_size=config.eval_batch_size or config.batch_size,
            seed=config.seed,
            device=self.device,
            amp=self.amp,
        )

    def _snapshot(self) -> dict[str, Any]:
        # Kept in host memory: on a GPU a second copy of the weights and the optimiser state
        # would cost as much device memory as the training itself.
        return {
            "step": self.ctx.step,
            "model": host_copy(self.model.state_dict()),
            "optimizer": host_copy(self.optimizer.state_dict()),
            "monitor": self.monitor.state_dict(),
        }

    def _save_checkpoint(self) -> None:
        ctx, task, out = self.ctx, self.task, self.out
        self.progress.monitor = self.monitor.state_dict()
        mine = {
            "train_gen": self.train_gen.get_state(),
            "global": get_rng_state(self.device),
            "carry": to_device(self.carry, torch.device("cpu")),
            "task": task.state_dict() if callable(getattr(task, "state_dict", None)) else None,
        }
        rngs = distributed.all_gather_object(mine, self.dist)
        if self.dist.is_main and out is not None:
            payload = {
                "version": 1,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "guard": self.guard.state_dict(),
                "rng": rngs,
                "trainer": self.progress.to_checkpoint(ctx.step, ctx.history, self._wall()),
                "recipe": self.recipe.to_dict(),
                "config": self.config.to_dict(),
                "task": {"name": ctx.task_name, "length": getattr(task, "length", None)},
            }
            atomic_torch_save(checkpoint_file(out, ctx.step), payload)
            for old in checkpoint_paths(out)[: -self.config.keep_last]:
                old.unlink(missing_ok=True)
        distributed.barrier(self.dist)

    def _publish_eval(self, metrics: dict[str, float], **extra: Any) -> None:
        """Record an evaluation in the history and hand it to the callbacks."""
        ctx = self.ctx
        ctx.last_eval_record = {
            "kind": "eval",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "metric_name": ctx.metric_name,
            "solved": self.progress.solved,
            **extra,
            **metrics,
        }
        ctx.history.append(ctx.last_eval_record)
        for cb in self.callbacks:
            cb.on_eval_end(ctx, metrics)

    def _flush_extra(self) -> None:
        for rec in self.ctx.extra_records:
            if self.writer is not None:
                self.writer.write(rec)
        self.ctx.extra_records.clear()

    def _finish(self) -> FitResult:
        from rnnguard.models import count_parameters

        ctx, progress = self.ctx, self.progress
        stats = distributed.reduce_counts(self.guard.stats.to_dict(), self.dist)
        result = FitResult(
            steps=ctx.step,
            solved=progress.solved,
            solved_step=progress.solved_step,
            metrics=progress.last_metrics,
            history=ctx.history,
            guard_stats=stats,
            diverged=progress.diverged,
            wall_time=self._wall(),
            metric_name=ctx.metric_name,
            rollbacks=progress.rollbacks,
            blowups=progress.blowups,
            num_params=count_parameters(self.model),
            recipe=self.recipe.to_dict(),
            out=str(self.out) if self.out else None,
        )
        if self.dist.is_main and self.out is not None:
            summary = {k: v for k, v in result.to_dict().items() if k != "history"}
            atomic_write_json(self.out / "result.json", summary)
        for cb in self.callbacks:
            cb.on_train_end(ctx, result)
        return result
