"""Compression on a small problem: pruning (unstructured, 2:4), QAT/PQAT, PTQ, clustering,
distillation, the stages that run them, and Keras 3 staying Keras 3 throughout."""

import json
import os

import keras
import numpy as np
import pytest

from conftest import run_cli, run_cli_cases
from workbench import deploy
from workbench.compression.clustering import cluster
from workbench.compression.distillation import distill
from workbench.compression.pruning import kernel_sparsity, prune
from workbench.compression.quantization import quantize_aware, quantize_post_training
from workbench.compression.training import FineTuning, accuracy
from workbench.errors import WorkbenchError
from workbench.supervised import compile_args


def family_loss(recipe):
    """The supervised family's loss for the recipe's task (what the compression stages hand
    the fine-tuning)."""
    return compile_args(recipe)["loss"]


# The environment before any compression ran in this process (pytest's per-test marker aside).
ENVIRONMENT_BEFORE = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}

FINE_TUNING = FineTuning(batch_size=32)
SLOW_FINE_TUNING = FineTuning(batch_size=32,
                              make_optimizer=lambda epochs, steps: keras.optimizers.Adam(1e-4))


def _data(seed=0, n=900):
    """Three classes of 6x6 images around fixed random centers: easy, but not trivially so."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    x = (centers[y] + rng.normal(scale=0.8, size=(n, 6, 6, 1))).astype("float32")
    return x[:700], y[:700], x[700:], y[700:]


def _model():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_in")(inputs)  # 1 input channel
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_mid")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture(scope="module")
def trained():
    x, y, x_test, y_test = _data()
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    return model, x, y, x_test, y_test


@pytest.fixture(scope="module")
def pruned(trained):
    model, x, y, _, _ = trained
    keras.utils.set_random_seed(0)
    return prune(model, x, y, target_sparsity=0.75, epochs=3, frequency=5,
                 fine_tuning=FINE_TUNING)


def _is_keras3_model(model):
    return isinstance(model, keras.Model) and type(model).__module__.startswith("keras.")


def test_prune_reaches_target_sparsity_in_every_layer_and_keeps_accuracy(trained, pruned):
    model, _, _, x_test, y_test = trained
    baseline = accuracy(model, x_test, y_test)
    assert baseline > 0.9
    assert set(pruned.layer_sparsity) == {"conv_in", "conv_mid", "hidden", "out"}
    measured = kernel_sparsity(pruned.model)  # read back from the Keras 3 model's own weights
    for name, fraction in pruned.layer_sparsity.items():
        assert fraction == pytest.approx(0.75, abs=0.02), name
        assert measured[name] == pytest.approx(fraction), name
    assert _is_keras3_model(pruned.model)
    assert accuracy(pruned.model, x_test, y_test) >= baseline - 0.03
    assert max(kernel_sparsity(model).values()) < 0.05, "the input model was changed"


def test_a_keras_3_optimizer_and_the_recipes_schedule_train_the_tf_keras_twin(trained):
    """The fine-tuning path: a Keras 3 optimizer updates a tf_keras model's tf.Variables."""
    import dataclasses
    import math

    import tf_keras

    from workbench.compression.training import fine_tune, tf_keras_twin
    from workbench.recipe import Recipe

    model, x, y, _, _ = trained
    recipe = Recipe(name="sgd", model=lambda hp: _model(), optimizer="sgd",
                    optimizer_config={"momentum": 0.9}, learning_rate=0.02,
                    schedule="cosine_decay", batch_size=32, epochs=50)
    fine_tuning = FineTuning.from_recipe(recipe, family_loss(recipe), learning_rate_factor=0.5)
    made = []

    def make_optimizer(epochs, steps_per_epoch):
        made.append(fine_tuning.make_optimizer(epochs, steps_per_epoch))
        return made[-1]

    twin = tf_keras_twin(model)
    assert isinstance(twin, tf_keras.Model) and not isinstance(twin, keras.Model)
    before = [v.numpy().copy() for v in twin.trainable_variables]
    losses = fine_tune(twin, x, y, epochs=2,
                       fine_tuning=dataclasses.replace(fine_tuning, make_optimizer=make_optimizer))
    optimizer = made[0]
    steps = 2 * math.ceil(len(x) / 32)
    assert isinstance(optimizer, keras.optimizers.SGD) and int(optimizer.iterations) == steps
    schedule = optimizer._learning_rate  # the recipe's schedule, spanning the fine-tuning only
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert schedule.decay_steps == steps and schedule.initial_learning_rate == pytest.approx(0.01)
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, twin.trainable_variables))
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_two_four_pattern_holds_and_layers_it_cannot_take_stay_dense(trained):
    model, x, y, x_test, y_test = trained
    result = prune(model, x, y, structure="2:4", epochs=2, fine_tuning=FINE_TUNING)
    assert "conv_in" in result.skipped_layers  # 1 input channel: no group of four
    assert set(result.layer_sparsity) == {"conv_mid", "hidden", "out"}
    for name in result.layer_sparsity:
        kernel = np.asarray(result.model.get_layer(name).kernel)
        # TF-MOT's grouping: consecutive input channels, for every output (and position).
        rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2])
        groups = rows.reshape(rows.shape[0], -1, 4)
        assert np.all(np.sum(groups == 0, axis=-1) >= 2), name
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)
    assert accuracy(result.model, x_test, y_test) > 0.85


