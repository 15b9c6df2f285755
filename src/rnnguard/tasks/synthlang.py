"""A built-in character-level language with long-range structure and an exact entropy rate.

The text is a stream of independent *segments*. A segment opens with one of ``keys`` upper-case
letters, continues with ``d`` filler symbols, and closes with the matching lower-case letter::

    C 3 1 4 1 5 9 2 6 c A 7 7 1 8 a ...

- the key is uniform over the ``keys`` letters;
- the distance ``d`` (fillers between the key and its close) is uniform over ``distances``;
- fillers follow a fixed sparse Markov chain: the first is uniform over the ``fillers`` symbols,
  each later one uniform over its predecessor's ``branching`` successors (drawn once from
  ``grammar_seed``);
- the close letter is fully determined by the key ``d + 1`` symbols earlier.

Segment boundaries can be read off the symbols, so by the renewal-reward theorem the entropy rate
(bits per character) is exactly ``H(segment) / E[segment length]`` with
``H(segment) = log2 keys + log2 |distances| + log2 fillers + (E[d] - 1) log2 branching``.
That is the floor no model can beat; BPC minus the floor is what a model failed to capture. A model
that forgets the key pays up to ``log2 keys`` extra bits on each close letter;
:meth:`SynthLangTask.memory_scores` measures per distance how much of the key a model still holds,
so a language-model result also says *how far back* a model remembers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnguard.errors import ConfigError
from rnnguard.tasks.registry import register_task
from rnnguard.tasks.text import CharLMTask

__all__ = ["SynthLangTask", "SynthLanguage"]

_KEY_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FILLER_SYMBOLS = "0123456789.,;:!?+-*/=#%&@~^<>()[]{}|$"
# Seeds of the three splits, offset from the task seed so no split repeats another.
_SPLIT_OFFSETS = {"train": 0, "valid": 1, "test": 2}


def _int_in(name: str, value: object, low: int, high: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not (low <= int(value) <= high)
    ):
        raise ConfigError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SynthLanguage:
    """The language's grammar; :meth:`sample` draws text from it, :meth:`entropy_rate` is exact."""

    keys: int = 8
    """Number of key letters (the long-range information: log2 keys bits per segment)."""
    distances: tuple[int, ...] = (5, 20, 80)
    """Possible numbers of fillers between a key and its close, drawn uniformly."""
    fillers: int = 8
    """Size of the filler alphabet."""
    branching: int = 2
    """Successors of each filler symbol in the filler Markov chain."""
    grammar_seed: int = 0
    """Seed of the filler successor table (the grammar, not the text)."""

    def __post_init__(self) -> None:
        _int_in("keys", self.keys, 2, len(_KEY_LETTERS))
        _int_in("fillers", self.fillers, 1, len(_FILLER_SYMBOLS))
        _int_in("branching", self.branching, 1, self.fillers)
        _int_in("grammar_seed", self.grammar_seed, 0, 2**63 - 1)
        dist = tuple(self.distances)
        if not dist or len(set(dist)) != len(dist):
            raise ConfigError(f"distances must be distinct positive ints, got {self.distances!r}")
        for d in dist:
            _int_in("each distance", d, 1, 1_000_000)
        object.__setattr__(self, "distances", tuple(sorted(int(d) for d in dist)))

    # ------------------------------------------------------------------ symbols
    @property
    def vocab(self) -> list[str]:
        """Symbols in token order: key letters, close letters, fillers."""
        keys = list(_KEY_LETTERS[: self.keys])
        return keys + [k.lower() for k in keys] + list(_FILLER_SYMBOLS[: self.fillers])

    def _close(self, key: int) -> int:
        return self.keys + key

    def successors(self) -> np.ndarray:
        """(fillers, branching) table: the fillers allowed after each filler."""
        rng = np.random.default_rng(self.grammar_seed)
        return np.stack(
            [rng.permutation(self.fillers)[: self.branching] for _ in range(self.fillers)]
        )

    # ------------------------------------------------------------------ exact quantities
    @property
    def mean_segment_length(self) -> float:
        return float(np.mean(self.distances)) + 2.0

    def segment_bits(self) -> float:
        """Entropy of one segment in bits."""
        mean_d = float(np.mean(self.distances))
        return (
            math.log2(self.keys)
            + math.log2(len(self.distances))
            + math.log2(self.fillers)
            + (mean_d - 1.0) * math.log2(self.branching)
        )

    def entropy_rate(self) -> float:
        """The language's entropy rate in bits per character: the best achievable BPC."""
        return self.segment_bits() / self.mean_segment_length

    def memoryless_rate(self) -> float:
        """BPC of the best predictor that knows everything but the key when the close comes."""
        return (self.segment_bits() + math.log2(self.keys)) / self.mean_segment_length

    def close_hazard(self, elapsed: int) -> float:
        """P(the segment closes now | ``elapsed`` fillers so far)."""
        remaining = [d for d in self.distances if d >= elapsed]
        return (elapsed in self.distances) / len(remaining) if remaining else 0.0

    # ------------------------------------------------------------------ sampling
    def sample(self, n_tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_tokens`` tokens of text from ``seed`` (starting at a segment boundary), and for each
        position the key distance ``d`` when it holds a close letter (0 elsewhere)."""
        n = _int_in("n_tokens", n_tokens, 1, 10**10)
        rng = np.random.default_rng(_int_in("seed", seed, 0, 2**63 - 1))
        succ = self.successors()
        dist = np.asarray(self.distances)
        # Enough segments to cover n tokens with certainty (each is at least min(d) + 2 long).
        n_seg = n // (int(dist.min()) + 2) + 1
        keys = rng.integers(self.keys, size=n_seg)
        lengths = dist[rng.integers(len(dist), size=n_seg)]
        # Filler chains of every segment advance together, one position at a time; a chain's
        # entries past its own length are drawn but never used.
        chains = np.empty((n_seg, int(lengths.max())), dtype=np.int64)
        chains[:, 0] = rng.integers(self.fillers, size=n_seg)
        picks = rng.integers(self.branching, size=chains.shape)
        for j in range(1, chains.shape[1]):
            chains[:, j] = succ[chains[:, j - 1], picks[:, j]]
        starts = np.concatenate([[0], np.cumsum(lengths + 2)[:-1]])
        total = int(starts[-1] + lengths[-1] + 2)
        tokens = np.empty(total, dtype=np.int64)
        close_dist = np.zeros(total, dtype=np.int64)
        tokens[starts] = keys
        tokens[starts + lengths + 1] = keys + self.keys
        close_dist[starts + lengths + 1] = lengths
        used = np.arange(chains.shape[1]) < lengths[:, None]
        filler_pos = (starts[:, None] + 1 + np.arange(chains.shape[1]))[used]
        tokens[filler_pos] = chains[used] + 2 * self.keys
        return torch.from_numpy(tokens[:n].copy()), torch.from_numpy(close_dist[:n].copy())

    def ideal_bits(self, tokens: torch.Tensor) -> torch.Tensor:
        """-log2 p of each token after the first under the true law, given all earlier tokens.

        ``tokens`` must start at a segment boundary (as :meth:`sample` makes them). The mean over a
        long sample estimates :meth:`entropy_rate`; a token the grammar forbids gets ``inf``.
        """
        seq = tokens.tolist()
        succ = [set(row.tolist()) for row in self.successors()]
        out = np.empty(max(len(seq) - 1, 0))
        key, elapsed, prev_filler = -1, 0, -1
        inf = float("inf")
        for i, tok in enumerate(seq):
            if i > 0:  # probability of tok given the state left by seq[:i]
                if key < 0:
                    p = 1.0 / self.keys if tok < self.keys else 0.0
                elif elapsed == 0:
                    p = 1.0 / self.fillers if tok >= 2 * self.keys else 0.0
                else:
                    h = self.close_hazard(elapsed)
                    if tok == self._close(key):
                        p = h
                    elif tok >= 2 * self.keys and tok - 2 * self.keys in succ[prev_filler]:
                        p = (1.0 - h) / self.branching
                    else:
                        p = 0.0
                out[i - 1] = -math.log2(p) if p > 0 else inf
            # advance the parse state
            if tok < self.keys:
                key, elapsed = tok, 0
            elif tok < 2 * self.keys:
                key = -1
            else:
                elapsed += 1
                prev_filler = tok - 2 * self.keys
        return torch.from_numpy(out)


class SynthLangTask(CharLMTask):
    """:class:`CharLMTask` on text generated from a :class:`SynthLanguage` (no download).

    ``evaluate`` adds the floor (``floor_bpc``), the excess over it (``excess_bpc``) and, per key
    distance ``d``, ``memory_d{d}`` (see :meth:`memory_scores`).
    Evaluation splits each split into parallel streams, so a stream's first (partial) segment
    cannot be predicted from context; with the default sizes that costs well under 0.01 BPC.
    """

    def __init__(
        self,
        language: SynthLanguage,
        length: int = 100,
        *,
        seed: int = 0,
        train_tokens: int = 200_000,
        eval_tokens: int = 20_000,
        **kwargs: Any,
    ) -> None:
        self.language = language
        sizes = {"train": train_tokens, "valid": eval_tokens, "test": eval_tokens}
        samples = {
            split: language.sample(_int_in(f"{split}_tokens", n, 2, 10**9), seed + off)
            for (split, off), n in zip(_SPLIT_OFFSETS.items(), sizes.values())
        }
        self.close_distance = {split: dist for split, (_, dist) in samples.items()}
        vocab = language.vocab
        splits = {split: [vocab[t] for t in toks.tolist()] for split, (toks, _) in samples.items()}
        super().__init__(splits, vocab, length, name="synthlang", **kwargs)
        self.floor = language.entropy_rate()

    def memory_scores(self, close_logp: torch.Tensor, split: str) -> dict[str, float]:
        """Per distance ``d``, the share of the key's bits the model holds at the close letters.

        ``close_logp`` (n_targets, keys) are the model's log-probabilities of the close letters at
        every position. Restricted to the close letters, so that *when* the segment closes does
        not count, the correct letter's probability ``q`` gives ``1 - log2(1/q) / log2 keys``:
        1 = remembers the key, 0 = no better than guessing, below 0 = confidently wrong.
        """
        lang = self.language
        targets = self.data[split][1:]
        dist = self.close_distance[split][1:]
        q = close_logp.log_softmax(-1)
        scores: dict[str, float] = {}
        for d in lang.distances:
            where = (dist == d).nonzero().flatten()
            if where.numel() == 0:
                continue
            correct = targets[where] - lang.keys  # index of the close letter among the closes
            bits = -q[where, correct] / math.log(2)
            scores[f"memory_d{d}"] = 1.0 - float(bits.mean()) / math.log2(lang.keys)
        return scores

    def evaluate(
        self, model: Any, device: torch.device | str = "cpu", splits: Sequence[str] | None = None
    ) -> dict[str, float]:
        """BPC per split (as :class:`CharLMTask`), the floor, the excess and memory by distance."""
        names = tuple(splits) if splits is not None else self.eval_splits
        closes = range(self.language.keys, 2 * self.language.keys)
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            bits, logp = self.split_token_bits(model, names[0], device, columns=closes)
            result = {f"{names[0]}_bpc": float(bits.mean())}
            for split in names[1:]:
                result[f"{split}_bpc"] = self.split_bpc(model, split, device)
        finally:
            if was_training:
                model.train()
        first = result[f"{names[0]}_bpc"]
        result.update(bpc=first, loss=first * math.log(2), floor_bpc=self.floor)
        result["excess_bpc"] = first - self.floor
        result.update(self.memory_scores(logp, names[0]))
        return result


@register_task(
    "synthlang",
    description="built-in character language with keys recalled 5/20/80 steps later; exact BPC floor",
)
def synthlang(
    length: int = 100,
    keys: int = 8,
    distances: Sequence[int] = (5, 20, 80),
    fillers: int = 8,
    branching: int = 2,
    seed: int = 0,
    train_tokens: int = 200_000,
    eval_tokens: int = 20_000,
    **kwargs: Any,
) -> SynthLangTask:
    """The built-in language (see the module docstring), generated from ``seed``."""
    language = SynthLanguage(keys, tuple(distances), fillers, branching)
    return SynthLangTask(
        language,
        length,
        seed=seed,
        train_tokens=train_tokens,
        eval_tokens=eval_tokens,
        **kwargs,
    )
