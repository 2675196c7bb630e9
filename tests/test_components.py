"""Components selected by name from a recipe."""

import keras
import numpy as np
import pytest

from recipes.digits import RECIPE as DIGITS
from workbench import components
from workbench.errors import WorkbenchError
from workbench.recipe import apply_overrides
from workbench.training import check_names, learning_rate_for


def test_keras_optimizers_resolve_by_their_usual_names():
    assert components.OPTIMIZERS.get("adam") is keras.optimizers.Adam
    assert components.OPTIMIZERS.get("AdamW") is keras.optimizers.AdamW
    assert components.OPTIMIZERS.get("schedule_free_adamw") is keras.optimizers.ScheduleFreeAdamW
    optimizer = components.build_optimizer("sgd", {"momentum": 0.9, "nesterov": True}, 0.05)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov and float(optimizer.learning_rate) == pytest.approx(0.05)


def test_unknown_names_and_arguments_are_errors_that_list_choices():
    with pytest.raises(WorkbenchError, match="unknown optimizer 'adamm'.*did you mean 'adam'"):
        components.OPTIMIZERS.get("adamm")
    with pytest.raises(WorkbenchError, match="takes no argument 'beta1'.*beta_1"):
        components.build_optimizer("adam", {"beta1": 0.8}, 1e-3)
    with pytest.raises(WorkbenchError, match="unknown schedule"):
        components.SCHEDULES.get("cosine_decayy")


def test_base_class_keywords_are_accepted():
    optimizer = components.build_optimizer("adam", {"clipnorm": 1.0}, 1e-3)
    assert optimizer.clipnorm == 1.0


def test_schedule_fills_learning_rate_and_total_steps():
    recipe = apply_overrides(DIGITS, ["schedule=cosine", "epochs=4", "learning_rate=0.1"])
    schedule = learning_rate_for(recipe, recipe.epochs * 10)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-7)
    assert float(schedule(20)) == pytest.approx(0.05, rel=1e-5)


def test_check_names_catches_bad_optimizer_settings_before_any_work():
    check_names(DIGITS, 10)
    with pytest.raises(WorkbenchError, match="unknown optimizer"):
        check_names(apply_overrides(DIGITS, ["optimizer=adan"]), 10)
    with pytest.raises(WorkbenchError, match="takes no argument"):
        check_names(apply_overrides(DIGITS, ["optimizer_config.momentun=0.9",
                                                        "optimizer=sgd"]), 10)


def test_callbacks_resolve_workbench_first_then_keras():
    assert components.CALLBACKS.get("tensorboard") is keras.callbacks.TensorBoard
    stopping = components.CALLBACKS.get("early_stopping")
    assert issubclass(stopping, keras.callbacks.EarlyStopping)
    assert not np.isnan(stopping().patience)


def test_workbench_schedules_by_name_get_peak_rate_and_length_from_the_recipe():
    recipe = apply_overrides(DIGITS, ["schedule=warmup_stable_decay", "epochs=10",
                                      "learning_rate=0.01", "schedule_config.warmup_steps=10"])
    schedule = learning_rate_for(recipe, recipe.epochs * 10)
    assert float(schedule(0)) == pytest.approx(0.0, abs=1e-9)  # warmup starts at its own default
    assert float(schedule(50)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


def test_warmup_wrapper_builds_its_inner_schedule_over_the_remaining_steps():
    recipe = apply_overrides(DIGITS, ["schedule=warmup", "epochs=10", "learning_rate=0.1",
                                      "schedule_config.warmup_steps=20",
                                      "schedule_config.schedule=cosine_decay"])
    schedule = learning_rate_for(recipe, recipe.epochs * 10)
    assert float(schedule(10)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(20)) == pytest.approx(0.1, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)  # ends with the training


def test_a_regularizer_by_name_lands_on_every_kernel_and_in_the_loss():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
                              keras.layers.Dense(2, name="b")])
    assert components.apply_regularizer(model, "l2", {"l2": 0.5}) == ["a", "b"]
    expected = sum(0.5 * np.sum(np.square(layer.kernel.numpy())) for layer in model.layers)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert model.layers[0].get_config()["kernel_regularizer"] is not None
    components.apply_regularizer(model, "group_lasso", {"strength": 0.1})
    assert type(model.layers[1].kernel_regularizer).__name__ == "GroupLasso"
    with pytest.raises(WorkbenchError, match="unknown regularizer 'l3'"):
        components.apply_regularizer(model, "l3", {})
