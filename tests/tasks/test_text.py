"""Character-level LM task: PTB format, BPC against hand-computed values, streams, missing data."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from rnnguard.errors import ConfigError, DataError
from rnnguard.tasks.registry import create_task, list_tasks
from rnnguard.tasks.text import (
    CharLMTask,
    bits_per_character,
    find_ptb_dir,
    load_ptb_char,
    ptb_tokens,
)


def write_ptb(folder: Path, lines: int = 40) -> Path:
    """Small files in PTB-char's format (space-separated symbols, ' \\n' endings)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["a b c", "b _ a", "c c _ a b", "< u n k >", "N _ N"]
    for i, name in enumerate(("train.txt", "valid.txt", "test.txt")):
        text = "".join(f" {words[(j + i) % len(words)]} _ a \n" for j in range(lines))
        (folder / name).write_text(text, encoding="utf-8")
    return folder


class ConstantModel(torch.nn.Module):
    """Predicts the same distribution at every step, whatever the input and state."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.log(torch.tensor(probs))

    def forward(self, x: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        return self.logits.expand(*x.shape, -1).clone(), ("carried",)


def test_ptb_tokenisation_adds_one_eos_per_line() -> None:
    assert ptb_tokens(" a b _ c \n d \n") == ["a", "b", "_", "c", "<eos>", "d", "<eos>"]


def test_bits_per_character_hand_computed() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]] * 4))
    targets = torch.tensor([1, 2, 0, 0])  # 2 + 2 + 1 + 1 bits
    assert bits_per_character(logits, targets) == pytest.approx(1.5)


@pytest.mark.parametrize("streams", [1, 3, 16])
@pytest.mark.parametrize("length", [2, 3, 50])
def test_evaluate_bpc_hand_computed(streams: int, length: int) -> None:
    # Valid tokens x y z x x: targets y z x x -> -log2 of 0.25, 0.25, 0.5, 0.5 -> mean 1.5 bits.
    splits = {"train": list("xyzxyzxyzxyz"), "valid": list("xyzxx"), "test": list("zzzz")}
    task = CharLMTask(
        splits, ["x", "y", "z"], length=length if length < 10 else 4, eval_streams=streams
    )
    result = task.evaluate(ConstantModel([0.5, 0.25, 0.25]), "cpu")
    assert result["valid_bpc"] == pytest.approx(1.5)
    assert result["test_bpc"] == pytest.approx(2.0)  # z after z: -log2(0.25)
    assert result["bpc"] == result["valid_bpc"]
    assert result["loss"] == pytest.approx(1.5 * math.log(2))


def test_training_windows_are_consecutive_streams() -> None:
    splits = {
        "train": [str(i % 7) for i in range(200)],
        "valid": list("0123"),
        "test": list("0123"),
    }
    task = CharLMTask(splits, [str(i) for i in range(7)], length=5)
    gen = torch.Generator().manual_seed(0)
    x1, y1 = task.batch(4, gen)
    x2, _ = task.batch(4, gen)
    assert x1.shape == y1.shape == (4, 5)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # y is x shifted by one
    assert torch.equal(x2[:, 0], y1[:, -1])  # the next window continues each stream
    assert torch.equal(x1[1, 0], torch.tensor(50 % 7))  # stream 1 starts a quarter in
    # Wrap-around: streams of 50 tokens hold (50 - 1) // 5 = 9 windows, then start again.
    for _ in range(9 - 2):
        task.batch(4, gen)
    assert torch.equal(task.batch(4, gen)[0], x1)


def test_ptb_format_task_and_baselines(tmp_path: Path) -> None:
    assert {"ptb-char", "text"} <= set(list_tasks())
    write_ptb(tmp_path / "ptb-char")
    task = create_task("ptb-char", length=10, data_dir=tmp_path)  # finds the ptb-char/ subfolder
    assert task.name == "ptb-char" and task.stateful
    assert "<eos>" in task.vocab and task.spec.input_size == len(task.vocab)
    assert task.spec.token_input and task.spec.output_mode == "sequence"
    # The unigram baseline is no worse than uniform and positive.
    assert 0 < task.baseline <= task.uniform_bpc + 1e-9
    assert not task.is_solved(task.baseline)
    model = ConstantModel([1.0 / len(task.vocab)] * len(task.vocab))
    assert task.evaluate(model)["valid_bpc"] == pytest.approx(math.log2(len(task.vocab)))
    sliced = create_task(
        "ptb-char", length=10, data_dir=tmp_path / "ptb-char", train_tokens=100, eval_tokens=30
    )
    assert sliced.data["train"].numel() == 100 and sliced.data["valid"].numel() == 30


def test_real_model_evaluates_with_carried_state(tmp_path: Path) -> None:
    from rnnguard.models import SequenceModel

    write_ptb(tmp_path)
    task = create_task("ptb-char", length=8, data_dir=tmp_path, eval_streams=3)
    model = SequenceModel(task.spec, "lstm", hidden_size=8)
    model.train()
    result = task.evaluate(model, torch.device("cpu"))
    assert model.training  # restored
    assert set(result) == {"valid_bpc", "test_bpc", "bpc", "loss"}
    assert 0 < result["valid_bpc"] < 2 * math.log2(len(task.vocab))
    out, _ = model(task.batch(2, torch.Generator())[0])
    assert out.shape[-1] == len(task.vocab)


def test_any_text_file(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("hello world, this is a small text.\n" * 20, encoding="utf-8")
    task = create_task("text", length=16, path=path)
    assert task.name == "text" and "\n" in task.vocab
    n = sum(t.numel() for t in task.data.values())
    assert n == len(path.read_text(encoding="utf-8"))
    with pytest.raises(DataError, match="not found"):
        create_task("text", path=tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="path"):
        create_task("text")


def test_missing_data_names_dir_and_how_to_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError) as info:
        find_ptb_dir(tmp_path / "empty")
    msg = str(info.value)
    assert str(tmp_path / "empty") in msg and "rnnguard download ptb-char" in msg
    monkeypatch.delenv("RNNGUARD_DATA", raising=False)
    with pytest.raises(DataError, match="RNNGUARD_DATA"):
        find_ptb_dir(None)
    write_ptb(tmp_path / "env")
    monkeypatch.setenv("RNNGUARD_DATA", str(tmp_path / "env"))
    assert find_ptb_dir(None) == tmp_path / "env"


def test_bad_arguments(tmp_path: Path) -> None:
    splits = {"train": list("abab" * 10), "valid": list("ab"), "test": list("ab")}
    with pytest.raises(ConfigError, match="vocabulary"):
        CharLMTask({**splits, "valid": list("abc")}, ["a", "b"], length=4)
    with pytest.raises(ConfigError, match="length"):
        CharLMTask(splits, ["a", "b"], length=1)
    with pytest.raises(ConfigError, match="train_tokens"):
        CharLMTask(splits, ["a", "b"], length=4, train_tokens=0)
    task = CharLMTask(splits, ["a", "b"], length=4)
    with pytest.raises(ConfigError, match="batch_size"):
        task.batch(20, torch.Generator())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RNNGUARD_DATA"), reason="needs RNNGUARD_DATA")
def test_real_ptb_char_matches_published_counts() -> None:
    splits, vocab = load_ptb_char(None)
    assert len(vocab) == 50
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [5_017_483, 393_043, 442_424]


def test_ranks_read_different_streams_and_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    import rnnguard.tasks.text as text

    splits = {
        "train": [str(i % 7) for i in range(400)],
        "valid": list("0123"),
        "test": list("0123"),
    }
    vocab = [str(i) for i in range(7)]
    windows = []
    for rank in (0, 1):
        monkeypatch.setattr(text, "_rank_and_world", lambda r=rank: (r, 2))
        windows.append(CharLMTask(splits, vocab, length=5).batch(4, torch.Generator())[0])
    assert not torch.equal(windows[0], windows[1])
    assert torch.equal(windows[1][0, 0], torch.tensor(4 * 50 % 7))  # rank 1 starts at stream 4
    monkeypatch.setattr(text, "_rank_and_world", lambda: (0, 1))
    task = CharLMTask(splits, vocab, length=5)
    task.batch(4, torch.Generator())
    state = task.state_dict()
    expected = task.batch(4, torch.Generator())[0]
    fresh = CharLMTask(splits, vocab, length=5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.batch(4, torch.Generator())[0], expected)
