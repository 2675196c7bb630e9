"""Recipe overrides, validation and loading."""

import textwrap

import pytest

from recipes.digits import RECIPE as DIGITS
from workbench.errors import WorkbenchError
from workbench.recipe import (Recipe, apply_fast, apply_overrides, available_recipes,
                              load_recipe, parse_value, settable_keys)


def test_parse_value_reads_literals_and_words():
    assert parse_value("3") == 3
    assert parse_value("0.5") == 0.5
    assert parse_value("1e-3") == 1e-3
    assert parse_value("true") is True and parse_value("Off") is False
    assert parse_value("none") is None
    assert parse_value("adam") == "adam"
    assert parse_value("[1, 2]") == [1, 2]


def test_overrides_are_typed_and_leave_the_original_alone():
    recipe = apply_overrides(DIGITS, ["epochs=5", "learning_rate=0.01", "optimizer=sgd",
                                      "early_stopping.patience=2", "plateau.enabled=false",
                                      "export.formats=int8,float16", "verify.max_examples=none",
                                      "stages=train,evaluate"])
    assert recipe.epochs == 5 and isinstance(recipe.epochs, int)
    assert recipe.learning_rate == 0.01
    assert recipe.optimizer == "sgd"
    assert recipe.early_stopping.patience == 2
    assert recipe.plateau.enabled is False
    assert recipe.export.formats == ("int8", "float16")
    assert recipe.verify.max_examples is None
    assert recipe.stages == ("train", "evaluate")
    assert DIGITS.epochs == 40 and DIGITS.early_stopping.patience == 8
    assert DIGITS.plateau.enabled is True


def test_float_setting_accepts_an_integer_and_int_setting_rejects_a_fraction():
    assert apply_overrides(DIGITS, ["learning_rate=1"]).learning_rate == 1.0
    with pytest.raises(WorkbenchError, match="epochs expects a whole number"):
        apply_overrides(DIGITS, ["epochs=2.5"])
    with pytest.raises(WorkbenchError, match="expects true or false"):
        apply_overrides(DIGITS, ["jit_compile=maybe"])
    with pytest.raises(WorkbenchError, match="expects a number"):
        apply_overrides(DIGITS, ["learning_rate=fast"])


def test_free_form_mappings_take_any_key():
    recipe = apply_overrides(DIGITS, ["optimizer_config.beta_1=0.8",
                                      "schedule_config.warmup_steps=10"])
    assert recipe.optimizer_config == {"beta_1": 0.8}
    assert recipe.schedule_config == {"warmup_steps": 10}
    assert DIGITS.optimizer_config == {}


def test_an_optimizer_preset_comes_with_its_optimizer_then_the_other_sets_apply():
    recipe = Recipe(name="r", model=lambda hp: None, optimizer="muon",
                    optimizer_config={"adam_beta_2": 0.99}, learning_rate=0.02, batch_size=48,
                    optimizer_presets={"adamw": {"learning_rate": 1e-3, "batch_size": 12,
                                                 "optimizer_config": {"beta_2": 0.99},
                                                 "lm.warmup_steps": 100}})
    switched = apply_overrides(recipe, ["learning_rate=2e-3", "optimizer=adamw"])
    assert switched.optimizer == "adamw"
    assert switched.optimizer_config == {"beta_2": 0.99}  # replaced, not merged
    assert switched.batch_size == 12 and switched.lm.warmup_steps == 100
    assert switched.learning_rate == 2e-3  # the user's own --set wins, wherever it stands
    unchanged = apply_overrides(recipe, ["optimizer=sgd"])
    assert (unchanged.optimizer, unchanged.learning_rate, unchanged.batch_size) == ("sgd", 0.02, 48)
    assert recipe.optimizer == "muon" and recipe.batch_size == 48
    assert "optimizer_presets.*" not in settable_keys(recipe)
    # --fast's overrides win over the preset (a smoke run stays short), the user's over both.
    recipe.fast = {"batch_size": 2}
    fast = apply_overrides(recipe, ["optimizer=adamw", "learning_rate=5e-3"], fast=True)
    assert (fast.batch_size, fast.learning_rate, fast.lm.warmup_steps) == (2, 5e-3, 100)


def test_unknown_key_names_close_matches_first():
    with pytest.raises(WorkbenchError) as info:
        apply_overrides(DIGITS, ["epoch=3"])
    assert "unknown setting 'epoch'" in str(info.value)
    assert "did you mean 'epochs'" in str(info.value)
    with pytest.raises(WorkbenchError, match="early_stopping.patience"):
        apply_overrides(DIGITS, ["early_stopping.patiense=3"])


def test_malformed_assignments_and_code_fields_are_refused():
    with pytest.raises(WorkbenchError, match="key=value"):
        apply_overrides(DIGITS, ["epochs"])
    with pytest.raises(WorkbenchError, match="Python function"):
        apply_overrides(DIGITS, ["model=other"])
    with pytest.raises(WorkbenchError, match="no sub-settings"):
        apply_overrides(DIGITS, ["epochs.max=3"])


def test_validate_rejects_values_out_of_range():
    for assignment, message in [("epochs=0", "epochs"), ("batch_size=-1", "batch_size"),
                                ("learning_rate=0", "learning_rate"),
                                ("plateau.factor=1.5", "plateau.factor"),
                                ("export.formats=int4", "unknown export format"),
                                ("data_options={'test_fraction': 1.2}", "test_fraction")]:
        with pytest.raises(WorkbenchError, match=message):
            apply_overrides(DIGITS, [assignment]).validate()
    DIGITS.validate()


def test_fast_applies_the_recipes_fast_overrides():
    fast = apply_fast(DIGITS)
    assert fast.epochs == DIGITS.fast["epochs"] < DIGITS.epochs
    assert fast.verify.max_examples == DIGITS.fast["verify.max_examples"]


def test_settable_keys_cover_nested_sections():
    keys = settable_keys(DIGITS)
    assert "early_stopping.patience" in keys and "optimizer_config.*" in keys
    assert "model" not in keys


def test_loader_by_name_module_and_file(tmp_path):
    assert "digits" in available_recipes()
    assert load_recipe("digits") is DIGITS
    assert load_recipe("recipes.digits") is DIGITS
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""
        from workbench import Recipe
        RECIPE = Recipe(name="mine", model=lambda hp: None, epochs=3)
    """))
    loaded = load_recipe(str(path))
    assert isinstance(loaded, Recipe) and loaded.name == "mine" and loaded.epochs == 3


def test_loader_errors(tmp_path):
    with pytest.raises(WorkbenchError, match="unknown recipe 'digit'.*did you mean 'digits'"):
        load_recipe("digit")
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_recipe(str(tmp_path / "absent.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(WorkbenchError, match="defines no RECIPE"):
        load_recipe(str(empty))
    wrong = tmp_path / "wrong.py"
    wrong.write_text("RECIPE = {'name': 'x'}\n")
    with pytest.raises(WorkbenchError, match="expected a workbench.Recipe"):
        load_recipe(str(wrong))
    with pytest.raises(WorkbenchError, match="no module"):
        load_recipe("no_such_package.recipe")
