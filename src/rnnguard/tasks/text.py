"""Character-level language modelling: PTB-char (Mikolov's files) or any text file.

Bits per character (BPC) is the mean cross-entropy in nats over every predicted token, divided by
ln 2. Training uses truncated BPTT: the training split is cut into ``batch_size`` parallel streams
and consecutive calls to :meth:`CharLMTask.batch` return consecutive windows of ``length`` steps,
so the trainer can carry the recurrent state across batches (``stateful = True``).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rnnguard.errors import ConfigError, DataError
from rnnguard.tasks.base import StepClassificationTask, TaskSpec, check_batch_size, check_length
from rnnguard.tasks.registry import register_task

__all__ = [
    "PTB_FILES",
    "CharLMTask",
    "bits_per_character",
    "find_ptb_dir",
    "load_ptb_char",
    "ptb_tokens",
    "read_text_corpus",
]

EOS = "<eos>"
PTB_FILES = ("train.txt", "valid.txt", "test.txt")
DATA_ENV = "RNNGUARD_DATA"
_HOW_TO_GET = (
    "get them with `rnnguard download ptb-char --data-dir DIR` (needs internet), or copy "
    "Mikolov's ptb.char.{train,valid,test}.txt there as train.txt/valid.txt/test.txt, and pass "
    f"--data-dir DIR or set {DATA_ENV}"
)


def bits_per_character(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> float:
    """BPC of ``logits`` (..., V) against integer ``targets`` (...): mean nats / ln 2."""
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index
    )
    return float(loss) / math.log(2)


def ptb_tokens(text: str) -> list[str]:
    """PTB-char tokens: whitespace-separated symbols plus one end-of-line token per line."""
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def find_ptb_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding PTB-char's three files: ``data_dir`` (or its ``ptb-char`` subfolder),
    else ``$RNNGUARD_DATA`` (or ``$RNNGUARD_DATA/ptb-char``). Raises DataError if none has them."""
    if data_dir is not None:
        candidates, origin = [Path(data_dir)], "--data-dir"
    elif os.environ.get(DATA_ENV):
        candidates, origin = [Path(os.environ[DATA_ENV])], f"${DATA_ENV}"
    else:
        raise DataError(
            f"PTB-char data dir not given (no --data-dir and {DATA_ENV} unset); {_HOW_TO_GET}"
        )
    for base in candidates:
        for folder in (base / "ptb-char", base):
            if all((folder / name).is_file() for name in PTB_FILES):
                return folder
    missing = [n for n in PTB_FILES if not (candidates[0] / n).is_file()]
    raise DataError(
        f"PTB-char files {missing} not found in {str(candidates[0])!r} (from {origin}) "
        f"nor its ptb-char/ subfolder; {_HOW_TO_GET}"
    )


