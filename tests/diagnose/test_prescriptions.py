"""The cure table and the prescription text read from the recipes."""

from __future__ import annotations

import re

from rnnguard.diagnose.findings import VERDICTS
from rnnguard.diagnose.prescriptions import CURES, ORIGINAL, prescribe, recipe_settings
from rnnguard.train.config import GuardConfig, OptimConfig
from rnnguard.train.recipes import RECIPES, Recipe, get_recipe, register_recipe


def test_every_cure_names_a_registered_recipe_and_a_known_verdict() -> None:
    assert set(CURES) <= set(VERDICTS) - {"healthy"}
    for cures in CURES.values():
        for cure in cures:
            assert cure.recipe == ORIGINAL or cure.recipe in RECIPES, cure.recipe


def test_cure_prose_restates_no_recipe_value() -> None:
    # The numbers (clip thresholds, biases, rates) come from the recipes, never from the prose.
    for cures in CURES.values():
        for cure in cures:
            assert not re.search(r"\d", cure.why), cure.why


def test_settings_are_read_from_the_recipe() -> None:
    text = recipe_settings(get_recipe("lstm-ln-clip"))
    assert "layer_norm" in text and "forget_bias 1" in text and "clip norm 5" in text
    assert "AdamW" in text and "init safe" in text
    assert "no clipping" in recipe_settings(get_recipe("lstm"))


def test_a_prescription_follows_its_recipe_when_the_recipe_changes() -> None:
    @register_recipe("_test_cure_probe")
    def _probe() -> Recipe:
        return Recipe(
            layer="gru",
            optimizer=OptimConfig(name="adam", lr=0.0125),
            guard=GuardConfig(mode="value", clip_value=0.375),
        )

    try:
        cured = prescribe(["exploding"], 50, original="_test_cure_probe")
        (same,) = [p for p in cured if p.recipe == "_test_cure_probe"]
        # The original recipe with the cure's overrides: norm clipping at 1, AdamW, safe init;
        # the untouched learning rate still shows the recipe's own value.
        assert "clip norm 1" in same.settings and "AdamW lr 0.0125" in same.settings
        assert "init safe" in same.settings and "0.375" not in same.settings
    finally:
        RECIPES.unregister("_test_cure_probe")


def test_conditions_choose_the_cures_by_length() -> None:
    short = prescribe(["vanishing"], 100)
    assert short[0].recipe == "lstm-ln-clip" and short[0].overrides == {}
    assert "chrono" not in short[0].settings
    long = prescribe(["vanishing"], 300)
    assert "init chrono (t_max=auto)" in long[0].settings
    assert all(p.recipe != "indrnn-relu" for p in short)
