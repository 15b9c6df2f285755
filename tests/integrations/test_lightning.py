"""GuardCallback and HorizonCallback on a real lightning Trainer (CPU, a tiny LSTM, a few steps)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision

import rnnguard
from rnnguard.errors import ConfigError
from rnnguard.integrations.lightning import GuardCallback, HorizonCallback
from rnnguard.integrations.lightning import _scaler as _scaler_of

STEPS = 6
POISONED = 2  # the optimiser step (0-based) whose gradient gets a NaN
LR = 0.01


class TinySeqModel(pl.LightningModule):
    """(batch, time, 3) -> LSTM -> a prediction per step; records the true gradient norm of each step."""

    def __init__(self, poison_step: int | None, rnn: nn.Module | None = None) -> None:
        super().__init__()
        self.rnn = rnn if rnn is not None else nn.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 1)
        self.poison_step = poison_step
        self.true_norms: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x)[:, -1], y)

    def on_after_backward(self) -> None:
        if self.global_step == self.poison_step:
            self.rnn.weight_hh_l0.grad[0, 0] = float("nan")
        grads = [p.grad.detach().float() for p in self.parameters() if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        # under AMP the gradients here are still scaled: divide to get the true norm
        self.true_norms.append(norm / float(scaler.get_scale()) if scaler is not None else norm)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StepRecorder(pl.Callback):
    """Weights and Adam's step counts before and after each training batch."""

    def __init__(self) -> None:
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []
        self.adam_steps: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self.before.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, out: Any, batch: Any, idx: int
    ) -> None:
        self.after.append({k: v.clone() for k, v in pl_module.state_dict().items()})
        state = trainer.optimizers[0].state
        self.adam_steps.append(float(state[pl_module.rnn.weight_hh_l0].get("step", 0)))