def load_ptb_char(
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """PTB-char token lists per split and the vocabulary (sorted symbols of the training split)."""
    folder = find_ptb_dir(data_dir)
    splits = {
        name.removesuffix(".txt"): ptb_tokens((folder / name).read_text(encoding="utf-8"))
        for name in PTB_FILES
    }
    return splits, sorted(set(splits["train"]))


def read_text_corpus(
    path: str | os.PathLike[str], fractions: tuple[float, float] = (0.9, 0.05)
) -> tuple[dict[str, list[str]], list[str]]:
    """Any UTF-8 text file as characters, split into train/valid/test by position."""
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"text file {str(file)!r} not found; pass --text with a readable UTF-8 file"
        )
    chars = list(file.read_text(encoding="utf-8"))
    n = len(chars)
    n_train, n_valid = int(n * fractions[0]), int(n * fractions[1])
    if n_train < 2 or n_valid < 2 or n - n_train - n_valid < 2:
        raise ConfigError(
            f"text file must have enough characters for train/valid/test splits, got {n} in {str(file)!r}"
        )
    splits = {
        "train": chars[:n_train],
        "valid": chars[n_train : n_train + n_valid],
        "test": chars[n_train + n_valid :],
    }
    return splits, sorted(set(chars))


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside torch.distributed)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CharLMTask(StepClassificationTask):
    """Next-symbol prediction over a token stream, scored in bits per character.

    ``batch`` returns consecutive ``length``-step windows of ``batch_size`` parallel training streams
    (x: (B, T) tokens, y: the same shifted by one); ``evaluate`` scores the whole valid/test splits
    (or their first ``eval_tokens`` tokens) with the state carried through each stream.

    Args:
        splits: token lists ``{"train": [...], "valid": [...], "test": [...]}``.
        vocab: the symbols; tokens outside it are an error.
        length: truncated-BPTT window.
        train_tokens: use only the first this many training tokens (a slice for quick runs).
        eval_tokens: score only the first this many valid/test tokens (None: all).
        eval_splits: splits ``evaluate`` scores by default.
        eval_streams: parallel streams used by ``evaluate``.
    """

    metric_name = "bpc"
    higher_is_better = False
    stateful = True

    def __init__(
        self,
        splits: Mapping[str, Sequence[str]],
        vocab: Sequence[str],
        length: int = 100,
        *,
        name: str = "text",
        train_tokens: int | None = None,
        eval_tokens: int | None = None,
        eval_splits: Sequence[str] = ("valid", "test"),
        eval_streams: int = 16,
        solved_threshold: float = 0.0,
    ) -> None:
        self.length = check_length(length)
        self.name = name
        self.vocab = list(vocab)
        if len(self.vocab) < 2:
            raise ConfigError(f"vocab must have at least 2 symbols, got {len(self.vocab)}")
        for key, value in (("train_tokens", train_tokens), ("eval_tokens", eval_tokens)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 2
            ):
                raise ConfigError(f"{key} must be an int >= 2 or None, got {value!r}")
        self.eval_streams = check_batch_size(eval_streams)
        missing = [s for s in ("train", *eval_splits) if s not in splits]
        if missing:
            raise ConfigError(f"splits must contain {missing}, got keys {sorted(splits)}")
        self.eval_splits = tuple(eval_splits)
        index = {s: i for i, s in enumerate(self.vocab)}
        self.data: dict[str, torch.Tensor] = {}
        for split, tokens in splits.items():
            limit = train_tokens if split == "train" else eval_tokens
            tokens = list(tokens[:limit] if limit is not None else tokens)
            unknown = sorted({t for t in tokens if t not in index})
            if unknown:
                raise ConfigError(
                    f"split {split!r} has symbols outside the vocabulary: {unknown[:5]}"
                )
            self.data[split] = torch.tensor([index[t] for t in tokens], dtype=torch.long)
        if self.data["train"].numel() < self.length + 2:
            raise ConfigError(
                f"training split must be longer than length+1={self.length + 1} tokens, "
                f"got {self.data['train'].numel()}"
            )
        v = len(self.vocab)
        self.spec = TaskSpec(input_size=v, output_size=v, token_input=True, output_mode="sequence")
        self.solved_threshold = solved_threshold
        # Trivial baseline: the unigram model fitted on train, scored on valid (bits per char).
        counts = Counter(self.data["train"].tolist())
        total = sum(counts.values())
        ref = self.data.get("valid", self.data["train"])
        self.baseline = float(
            -sum(math.log2((counts.get(t, 0) + 1) / (total + v)) for t in ref.tolist())
            / ref.numel()
        )
        self.uniform_bpc = math.log2(v)
        self._streams: torch.Tensor | None = None
        self._cursor = 0

    # ------------------------------------------------------------------ training stream
    def batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(x, y)`` window (B, length) of the training streams (wraps around at the end)."""
        b = check_batch_size(batch_size)
        rank, world = _rank_and_world()
        data = self.data["train"]
        # Under torchrun every rank reads its own b of the world * b streams (different batches).
        n_streams = b * world
        per_stream = data.numel() // n_streams
        if per_stream < self.length + 1:
            raise ConfigError(
                f"batch_size must leave each stream > length={self.length} tokens, got {n_streams} "
                f"streams of {per_stream} tokens"
            )
        if self._streams is None or self._streams.shape[0] != b:
            all_streams = data[: per_stream * n_streams].view(n_streams, per_stream)
            self._streams = all_streams[rank * b : (rank + 1) * b]
            self._cursor = 0
        if self._cursor + self.length + 1 > per_stream:
            self._cursor = 0  # next epoch over the training text
        i = self._cursor
        self._cursor += self.length
        window = self._streams[:, i : i + self.length + 1]
        return window[:, :-1].clone(), window[:, 1:].clone()

    def state_dict(self) -> dict[str, Any]:
        """Position in the training stream (for exact resume)."""
        return {
            "cursor": self._cursor,
            "streams": None if self._streams is None else self._streams.shape[0],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the training stream where :meth:`state_dict` left it."""
        self._streams = None
        if state.get("streams"):
            self.batch(int(state["streams"]), torch.Generator())  # rebuilds this rank's streams
        self._cursor = int(state.get("cursor", 0))

    def metric(self, output: torch.Tensor, y: torch.Tensor) -> float:
        return float(self.loss(output, y).detach()) / math.log(2)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def split_token_bits(
        self,
        model: Any,
        split: str,
        device: torch.device | str = "cpu",
        columns: Sequence[int] | None = None,
    ) -> Any:
        """Bits ``model`` spends on each token of a split after the first (state carried along).

        With ``columns``, returns ``(bits, logp)``: also the model's log-probabilities (nats) of
        those vocabulary entries at every position, shape ``(n_targets, len(columns))``.
        """
        if split not in self.data:
            raise ConfigError(f"split must be one of {sorted(self.data)}, got {split!r}")
        data = self.data[split]
        n_targets = data.numel() - 1
        if n_targets < 1:
            raise ConfigError(f"split {split!r} must have at least 2 tokens, got {data.numel()}")
        streams = min(self.eval_streams, n_targets)
        per = math.ceil(n_targets / streams)
        # Stream j predicts targets j*per+1 .. (j+1)*per; padding targets are ignored (-100).
        x = torch.zeros(streams * per, dtype=torch.long)
        y = torch.full((streams * per,), -100, dtype=torch.long)
        x[:n_targets] = data[:-1]
        y[:n_targets] = data[1:]
        x, y = x.view(streams, per), y.view(streams, per)
        bits = torch.zeros(streams, per, dtype=torch.float64)
        logp = torch.zeros(streams, per, 0 if columns is None else len(columns))
        state = None
        for i in range(0, per, self.length):
            xb = x[:, i : i + self.length].to(device)
            yb = y[:, i : i + self.length].to(device)
            out, state = model(xb, state) if state is not None else model(xb)
            nats = torch.nn.functional.cross_entropy(
                out.float().flatten(0, 1), yb.flatten(), ignore_index=-100, reduction="none"
            )
            bits[:, i : i + self.length] = nats.view(yb.shape).double().cpu() / math.log(2)
            if columns is not None:
                logp[:, i : i + self.length] = out.float().log_softmax(-1)[..., list(columns)].cpu()
        if columns is None:
            return bits.flatten()[:n_targets]
        return bits.flatten()[:n_targets], logp.flatten(0, 1)[:n_targets]

    def split_bpc(self, model: Any, split: str, device: torch.device | str = "cpu") -> float:
        """BPC of ``model`` on a whole split: every token after the first is predicted once."""
        return float(self.split_token_bits(model, split, device).mean())

    def evaluate(
        self, model: Any, device: torch.device | str = "cpu", splits: Sequence[str] | None = None
    ) -> dict[str, float]:
        """``{"<split>_bpc": ...}`` for each split, plus ``bpc`` and ``loss`` (nats) of the first."""
        names = tuple(splits) if splits is not None else self.eval_splits
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            result = {f"{s}_bpc": self.split_bpc(model, s, device) for s in names}
        finally:
            if was_training:
                model.train()
        first = result[f"{names[0]}_bpc"]
        result["bpc"] = first
        result["loss"] = first * math.log(2)
        return result

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v.numel()}" for k, v in self.data.items())
        return f"CharLMTask(name={self.name!r}, length={self.length}, vocab={len(self.vocab)}, {sizes})"