def test_two_four_on_a_layer_it_cannot_apply_to_is_an_error(trained):
    model, x, y, _, _ = trained
    with pytest.raises(WorkbenchError, match="conv_in.*multiple of 4"):
        prune(model, x, y, structure="2:4", layers=("conv_in",), fine_tuning=FINE_TUNING)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_sparsity_outside_zero_one_is_an_error(trained, bad):
    model, x, y, _, _ = trained
    with pytest.raises(WorkbenchError, match=r"target sparsity must be in \[0, 1\)"):
        prune(model, x, y, target_sparsity=bad)


def test_unknown_or_unprunable_layer_names_are_errors(trained):
    model, x, y, _, _ = trained
    with pytest.raises(WorkbenchError, match="no such layer.*'hidden'"):
        prune(model, x, y, layers=("hiden",))
    with pytest.raises(WorkbenchError, match="flatten.*no weights to prune"):
        prune(model, x, y, layers=("flatten",), epochs=1)


class Doubling(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


def test_untranslatable_layer_is_a_clear_error_and_nothing_is_written(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, activation="softmax")(Doubling(name="doubling")(inputs))
    model = keras.Model(inputs, outputs)
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    with pytest.raises(WorkbenchError, match="layer 'doubling'.*built-in Keras layers"):
        prune(model, x, y)
    target = tmp_path / "qat.tflite"
    with pytest.raises(WorkbenchError, match="doubling"):
        quantize_aware(model, x, y, target)
    assert not target.exists()


def test_int8_without_representative_data_is_an_error_and_nothing_is_written(trained, tmp_path):
    model = trained[0]
    target = tmp_path / "int8.tflite"
    with pytest.raises(WorkbenchError, match="representative data"):
        quantize_post_training(model, target, "ptq_int8", representative=None)
    assert not target.exists()


def test_pqat_keeps_the_pruned_sparsity_in_the_int8_flatbuffer(trained, pruned, tmp_path):
    _, x, y, x_test, y_test = trained
    path = tmp_path / "pqat_int8.tflite"
    result = quantize_aware(pruned.model, x, y, path, preserve_sparsity=True, epochs=1,
                            fine_tuning=SLOW_FINE_TUNING)
    assert result.path == path and path.is_file()
    interpreter = deploy.make_interpreter(path)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    stored = deploy.weight_sparsity(path, min_elements=64)
    # Every pruned kernel with at least 64 weights is a constant of the flatbuffer.
    assert len(stored["weight_tensors"]) == 3
    for name, fraction in stored["weight_tensors"].items():
        assert fraction >= 0.74, name
    assert deploy.verify_tflite(path, x_test, y_test)["accuracy"] >= \
        accuracy(pruned.model, x_test, y_test) - 0.03


def test_clustering_leaves_at_most_n_values_per_kernel(trained):
    model, x, y, x_test, y_test = trained
    result = cluster(model, x, y, clusters=4, preserve_sparsity=False, epochs=1,
                     fine_tuning=SLOW_FINE_TUNING)
    assert set(result.unique_values) == {"conv_in", "conv_mid", "hidden", "out"}
    for name in result.unique_values:
        kernel = np.asarray(result.model.get_layer(name).kernel)
        assert len(np.unique(kernel)) <= 4, name
        assert result.unique_values[name] == len(np.unique(kernel))
    assert _is_keras3_model(result.model)
    assert accuracy(result.model, x_test, y_test) > 0.8


def test_clustering_a_pruned_model_keeps_its_zeros(trained, pruned):
    _, x, y, _, _ = trained
    result = cluster(pruned.model, x, y, clusters=8, layers=("hidden",), epochs=1,
                     fine_tuning=SLOW_FINE_TUNING)
    kernel = np.asarray(result.model.get_layer("hidden").kernel)
    assert len(np.unique(kernel)) <= 8
    assert np.mean(kernel == 0) >= pruned.layer_sparsity["hidden"] - 1e-6


def test_distilled_student_learns_from_the_teacher(trained):
    teacher, x, y, x_test, y_test = trained
    keras.utils.set_random_seed(1)
    student = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(8, activation="relu"),
                                keras.layers.Dense(3, activation="softmax")])
    before = accuracy(student, x_test, y_test)
    result = distill(teacher, student, x, y, alpha=0.1, temperature=3.0, epochs=8,
                     fine_tuning=FINE_TUNING)
    assert result.model is student
    assert accuracy(student, x_test, y_test) > max(0.85, before + 0.2)
    assert result.history["distillation_loss"][-1] > 0  # the teacher's term really counts
    assert result.history["distillation_loss"][-1] < result.history["distillation_loss"][0]
    assert teacher.trainable, "the teacher was left frozen"


