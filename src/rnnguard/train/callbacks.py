"""Trainer callbacks: the hook protocol and the built-in progress bar and metric writers."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnguard.utils.io import append_jsonl, atomic_write_text, json_line, read_jsonl

if TYPE_CHECKING:
    from rnnguard.train.state import FitResult, TrainContext

CSV_COLUMNS = (
    "kind",
    "step",
    "epoch",
    "loss",
    "metric",
    "grad_norm",
    "grad_norm_clipped",
    "lr",
    "clipped",
    "skipped",
    "overflow",
    "exploded",
    "explosions",
    "blowup",
    "loss_scale",
    "event",
    "time",
)


class Callback:
    """Base class with no-op hooks; subclass and override what you need.

    An exception raised in a hook propagates out of ``fit`` (this is how Optuna prunes a trial).
    Set ``ctx.should_stop = True`` to end training after the current step.
    """

    def on_train_start(self, ctx: TrainContext) -> None:
        """Called once before the first step (after any resume)."""

    def on_step_end(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """Called after every training step with that step's record."""

    def on_eval_end(self, ctx: TrainContext, metrics: dict[str, float]) -> None:
        """Called after every evaluation with the held-out metrics."""

    def on_train_end(self, ctx: TrainContext, result: FitResult) -> None:
        """Called once with the final result."""


class MetricsWriter(Callback):
    """Writes ``metrics.jsonl`` (every record) and ``metrics.csv`` (fixed columns) in ``out``.

    Each JSONL line is flushed and fsynced, so a killed run loses at most the line in flight.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.jsonl = self.out / "metrics.jsonl"
        self.csv = self.out / "metrics.csv"

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (a resume restarts from there) and rebuild the CSV."""
        records = [r for r in read_jsonl(self.jsonl) if int(r.get("step", 0)) <= step]
        text = "".join(json_line(r) for r in records)
        atomic_write_text(self.jsonl, text)
        atomic_write_text(self.csv, _csv_text(records, header=True))

    def on_train_start(self, ctx: TrainContext) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.csv.exists() or self.csv.stat().st_size == 0:
            atomic_write_text(self.csv, _csv_text([], header=True))

    def write(self, record: dict[str, Any]) -> None:
        append_jsonl(self.jsonl, record)
        with open(self.csv, "a", encoding="utf-8", newline="") as fh:
            fh.write(_csv_text([record], header=False))

    def on_step_end(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if record.get("logged"):
            self.write(record)

    def on_eval_end(self, ctx: TrainContext, metrics: dict[str, float]) -> None:
        self.write(ctx.last_eval_record)


def _csv_text(records: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for r in records:
        row = dict(r)
        if "metric" not in row and r.get("metric_name") in r:
            row["metric"] = r[r["metric_name"]]
        writer.writerow(row)
    return buf.getvalue()


class ProgressBar(Callback):
    """A tqdm bar with live loss, gradient norm and explosion count (silent when not a terminal)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar: Any = None

    def on_train_start(self, ctx: TrainContext) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=ctx.config.steps,
            initial=ctx.step,
            desc=ctx.task_name,
            leave=True,
            dynamic_ncols=True,
        )

    def on_step_end(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if ctx.step % 10 == 0 or record.get("exploded"):
            self.bar.set_postfix(
                loss=f"{record['loss']:.4g}",
                gnorm=f"{record['grad_norm']:.3g}",
                expl=record["explosions"],
                refresh=False,
            )

    def on_eval_end(self, ctx: TrainContext, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            name = ctx.metric_name
            value = metrics.get(name, float("nan"))
            # Beside the bar on stderr, so stdout keeps only the final summary line.
            self.bar.write(f"step {ctx.step}: eval {name}={value:.4g}", file=sys.stderr)

    def on_train_end(self, ctx: TrainContext, result: FitResult) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoardWriter(Callback):
    """Scalars to TensorBoard event files in ``out/tensorboard`` (needs the tensorboard package)."""

    def __init__(self, out: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(out) / "tensorboard"))

    def on_step_end(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if record.get("logged"):
            for key in ("loss", "grad_norm", "grad_norm_clipped", "lr", "explosions"):
                if isinstance(record.get(key), (int, float)):
                    self.writer.add_scalar(f"train/{key}", record[key], ctx.step)

    def on_eval_end(self, ctx: TrainContext, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"eval/{key}", value, ctx.step)

    def on_train_end(self, ctx: TrainContext, result: FitResult) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
