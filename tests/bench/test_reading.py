"""The plain-words reading under the benchmark table."""

from __future__ import annotations

from rnnguard.bench.reading import reading


def _summary(adding: dict[str, int], lm: dict[str, dict] | None = None) -> dict:
    searches = [
        {"recipe": r, "task": "adding", "effective_length": n, "complete": True}
        for r, n in adding.items()
    ]
    return {"searches": searches, "lm_results": lm or {}, "lm_task": "synthlang"}


def test_reading_names_the_contrast_when_it_shows() -> None:
    text = reading(_summary({"vanilla": 0, "lstm": 0, "gru": 50, "indrnn-relu": 20}))
    assert "`gru` reached the longest length (T=50)" in text
    assert "`vanilla`, `lstm` solved no length" in text
    assert (
        "The tanh RNN (`vanilla`) solved no length of the grid where `gru`, `indrnn-relu` went"
        in text
    )


def test_reading_names_recipes_whose_grid_the_preset_cut_short() -> None:
    summary = _summary({"vanilla": 0, "lstm-ln-clip": 1000})
    summary["searches"][1]["grid"] = [10, 100, 1000]
    summary["searches"].append(
        {"recipe": "lru", "task": "adding", "effective_length": 50, "complete": True,
         "grid": [10, 50]}
    )  # fmt: skip
    text = reading(summary)
    assert "`lstm-ln-clip` reached the longest length (T=1000)" in text
    assert "solved up to the longest length this preset tries them at: `lru` T=50" in text
    summary["searches"][1]["effective_length"] = 10  # now the capped recipe leads
    text = reading(summary)
    assert "`lru` reached the longest length (T=50, the longest this preset tries it at)" in text
    assert "tries them at" not in text


def test_reading_says_when_the_contrast_did_not_show() -> None:
    text = reading(_summary({"vanilla": 50, "gru": 20}))
    assert "The expected contrast did not show" in text


def test_reading_of_the_language_model_with_floor_and_memory() -> None:
    lm = {
        "gru": {
            "metrics": {"valid_bpc": 0.62, "floor_bpc": 0.412, "memory_d2": 0.7, "memory_d32": 0.73}
        },
        "vanilla": {"metrics": {"valid_bpc": 0.76, "floor_bpc": 0.412, "memory_d32": 0.0}},
        "broken": {"status": "error"},
    }
    text = reading(_summary({"vanilla": 0, "gru": 10}, lm))
    assert "`gru` reached the lowest BPC (0.620), 0.208 above the language's floor of 0.412" in text
    assert (
        "at distance 32, `gru` still held at least half of each key, `vanilla` next to none" in text
    )


def test_nothing_to_read() -> None:
    assert reading({"searches": [], "lm_results": {}}) == ""
