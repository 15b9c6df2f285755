"""The built-in synthetic language: exact entropy, seed-exact text, memory scores."""

from __future__ import annotations

import math

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.tasks import create_task
from rnnguard.tasks.synthlang import SynthLangTask, SynthLanguage


def test_entropy_rate_matches_monte_carlo_of_the_true_predictor() -> None:
    lang = SynthLanguage(keys=4, distances=(3, 7, 12), fillers=6, branching=2)
    tokens, _ = lang.sample(60_000, seed=5)
    bits = lang.ideal_bits(tokens)
    assert torch.isfinite(bits).all(), "the sampler produced a token the grammar forbids"
    # Mean over whole segments only, so the estimate is a ratio of iid segment sums.
    mc, se = float(bits.mean()), float(bits.std()) / math.sqrt(bits.numel())
    # Segments are short (<= 14 tokens), so tokens are close to independent at this scale.
    assert abs(mc - lang.entropy_rate()) < 6 * se + 2e-3, (mc, lang.entropy_rate(), se)


def test_formula_by_hand_for_a_tiny_grammar() -> None:
    # keys 2 (1 bit), one distance 1 (0 bits), fillers 4 (2 bits): 3 bits per 3-token segment.
    lang = SynthLanguage(keys=2, distances=(1,), fillers=4, branching=1)
    assert lang.entropy_rate() == pytest.approx(1.0)
    assert lang.memoryless_rate() == pytest.approx(4 / 3)
    tokens, dist = lang.sample(9, seed=0)
    assert lang.vocab[:4] == ["A", "B", "a", "b"]
    keys, closes = tokens[0::3], tokens[2::3]
    assert torch.equal(closes, keys + 2)  # each close letter matches its key
    assert dist.tolist() == [0, 0, 1] * 3


def test_text_is_seed_exact_and_seeds_differ() -> None:
    lang = SynthLanguage()
    a, _ = lang.sample(5_000, seed=1)
    b, _ = lang.sample(5_000, seed=1)
    c, _ = lang.sample(5_000, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_distances_and_keys_are_uniform() -> None:
    lang = SynthLanguage(keys=4, distances=(2, 5, 9))
    tokens, dist = lang.sample(80_000, seed=3)
    counts = torch.bincount(dist[dist > 0])[[2, 5, 9]].double()
    assert (counts / counts.sum() - 1 / 3).abs().max() < 0.03
    keys = tokens[tokens < 4]
    freq = torch.bincount(keys, minlength=4).double() / keys.numel()
    assert (freq - 0.25).abs().max() < 0.03


def test_task_reports_floor_excess_and_memory() -> None:
    task = create_task("synthlang", length=20, train_tokens=3_000, eval_tokens=2_000)
    assert isinstance(task, SynthLangTask)
    keys, vocab = task.language.keys, len(task.vocab)

    class Model(torch.nn.Module):
        """Uniform over the vocabulary, or (``peek``) sure of each close letter's key."""

        def __init__(self, peek: bool) -> None:
            super().__init__()
            self.peek, self.pos = peek, 0

        def forward(self, x: torch.Tensor, state: object = None) -> tuple[torch.Tensor, None]:
            logits = torch.zeros(*x.shape, vocab)
            if self.peek:  # cheat: read the next target of stream 0's split layout
                targets = task.data["valid"][1:]
                per = -(-targets.numel() // x.shape[0])
                for b in range(x.shape[0]):
                    for t in range(x.shape[1]):
                        j = b * per + self.pos + t
                        if j < targets.numel() and keys <= int(targets[j]) < 2 * keys:
                            logits[b, t, int(targets[j])] = 50.0
            self.pos += x.shape[1]
            return logits, None

    result = task.evaluate(Model(peek=False), splits=("valid",))
    assert result["bpc"] == pytest.approx(math.log2(vocab), abs=1e-6)
    assert result["floor_bpc"] == pytest.approx(task.language.entropy_rate())
    assert result["excess_bpc"] == pytest.approx(result["bpc"] - result["floor_bpc"])
    for d in task.language.distances:  # uniform over the close letters: no memory
        assert result[f"memory_d{d}"] == pytest.approx(0.0, abs=1e-6)
    result = task.evaluate(Model(peek=True), splits=("valid",))
    for d in task.language.distances:
        assert result[f"memory_d{d}"] == pytest.approx(1.0, abs=1e-6)


def test_memory_score_rewards_the_right_letter_only() -> None:
    lang = SynthLanguage(keys=4, distances=(4, 9))
    task = SynthLangTask(lang, length=10, train_tokens=2_000, eval_tokens=3_000)
    targets = task.data["valid"][1:]
    n = targets.numel()
    right = torch.full((n, 4), -20.0)
    wrong = torch.full((n, 4), -20.0)
    is_close = (targets >= 4) & (targets < 8)
    right[is_close, targets[is_close] - 4] = 0.0
    wrong[is_close, (targets[is_close] - 4 + 1) % 4] = 0.0
    assert task.memory_scores(right, "valid") == pytest.approx({"memory_d4": 1.0, "memory_d9": 1.0})
    half = task.memory_scores(torch.zeros(n, 4), "valid")  # uniform among the 4 closes
    assert half == pytest.approx({"memory_d4": 0.0, "memory_d9": 0.0})
    assert all(v < -1 for v in task.memory_scores(wrong, "valid").values())


@pytest.mark.parametrize(
    "kwargs",
    [{"keys": 1}, {"distances": ()}, {"distances": (3, 3)}, {"distances": (0,)}, {"branching": 9}],
)
def test_bad_grammar_is_refused_by_name(kwargs: dict) -> None:
    name = next(iter(kwargs)).rstrip("s") if "distances" in kwargs else next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        SynthLanguage(**kwargs)
