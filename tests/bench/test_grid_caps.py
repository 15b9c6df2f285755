"""Per-recipe caps on a preset's length grid (``LengthSettings.longest``)."""

from __future__ import annotations

import dataclasses

from rnnguard.bench.grid import LengthSettings, get_preset
from rnnguard.bench.plan import plan_preset
from rnnguard.train.recipes import list_recipes


def test_a_capped_recipe_is_searched_up_to_its_cap_only() -> None:
    preset = dataclasses.replace(
        get_preset("quick"),
        length_tasks=(
            LengthSettings("adding", (10, 20, 50), steps=3, longest=(("lru", 20), ("gru", 5))),
        ),
        lm=None,
    )
    plan = plan_preset(preset, recipes=["vanilla", "lru", "gru"])
    grids = {(s.recipe, s.task): s.lengths for s in plan.searches}
    assert grids == {("vanilla", "adding"): (10, 20, 50), ("lru", "adding"): (10, 20)}
    # A capped recipe's runs keep the grid's horizon length, so their keys match uncapped runs.
    lru = next(s for s in plan.searches if s.recipe == "lru")
    assert lru.make_spec(10, 0).horizon_length == 50


def test_every_preset_caps_only_registered_recipes_and_keeps_a_recipe_solving_t_1000() -> None:
    known = set(list_recipes())
    for name in ("quick", "standard", "paper"):
        for settings in get_preset(name).length_tasks:
            assert {recipe for recipe, _ in settings.longest} <= known, (name, settings.task)
    adding = next(s for s in get_preset("standard").length_tasks if s.task == "adding")
    assert 1000 in adding.lengths_for("indrnn-relu") and 1000 in adding.lengths_for("lstm-ln-clip")


def test_the_report_states_the_whole_grid_and_each_cap() -> None:
    from rnnguard.bench.report_markdown import context_lines

    template = {"steps": 30, "batch_size": 5, "hidden_size": 8, "eval_every": 10, "eval_batches": 1}
    searches = [
        {"recipe": r, "task": "adding", "lengths": g, "template": template}
        for r, g in (("gru", [10, 20, 50]), ("lru", [10, 20]))
    ]
    summary = {"manifest": {"searches": searches}, "lm_task": None, "lm_note": "", "complete": True}
    (line,) = [x for x in context_lines(summary) if x.startswith("- adding")]
    assert line.startswith("- adding: lengths [10, 20, 50] (lru to T=20), 30 steps × batch 5")