@register_task("ptb-char", description="PTB character-level language model (BPC), from --data-dir")
def ptb_char(
    length: int = 100,
    data_dir: str | os.PathLike[str] | None = None,
    train_tokens: int | None = None,
    eval_tokens: int | None = None,
    **kwargs: Any,
) -> CharLMTask:
    """PTB-char (50 symbols) read from ``data_dir`` or ``$RNNGUARD_DATA``."""
    splits, vocab = load_ptb_char(data_dir)
    return CharLMTask(
        splits,
        vocab,
        length,
        name="ptb-char",
        train_tokens=train_tokens,
        eval_tokens=eval_tokens,
        **kwargs,
    )


@register_task("text", description="character-level language model on any UTF-8 text file (BPC)")
def text_file(
    length: int = 100,
    path: str | os.PathLike[str] | None = None,
    train_tokens: int | None = None,
    eval_tokens: int | None = None,
    **kwargs: Any,
) -> CharLMTask:
    """Characters of the text file ``path``, split 90/5/5 into train/valid/test."""
    if path is None:
        raise ConfigError("path must name a text file for the 'text' task (--text FILE), got None")
    splits, vocab = read_text_corpus(path)
    return CharLMTask(
        splits,
        vocab,
        length,
        name="text",
        train_tokens=train_tokens,
        eval_tokens=eval_tokens,
        **kwargs,
    )
