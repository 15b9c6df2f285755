"""The doctor on models as users write them: token ids, time-first, a hidden-state argument,
``(output, hidden)`` or dict outputs, or a plain function wrapping the model."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rnnguard.diagnose import DoctorConfig, doctor
from rnnguard.diagnose.doctor import VERDICTS
from rnnguard.errors import ConfigError
from rnnguard.tasks import create_task
from rnnguard.train.model_call import ModelOutputError

NTOKEN, NINP, NHID, NLAYERS = 40, 12, 16, 2
T, B = 24, 4
CFG = DoctorConfig(spectrum_steps=20, lyapunov_k=2)


class WordLM(nn.Module):
    """A word-level LSTM language model in the common shape: token ids (time, batch) and a
    hidden state in, flattened log-probabilities (time * batch, ntoken) and the new state out."""

    def __init__(self, batch_first: bool = False, ntoken: int = NTOKEN) -> None:
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(0.3)
        self.encoder = nn.Embedding(ntoken, NINP)
        self.rnn = nn.LSTM(NINP, NHID, NLAYERS, dropout=0.3, batch_first=batch_first)
        self.decoder = nn.Linear(NHID, ntoken)

    def forward(self, tokens: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        emb = self.drop(self.encoder(tokens))
        out, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(out)).view(-1, self.ntoken)
        return nn.functional.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = next(self.parameters())
        return w.new_zeros(NLAYERS, bsz, NHID), w.new_zeros(NLAYERS, bsz, NHID)


class EmbeddedLM(nn.Module):
    """The same network fed the embedded vectors (float, time-first): the reference measurement."""

    def __init__(self, lm: WordLM) -> None:
        super().__init__()
        self.rnn, self.decoder = lm.rnn, lm.decoder

    def forward(self, emb: torch.Tensor, hidden: Any) -> torch.Tensor:
        out, _ = self.rnn(emb, hidden)
        return nn.functional.log_softmax(self.decoder(out), dim=-1)


@pytest.fixture(scope="module")
def lm_case() -> dict[str, Any]:
    torch.manual_seed(0)
    lm = WordLM()
    tokens = torch.randint(0, NTOKEN, (T, B), generator=torch.Generator().manual_seed(1))
    diagnosis = doctor(lm, tokens, forward_args=(lm.init_hidden(B),), config=CFG)
    return {"lm": lm, "tokens": tokens, "diagnosis": diagnosis}


def test_word_language_model_gets_a_verdict_and_a_horizon(lm_case: dict[str, Any]) -> None:
    d = lm_case["diagnosis"]
    assert d.verdicts and set(d.verdicts) <= set(VERDICTS)
    hz = d.horizons.input
    assert hz.max_distance == T - 1 and d.length == T and d.batch_size == B
    assert hz.finite and np.all(hz.norms > 0)
    assert hz.extra["measured_at"] == "rnn input"
    assert d.model_info["layout"] == "time-first" and d.model_info["input"] == "token ids"
    assert set(d.horizons.hidden) == {"rnn.l0", "rnn.l1"}
    assert set(d.spectra) == {"rnn.l0", "rnn.l1"}
    assert "at the rnn input" in d.summary()
    assert lm_case["lm"].training  # the user's model is left in the mode it came in


def test_token_horizon_equals_the_float_measurement_at_the_embedding(
    lm_case: dict[str, Any],
) -> None:
    """Measured through hooks on token ids = measured directly on the embedded float input."""
    lm, tokens = lm_case["lm"], lm_case["tokens"]
    with torch.no_grad():
        emb = lm.encoder(tokens)
    ref = doctor(EmbeddedLM(lm), emb, forward_args=(lm.init_hidden(B),), config=CFG)
    assert ref.model_info["layout"] == "time-first"
    np.testing.assert_allclose(
        lm_case["diagnosis"].horizons.input.norms, ref.horizons.input.norms, rtol=1e-5
    )


def test_batch_first_twin_and_a_wrapping_function_measure_the_same(
    lm_case: dict[str, Any],
) -> None:
    lm, tokens = lm_case["lm"], lm_case["tokens"]
    expected = lm_case["diagnosis"].horizons.input.norms
    twin = WordLM(batch_first=True)
    twin.load_state_dict(lm.state_dict())
    d_bf = doctor(twin, tokens.T.contiguous(), forward_args=(twin.init_hidden(B),), config=CFG)
    assert d_bf.model_info["layout"] == "batch-first"
    np.testing.assert_allclose(d_bf.horizons.input.norms, expected, rtol=1e-5)

    hidden = lm.init_hidden(B)
    d_fn = doctor(lambda inp: lm(inp, hidden)[0], tokens, config=CFG)
    np.testing.assert_allclose(d_fn.horizons.input.norms, expected, rtol=1e-5)
    assert set(d_fn.spectra) == {"rnn.l0", "rnn.l1"}


class DictModel(nn.Module):
    """Batch-first floats in, a dict with the per-step predictions and the state out."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> dict[str, Any]:
        out, h = self.gru(x * scale)
        return {"state": h, "logits": self.head(out)}