class TimeFirstLM(nn.Module):
    """Token ids (time, batch) and a hidden state in, (output, hidden) out."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(7, 6)
        self.rnn = nn.GRU(6, 8)
        self.decoder = nn.Linear(8, 7)

    def forward(self, tokens: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, Any]:
        out, hidden = self.rnn(self.encoder(tokens), hidden)
        return self.decoder(out), hidden

    def init_hidden(self, bsz: int) -> torch.Tensor:
        return torch.zeros(1, bsz, 8)


def _data(n: int = 4 * STEPS) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 12, 3, generator=gen)
    y = x[:, 0, :1] * 3.0
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def _fit(
    tmp: Path,
    callbacks: list[Any],
    poison_step: int | None,
    rnn: nn.Module | None = None,
    **trainer_kwargs: Any,
) -> Any:
    torch.manual_seed(0)
    model = TinySeqModel(poison_step, rnn)
    trainer = pl.Trainer(
        max_steps=trainer_kwargs.pop("max_steps", STEPS),
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(tmp), name="run"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    trainer.fit(model, _data())
    return trainer, model


def _metrics(trainer: Any) -> list[dict[str, str]]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    guard_cb = GuardCallback(mode="norm", max_norm=0.05)
    horizon_cb = HorizonCallback(every=2)
    # a second monitor on a time-first token model called with a hidden state
    lm = TimeFirstLM()
    tokens = torch.randint(0, 7, (10, 3), generator=torch.Generator().manual_seed(0))
    lm_cb = HorizonCallback(
        every=3, model=lm, batch=tokens, forward_args=(lm.init_hidden(3),), prefix="lm/"
    )
    recorder = StepRecorder()
    trainer, model = _fit(
        tmp_path_factory.mktemp("lightning"), [guard_cb, horizon_cb, lm_cb, recorder], POISONED
    )
    return {
        "trainer": trainer,
        "model": model,
        "guard": guard_cb,
        "horizon": horizon_cb,
        "lm_horizon": lm_cb,
        "rec": recorder,
        "rows": _metrics(trainer),
    }


def test_nan_step_is_skipped_and_leaves_weights_and_optimizer_alone(
    fp32_run: dict[str, Any],
) -> None:
    rec = fp32_run["rec"]
    assert len(rec.before) == STEPS
    for i in range(STEPS):
        changed = [k for k in rec.before[i] if not torch.equal(rec.before[i][k], rec.after[i][k])]
        if i == POISONED:
            assert changed == [], f"the skipped step changed {changed}"
        else:
            assert changed, f"step {i} did not update the weights"
    # Adam's own step counter did not advance for the skipped step
    assert rec.adam_steps == [1, 2, 2, 3, 4, 5]
    stats = fp32_run["guard"].guard.stats
    assert stats.steps == STEPS and stats.skipped == 1 and stats.exploded == 1


def test_scheduler_not_advanced_on_the_skipped_step(fp32_run: dict[str, Any]) -> None:
    sched = fp32_run["trainer"].lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == STEPS - 1  # one held back
    assert sched.get_last_lr()[0] == pytest.approx(LR * 0.5 ** (STEPS - 1))
    assert fp32_run["guard"].held_scheduler_steps == 1


def test_logged_norm_is_the_true_pre_clip_norm_and_clipping_applies(
    fp32_run: dict[str, Any],
) -> None:
    rows = fp32_run["rows"]
    norms = _column(rows, "guard/grad_norm")
    true = fp32_run["model"].true_norms
    assert len(norms) == len(true) == STEPS
    for i, (logged, expected) in enumerate(zip(norms, true)):
        if i == POISONED:
            assert math.isnan(logged) and math.isnan(expected)
        else:
            assert logged == pytest.approx(expected, rel=1e-5)
            assert logged > 0.05  # so every finite step was clipped to max_norm
    clipped = _column(rows, "guard/grad_norm_clipped")
    assert all(c == pytest.approx(0.05, rel=1e-4) for i, c in enumerate(clipped) if i != POISONED)
    assert _column(rows, "guard/skipped") == [float(i == POISONED) for i in range(STEPS)]
    assert _column(rows, "guard/explosions")[-1] == 1.0
    assert _column(rows, "guard/skipped_steps")[-1] == 1.0


def test_horizon_callback_logs_every_n_steps(fp32_run: dict[str, Any]) -> None:
    hz = fp32_run["horizon"]
    assert [r["step"] for r in hz.records] == [2, 4, 6]
    assert all(r["max_distance"] == 11 for r in hz.records)
    rows = fp32_run["rows"]
    assert set(_column(rows, "horizon/max_distance")) == {11.0}
    # Lightning repeats a callback's step value on later rows: compare the distinct values
    logged = {round(v, 6) for v in _column(rows, "horizon/far_ratio")}
    assert logged == {round(r["far_ratio"], 6) for r in hz.records}
    assert len(logged) == 3
    assert all(r["measured_at"] == "input" for r in hz.records)
    lm = fp32_run["lm_horizon"]
    assert [r["step"] for r in lm.records] == [3, 6]
    assert all(r["measured_at"] == "rnn input" and r["max_distance"] == 9 for r in lm.records)
    assert set(_column(rows, "lm/max_distance")) == {9.0}


def test_guard_callback_state_round_trips(fp32_run: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    fp32_run["trainer"].save_checkpoint(str(path))
    saved = torch.load(path, map_location="cpu", weights_only=False)["callbacks"]
    mine = [v for k, v in saved.items() if k.startswith("GuardCallback")]
    assert len(mine) == 1 and mine[0]["guard"]["stats"]["skipped"] == 1
    state = fp32_run["guard"].state_dict()
    other = GuardCallback(mode="norm", max_norm=0.05)
    other.load_state_dict(state)
    assert other.guard.stats == fp32_run["guard"].guard.stats
    assert other.held_scheduler_steps == 1


def test_amp_norm_is_unscaled_and_an_overflow_lowers_the_scale(tmp_path: Path) -> None:
    guard_cb = GuardCallback(mode="agc", agc_clip=0.05)
    recorder = StepRecorder()
    # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin keeps fp16 and its scaler
    amp = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=256.0))
    # torch's CPU LSTM has no fp16 kernel; rnnguard's runs under autocast
    rnn = rnnguard.LSTM(3, 8, batch_first=True, layer_norm=True)
    trainer, model = _fit(tmp_path, [guard_cb, recorder], 1, rnn, plugins=[amp], max_steps=3)
    assert _scaler_of(trainer) is amp.scaler
    rows = _metrics(trainer)
    norms = _column(rows, "guard/grad_norm")
    assert norms[0] == pytest.approx(model.true_norms[0], rel=1e-3)
    assert norms[2] == pytest.approx(model.true_norms[2], rel=1e-3)
    assert norms[0] < 1e2  # the scaled norm would be 256 times larger
    # a non-finite step at a high loss scale is the scaler calibrating, not an explosion
    stats = guard_cb.guard.stats
    assert stats.skipped == 1 and stats.overflows == 1 and stats.exploded == 0
    scales = _column(rows, "guard/loss_scale")
    assert scales[1] == scales[0] / 2
    assert all(torch.equal(recorder.before[1][k], v) for k, v in recorder.after[1].items())
    assert not all(torch.equal(recorder.before[2][k], v) for k, v in recorder.after[2].items())


def test_lightning_clipping_alongside_the_guard_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gradient_clip_val"):
        _fit(tmp_path, [GuardCallback()], None, gradient_clip_val=1.0, max_steps=1)


def test_bad_arguments_are_named() -> None:
    from rnnguard.train.guard import GradientGuard

    with pytest.raises(ConfigError, match="either guard= or"):
        GuardCallback(GradientGuard(), mode="value")
    with pytest.raises(ConfigError, match="mode must be one of"):
        GuardCallback(mode="sometimes")
    with pytest.raises(TypeError, match="guard must be a GradientGuard"):
        GuardCallback("norm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="every"):
        HorizonCallback(every=0)