def test_distill_needs_a_student(trained):
    from workbench.recipe import Recipe

    import workbench.supervised  # noqa: F401  (registers the family)
    from workbench.tasks import resolve_task

    recipe = Recipe(name="no_student", model=lambda hp: None, stages=("train", "distill"))
    with pytest.raises(WorkbenchError, match="needs a student"):
        resolve_task(recipe).check_stages(recipe, recipe.stages)


def test_compression_leaves_keras_3_and_the_environment_as_they_were(trained, pruned, tmp_path):
    model, x, y, _, _ = trained
    assert _is_keras3_model(pruned.model)  # pruning has run in this process
    quantize_aware(model, x[:64], y[:64], tmp_path / "qat.tflite", epochs=1)
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == \
        ENVIRONMENT_BEFORE
    assert keras.__version__.startswith("3.")
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _is_keras3_model(fresh) and fresh.layers[0].__module__.startswith("keras.src")


def test_stages_compose_in_a_run(tmp_path):
    """prune -> cluster -> quantize -> distill -> verify over one RunContext."""
    import tensorflow as tf

    import workbench.supervised  # noqa: F401  (registers the family)
    from workbench.context import RunContext, RunDir
    from workbench.tasks import task_of
    from workbench.data.arrays import from_arrays
    from workbench.recipe import apply_overrides, Recipe
    from workbench.stages import STAGES

    x, y, x_test, y_test = _data(seed=1)
    keras.utils.set_random_seed(0)
    teacher = _model()
    teacher.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    teacher.fit(x, y, epochs=6, verbose=0)
    recipe = apply_overrides(Recipe(name="tiny", model=lambda hp: _model(),
                                    student=lambda hp: keras.Sequential(
                                        [keras.Input((6, 6, 1)), keras.layers.Flatten(),
                                         keras.layers.Dense(3, activation="softmax")])),
                             ["prune.epochs=1", "cluster.epochs=1", "quantize.mode=ptq_dynamic",
                              "distill.epochs=2", "export.formats=int8",
                              "export.representative_examples=16", "verify.max_examples=50"])
    codes = np.concatenate([np.zeros(600, "int8"), np.ones(len(x) - 600, "int8"),
                            np.full(len(x_test), 2, "int8")])
    data = from_arrays(np.concatenate([x, x_test]), np.concatenate([y, y_test]),
                       name="synthetic", source="synthetic", seed=0, task="multiclass",
                       presplit=codes)
    ctx = RunContext(recipe=recipe, run_dir=RunDir(tmp_path), verbose=0, data=data,
                     model=teacher, strategy=tf.distribute.get_strategy(), task=task_of(data))
    for stage in ("prune", "cluster", "quantize", "distill", "verify"):
        ctx = STAGES[stage](ctx)
    assert list(ctx.exports) == ["pruned_int8", "clustered_int8", "ptq_dynamic", "student_int8"]
    verified = ctx.results["verify"]
    assert verified["pruned_int8"]["weight_sparsity"] >= 0.75
    assert verified["clustered_int8"]["weight_sparsity"] >= 0.75  # clustering kept the zeros
    # Each int8 file is as good as the Keras model it came from.
    for variant, stage in (("pruned_int8", "prune"), ("clustered_int8", "cluster"),
                           ("student_int8", "distill")):
        assert verified[variant]["accuracy"] == pytest.approx(
            ctx.results[stage]["test_accuracy"], abs=0.06), variant
    assert max(ctx.results["cluster"]["unique_values"].values()) <= recipe.cluster.clusters
    assert ctx.results["distill"]["parameters"] < ctx.results["distill"]["teacher_parameters"]
    for name in ("model_pruned.keras", "model_clustered.keras", "model_student.keras"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob(".partial-*"))


