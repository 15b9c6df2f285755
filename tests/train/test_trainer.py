"""fit(): solving, callbacks, evaluation hooks, stateful tasks, exact resume, divergence rollback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from rnnguard.errors import ConfigError
from rnnguard.models import SequenceModel
from rnnguard.tasks import AddingTask, create_task
from rnnguard.train.callbacks import Callback
from rnnguard.train.checkpoint import checkpoint_paths
from rnnguard.train.config import TrainConfig
from rnnguard.train.recipes import Recipe, get_recipe
from rnnguard.train.trainer import fit
from rnnguard.utils.io import read_jsonl

from .helpers import Crash, PoisonStream, PoisonTask

SMALL = dict(progress=False, eval_batches=2)


def _tiny(name: str = "gru", **over: Any) -> Recipe:
    return get_recipe(name).replace(hidden_size=8, **over)


def test_small_recipe_solves_adding_t20() -> None:
    recipe = get_recipe("gru").replace(hidden_size=32, **{"optimizer.lr": 1e-2})
    task = create_task("adding", length=20)
    result = fit(recipe, task, TrainConfig(steps=600, batch_size=32, eval_every=25, **SMALL))
    assert result.solved and result.solved_step is not None and result.solved_step < 600
    assert result.metrics["mse"] <= 0.01 and result.steps == result.solved_step
    assert not result.diverged and result.guard_stats["skipped"] == 0
    losses = [r["loss"] for r in result.history if r["kind"] == "train"]
    assert losses[-1] < 0.2 * losses[0]


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, ctx: Any) -> None:
        self.calls.append("start")

    def on_step_end(self, ctx: Any, record: dict[str, Any]) -> None:
        self.calls.append(f"step{record['step']}")

    def on_eval_end(self, ctx: Any, metrics: dict[str, float]) -> None:
        self.calls.append(f"eval{ctx.step}")

    def on_train_end(self, ctx: Any, result: Any) -> None:
        self.calls.append("end")


def test_callbacks_order_and_plain_module() -> None:
    task = AddingTask(6)
    model = SequenceModel(task.spec, "lstm", hidden_size=4)
    rec = Recorder()
    result = fit(model, task, TrainConfig(steps=4, eval_every=2, batch_size=4, **SMALL), [rec])
    assert rec.calls == ["start", "step1", "step2", "eval2", "step3", "step4", "eval4", "end"]
    assert result.steps == 4 and result.recipe["name"] == "custom"
    assert set(result.metrics) == {"loss", "mse"}


def test_callback_exception_propagates_and_should_stop() -> None:
    class Boom(Callback):
        def on_eval_end(self, ctx: Any, metrics: dict[str, float]) -> None:
            raise KeyError("pruned")

    with pytest.raises(KeyError, match="pruned"):
        fit(
            _tiny(),
            AddingTask(5),
            TrainConfig(steps=10, eval_every=3, batch_size=4, **SMALL),
            [Boom()],
        )

    class Stop(Callback):
        def on_step_end(self, ctx: Any, record: dict[str, Any]) -> None:
            if ctx.step == 3:
                ctx.should_stop = True

    result = fit(
        _tiny(),
        AddingTask(5),
        TrainConfig(steps=10, eval_every=100, batch_size=4, **SMALL),
        [Stop()],
    )
    assert result.steps == 3 and "mse" in result.metrics  # final evaluation still happens


class _StreamTask(AddingTask):
    """Adding batches flagged stateful, with an ``evaluate`` hook."""

    stateful = True

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {"mse": 0.5, "custom": 1.0}


class _StateSpy(nn.Module):
    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.inner = SequenceModel(spec, "gru", hidden_size=4)
        self.states: list[Any] = []

    def forward(self, x: torch.Tensor, state: Any = None) -> Any:
        self.states.append(state)
        return self.inner(x, state)


def test_stateful_task_carries_detached_state_and_uses_evaluate() -> None:
    task = _StreamTask(5)
    model = _StateSpy(task.spec)
    result = fit(model, task, TrainConfig(steps=3, eval_every=3, batch_size=2, **SMALL))
    assert model.states[0] is None
    assert all(isinstance(s, torch.Tensor) and not s.requires_grad for s in model.states[1:3])
    assert result.metrics == {"mse": 0.5, "custom": 1.0}


def test_copy_task_trains_with_extra_metric() -> None:
    result = fit(
        _tiny("lstm"),
        create_task("copy", length=3),
        TrainConfig(steps=2, eval_every=2, batch_size=4, **SMALL),
    )
    assert {"loss", "xent", "recall_accuracy"} <= set(result.metrics)


def test_amp_bf16_on_cpu_trains() -> None:
    result = fit(_tiny(), AddingTask(6), TrainConfig(steps=5, batch_size=4, amp="bf16", **SMALL))
    assert math.isfinite(result.metrics["mse"]) and result.guard_stats["steps"] == 5


def test_resume_continues_exactly(tmp_path: Path) -> None:
    # Zoneout draws from the global RNG, so an exact match needs every RNG state restored.
    recipe = _tiny("lstm", layer_kwargs={"zoneout": 0.1}, **{"schedule.name": "warmup-cosine"})
    task = AddingTask(8)
    cfg = TrainConfig(
        steps=30,
        eval_every=10,
        checkpoint_every=10,
        batch_size=4,
        stop_when_solved=False,
        keep_last=2,
        **SMALL,
    )
    full = fit(recipe, task, cfg.replace(out=str(tmp_path / "a")))
    with pytest.raises(RuntimeError, match="simulated"):
        fit(recipe, task, cfg.replace(out=str(tmp_path / "b")), [Crash(15)])
    assert [p.name for p in checkpoint_paths(tmp_path / "b")] == ["ckpt-00000010.pt"]
    resumed = fit(recipe, task, cfg.replace(out=str(tmp_path / "b"), resume=True))
    assert resumed.steps == 30
    a = torch.load(checkpoint_paths(tmp_path / "a")[-1], weights_only=False)
    b = torch.load(checkpoint_paths(tmp_path / "b")[-1], weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert resumed.metrics == full.metrics
    assert resumed.guard_stats == full.guard_stats
    steps = [
        r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "train"
    ]
    assert steps == list(range(10, 31, 10)) and len(checkpoint_paths(tmp_path / "b")) == 2
    # A fresh run into a folder with checkpoints is refused rather than mixed.
    with pytest.raises(ConfigError, match="resum"):
        fit(recipe, task, cfg.replace(out=str(tmp_path / "b")))


def test_divergence_rolls_back_and_lowers_lr(caplog: pytest.LogCaptureFixture) -> None:
    task = PoisonTask(6, bad=set(range(8, 11)))
    # eval_every=0: evaluation only at the end, so batch draws map one-to-one onto steps.
    cfg = TrainConfig(
        steps=15,
        eval_every=0,
        batch_size=4,
        divergence_patience=3,
        lr_backoff=0.5,
        stop_when_solved=False,
        **SMALL,
    )
    recipe = _tiny().replace(**{"schedule.name": "constant", "optimizer.lr": 0.01})
    with caplog.at_level("WARNING", logger="rnnguard.train.trainer"):
        result = fit(recipe, task, cfg)
    assert "rolled back" in caplog.text and "x0.5" in caplog.text
    events = [r for r in result.history if r["kind"] == "event"]
    assert [e["event"] for e in events] == ["rollback"] and events[0]["step"] == 10
    assert result.rollbacks == 1 and not result.diverged and result.steps == 15
    lrs = [r["lr"] for r in result.history if r["kind"] == "train"]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.005)
    assert result.guard_stats["skipped"] == 3
    assert all(math.isfinite(v) for v in result.metrics.values())


def test_persistent_divergence_is_declared() -> None:
    task = PoisonTask(6, bad=set(range(3, 100)))
    cfg = TrainConfig(
        steps=50, eval_every=0, batch_size=4, divergence_patience=2, max_rollbacks=1, **SMALL
    )
    result = fit(_tiny(), task, cfg)
    assert result.diverged and result.steps == 6
    # The summary counts the rollbacks that happened; giving up is not one of them.
    events = [r["event"] for r in result.history if r["kind"] == "event"]
    assert events == ["rollback", "diverged"] and result.rollbacks == 1


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"steps": -1}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
        ({"amp": "fp8"}, "amp"),
        ({"resume": True}, "resume"),
        ({"lr_backoff": 0}, "lr_backoff"),
    ],
)
def test_bad_train_config(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        TrainConfig(**kwargs)


def test_bad_fit_arguments() -> None:
    with pytest.raises(TypeError, match="Task protocol"):
        fit(_tiny(), object(), TrainConfig(steps=1))
    with pytest.raises(TypeError, match="model_or_recipe"):
        fit(3, AddingTask(5), TrainConfig(steps=1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown recipe"):
        fit("nope", AddingTask(5), TrainConfig(steps=1))


def test_fp16_on_cpu_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="bf16"):
        fit(_tiny(), AddingTask(5), TrainConfig(steps=1, amp="fp16", device="cpu", **SMALL))


def test_task_state_is_checkpointed(tmp_path: Path) -> None:
    cfg = TrainConfig(
        steps=6, eval_every=0, checkpoint_every=3, batch_size=2, out=str(tmp_path), **SMALL
    )
    with pytest.raises(RuntimeError):
        fit(_tiny(), PoisonStream(4, set()), cfg, [Crash(4)])
    task = PoisonStream(4, set())  # nothing poisoned: only its draw count, saved in checkpoints
    fit(_tiny(), task, cfg.replace(resume=True))
    # 3 draws restored from the step-3 checkpoint, 3 new training draws, 2 final eval batches.
    assert task.calls == 3 + 3 + 2


def test_evaluation_is_fixed_held_out_batches() -> None:
    from rnnguard.train.evaluation import evaluate

    task = AddingTask(7)
    model = SequenceModel(task.spec, "gru", hidden_size=4)
    a = evaluate(model, task, batches=3, batch_size=5, seed=1)
    b = evaluate(model, task, batches=3, batch_size=5, seed=1)
    c = evaluate(model, task, batches=3, batch_size=5, seed=2)
    assert a == b and a != c and model.training  # train mode restored
    # The held-out stream differs from the training stream of the same seed.
    train_x, _ = task.batch(5, torch.Generator().manual_seed(1 * 1_000_033 + 1))
    from rnnguard.train.evaluation import EVAL_SEED_OFFSET

    eval_x, _ = task.batch(5, torch.Generator().manual_seed(1 + EVAL_SEED_OFFSET))
    assert not torch.equal(train_x, eval_x)


def test_progress_bar_shows_loss_norm_and_explosions(capsys: pytest.CaptureFixture[str]) -> None:
    fit(
        _tiny(),
        AddingTask(5),
        TrainConfig(steps=20, batch_size=4, eval_every=10, progress=True, eval_batches=1),
    )
    err = capsys.readouterr().err
    assert "loss=" in err and "gnorm=" in err and "expl=0" in err and "eval mse=" in err


def test_tensorboard_writer_gets_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    written: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, logdir: str) -> None:
            self.logdir = logdir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def close(self) -> None:
            written.append(("closed", 0.0, 0))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    cfg = TrainConfig(
        steps=4,
        batch_size=2,
        eval_every=2,
        log_every=2,
        tensorboard=True,
        out=str(tmp_path),
        **SMALL,
    )
    fit(_tiny(), AddingTask(5), cfg)
    tags = {t for t, _, _ in written}
    assert {"train/loss", "train/grad_norm", "eval/mse", "closed"} <= tags
    assert ("eval/mse", 4) in {(t, s) for t, _, s in written}


@pytest.mark.slow
def test_lstm_ln_clip_solves_adding_t50() -> None:
    task = create_task("adding", length=50)
    result = fit(
        get_recipe("lstm-ln-clip").replace(hidden_size=64),
        task,
        TrainConfig(steps=800, batch_size=32, eval_every=50, progress=False, eval_batches=2),
    )
    assert result.solved, result.metrics


class _Probe(Callback):
    """Draws a probe batch from the task when training starts, as HorizonMonitor does."""

    def on_train_start(self, ctx: Any) -> None:
        ctx.task.batch(ctx.config.batch_size, torch.Generator().manual_seed(0))


def test_probe_batches_at_train_start_leave_the_text_stream_alone(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij klmnop qrstuvwxyz. " * 20, encoding="utf-8")

    def task() -> Any:
        return create_task("text", length=6, path=str(corpus), eval_streams=2)

    cfg = TrainConfig(
        steps=4, eval_every=0, checkpoint_every=2, batch_size=4, stop_when_solved=False, **SMALL
    )
    plain = fit(_tiny(), task(), cfg)
    probed = fit(_tiny(), task(), cfg, [_Probe()])
    assert probed.metrics == plain.metrics  # the probe did not eat a training window
    out = str(tmp_path / "run")
    with pytest.raises(RuntimeError):
        fit(_tiny(), task(), cfg.replace(out=out), [_Probe(), Crash(3)])
    resumed = fit(_tiny(), task(), cfg.replace(out=out, resume=True), [_Probe()])
    assert resumed.metrics == plain.metrics  # nor moved the restored stream position
