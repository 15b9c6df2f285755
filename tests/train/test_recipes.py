"""Recipes: registry, YAML round trip, overrides, validation, and the models they build."""

from __future__ import annotations

import pytest
import torch

from rnnguard.errors import ConfigError
from rnnguard.models import SequenceModel
from rnnguard.nn.registry import list_layers
from rnnguard.tasks import create_task
from rnnguard.train.config import GuardConfig, OptimConfig
from rnnguard.train.recipes import Recipe, get_recipe, list_recipes, register_recipe

REQUIRED = (
    "vanilla",
    "lstm",
    "lstm-ln-clip",
    "indrnn-relu",
    "gru",
    "residual-rnn",
    "safe-lstm",
    "lru",
    "transformer",
)


def test_required_recipes_registered_with_descriptions() -> None:
    recipes = list_recipes()
    for name in REQUIRED:
        assert name in recipes and recipes[name].description
        assert get_recipe(name).name == name


@pytest.mark.parametrize("name", REQUIRED)
def test_yaml_round_trip_and_build(name: str, tmp_path) -> None:
    recipe = get_recipe(name)
    path = tmp_path / "r.yaml"
    recipe.to_yaml(path)
    assert Recipe.from_yaml(path) == recipe
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    if recipe.layer not in list_layers():
        pytest.skip(f"layer {recipe.layer!r} not in this build")
    task = create_task("adding", length=12)
    model = recipe.replace(hidden_size=8).build_model(task.spec, length=task.length)
    out, _ = model(torch.randn(3, 12, 2))
    assert out.shape == (3, 12, 1)


def test_safe_lstm_total_forget_bias_is_one_not_two() -> None:
    recipe = get_recipe("safe-lstm")
    assert "effective forget bias is 2" in recipe.notes
    model = recipe.replace(hidden_size=6).build_model(create_task("copy", length=5).spec)
    h = 6
    for layer in range(recipe.num_layers):
        b_ih = getattr(model.core, f"bias_ih_l{layer}")
        b_hh = getattr(model.core, f"bias_hh_l{layer}")
        total = (b_ih + b_hh)[h : 2 * h]
        assert torch.allclose(total, torch.ones(h))


def test_indrnn_bound_binds_task_length() -> None:
    recipe = get_recipe("indrnn-relu").replace(hidden_size=4)
    assert recipe.layer_kwargs["max_length"] == "auto"
    model = recipe.build_model(create_task("adding", length=100).spec, length=100)
    u = model.core.weight_hh_l0.detach()
    assert u.ndim == 1 and float(u.abs().max()) <= 2 ** (1 / 100) + 1e-6
    with pytest.raises(ConfigError, match="max_length"):
        recipe.build_model(create_task("adding", length=100).spec)


def test_replace_dotted_nested_and_errors() -> None:
    base = get_recipe("lstm")
    r = base.replace(
        hidden_size=16,
        **{"optimizer.lr": 0.01, "layer_kwargs.layer_norm": True},
        guard={"mode": "norm", "max_norm": 2.0},
    )
    assert r.hidden_size == 16 and r.optimizer.lr == 0.01 and r.layer_kwargs == {"layer_norm": True}
    assert r.guard == GuardConfig(mode="norm", max_norm=2.0)
    assert base.hidden_size == 128 and base.optimizer.lr == 1e-3  # original untouched
    assert base.replace(optimizer=OptimConfig(name="sgd", lr=0.1)).optimizer.name == "sgd"
    with pytest.raises(ConfigError, match="hiden_size"):
        base.replace(hiden_size=3)
    with pytest.raises(ConfigError, match="lrr"):
        base.replace(**{"optimizer.lrr": 3})
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        base.replace(**{"optimizer.lr": -1})


@pytest.mark.parametrize(
    "data,word",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"amp": "fp8"}, "amp"),
        ({"layer": ""}, "layer"),
        ({"guard": {"mode": "clip"}}, "guard.mode"),
        ({"schedule": {"name": "step"}}, "schedule.name"),
        ({"colour": 1}, "colour"),
        ({"optimizer": {"betas": [0.9]}}, "betas"),
    ],
)
def test_bad_recipe_values(data: dict[str, object], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        Recipe.from_dict(data)


def test_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="recipe file"):
        Recipe.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        Recipe.from_yaml(bad)


def test_unknown_recipe_lists_known() -> None:
    with pytest.raises(ConfigError, match="lstm-ln-clip"):
        get_recipe("nope")


def test_register_recipe_decorator() -> None:
    @register_recipe("_test_tiny", description="tiny")
    def _tiny() -> Recipe:
        return Recipe(layer="gru", hidden_size=4)

    try:
        r = get_recipe("_test_tiny")
        assert r.name == "_test_tiny" and r.description == "tiny" and r.hidden_size == 4
    finally:
        from rnnguard.train import recipes

        recipes.RECIPES.unregister("_test_tiny")


def test_sequence_model_token_input_and_state() -> None:
    spec = create_task("copy", length=4).spec
    model = SequenceModel(spec, "lstm", hidden_size=8, embedding_dim=5)
    x = torch.randint(0, 10, (2, 24))
    out, state = model(x)
    assert out.shape == (2, 24, 10) and model.core.output_size == 8
    out2, _ = model(x[:, :3], state)  # continues from a carried state
    assert out2.shape == (2, 3, 10)
    with pytest.raises(ConfigError, match="hidden_size"):
        SequenceModel(spec, "lstm", hidden_size=0)
    with pytest.raises(ConfigError, match="layer"):
        SequenceModel(spec, "nolayer", hidden_size=4)


def test_chrono_init_binds_t_max_to_length() -> None:
    recipe = get_recipe("lstm").replace(init="chrono", hidden_size=4)
    model = recipe.build_model(create_task("adding", length=50).spec, length=50)
    b = (model.core.bias_ih_l0 + model.core.bias_hh_l0).detach()
    forget = b[4:8]
    # chrono: forget bias = log(U(1, T_max - 1)) lies in [0, log 49]
    assert bool((forget >= 0).all()) and bool((forget <= torch.log(torch.tensor(49.0))).all())
    assert float(forget.std()) > 0


def test_every_built_in_recipe_names_its_source_and_is_documented() -> None:
    from pathlib import Path

    from rnnguard.train.recipes import list_recipes

    doc = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text()
    for name, entry in list_recipes().items():
        assert entry.metadata.get("source"), f"{name} names no source"
        assert f"| `{name}` |" in doc, f"docs/recipes.md has no row for {name}"


def test_lru_is_a_stack_as_in_its_source() -> None:
    from rnnguard.train.recipes import get_recipe

    recipe = get_recipe("lru")
    assert recipe.num_layers >= 2  # one block cannot multiply before its linear recurrence sums
    model = recipe.build_model(create_task("adding", length=10).spec, length=10)
    assert len(model.core.cores) == recipe.num_layers