@pytest.mark.slow
def test_cli_digits_compress_fast_run(tmp_path):
    out = tmp_path / "run"
    result = run_cli("digits_compress", "--fast", "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed"
    layer_sparsity = report["stages"]["prune"]["layer_sparsity"]
    assert all(f == pytest.approx(0.8, abs=0.01) for f in layer_sparsity.values())
    verified = report["stages"]["verify"]
    assert set(verified) - {"seconds"} == {"float32", "int8", "pruned_float32", "pruned_int8",
                                           "pqat_int8"}
    assert verified["int8"]["weight_sparsity"] < 0.1
    assert verified["pqat_int8"]["weight_sparsity"] >= 0.79
    assert verified["pqat_int8"]["gzip_bytes"] < 0.5 * verified["int8"]["gzip_bytes"]
    assert "tflite pqat_int8" in result.stdout


def test_cli_bad_sparsity_exits_2_and_writes_nothing(tmp_path):
    """Through the bad-input driver (`run_cli_cases`), where more compression bad-input cases
    can share its one TensorFlow start; `-m slow` runs it in its own interpreter too."""
    out = tmp_path / "run"
    [result] = run_cli_cases(
        [["digits_compress", "--set", "prune.target_sparsity=1.5", "--out", out]], cwd=tmp_path)
    assert result["code"] == 2, result["stdout"] + result["stderr"]
    assert "prune.target_sparsity must be in [0, 1)" in result["stderr"]
    assert not out.exists() and not (tmp_path / "saved_models").exists()


@pytest.mark.slow
def test_cli_bad_sparsity_in_its_own_process(tmp_path):
    out = tmp_path / "run"
    result = run_cli("digits_compress", "--set", "prune.target_sparsity=1.5", "--out", out)
    assert result.returncode == 2
    assert "prune.target_sparsity must be in [0, 1)" in result.stderr
    assert not out.exists()