def test_dict_outputs_and_keyword_arguments() -> None:
    torch.manual_seed(0)
    model, x = DictModel(), torch.randn(3, 15, 3)
    d = doctor(model, x, forward_kwargs={"scale": 2.0}, config=CFG)
    assert d.model_info["layout"] == "batch-first" and set(d.horizons.hidden) == {"gru.l0"}
    picked = doctor(model, x, forward_kwargs={"scale": 2.0}, output="logits", config=CFG)
    np.testing.assert_allclose(d.horizons.input.norms, picked.horizons.input.norms)
    halved = doctor(model, x, forward_kwargs={"scale": 1.0}, config=CFG)
    assert not np.allclose(d.horizons.input.norms, halved.horizons.input.norms)
    with pytest.raises(ModelOutputError, match="keys"):
        doctor(model, x, output="missing", config=CFG)


class TimeFirstRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(2, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[-1])  # one prediction per sequence


def test_a_task_batch_is_turned_for_a_time_first_model() -> None:
    torch.manual_seed(0)
    model = TimeFirstRegressor()
    task = create_task("adding", length=12)
    d = doctor(model, task, config=DoctorConfig(batch_size=5, spectrum_steps=10, lyapunov_k=2))
    assert d.model_info["layout"] == "time-first" and d.length == 12 and d.batch_size == 5
    x, _ = task.batch(5, torch.Generator().manual_seed(0))
    manual = doctor(model, x.transpose(0, 1), config=DoctorConfig(spectrum_steps=10, lyapunov_k=2))
    np.testing.assert_allclose(d.horizons.input.norms, manual.horizons.input.norms, rtol=1e-6)


def test_bad_user_models_get_clear_errors() -> None:
    lm = WordLM()
    tokens = torch.randint(0, NTOKEN, (T, B))
    with pytest.raises(ConfigError, match=r"ran no torch\.nn\.Module"):
        doctor(lambda inp: inp.float().unsqueeze(-1), tokens)
    with pytest.raises(TypeError, match="forward args must be a tuple"):
        doctor(lm, tokens, forward_args=[lm.init_hidden(B)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hidden"):
        doctor(lm, tokens, forward_args=(lm.init_hidden(B + 1),))
    with pytest.raises(TypeError, match="callable or a recipe"):
        doctor(42, tokens)  # type: ignore[arg-type]


def test_a_token_task_with_a_hidden_state_sized_by_the_batch() -> None:
    """A time-first LM with ``forward(input, hidden)`` on a task's (batch, time) token batches."""
    torch.manual_seed(0)
    task = create_task("synthlang", length=16)
    lm = WordLM(ntoken=task.spec.input_size)
    cfg = DoctorConfig(batch_size=5, spectrum_steps=10, lyapunov_k=2)
    start = copy.deepcopy(task.state_dict())  # a stream: read the same batch again below
    d = doctor(lm, task, forward_args=lambda b: (lm.init_hidden(b),), config=cfg)
    task.load_state_dict(start)
    x, _ = task.batch(5, torch.Generator().manual_seed(cfg.seed))
    manual = doctor(lm, x.T.contiguous(), forward_args=(lm.init_hidden(5),), config=cfg)
    assert d.model_info["layout"] == "time-first" and d.batch_size == 5 and d.length == 16
    np.testing.assert_allclose(d.horizons.input.norms, manual.horizons.input.norms, rtol=1e-6)
