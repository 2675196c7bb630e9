"""Compression on the real digits CNN, and every compression stage through the command line."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_cli
from workbench import deploy
from workbench.compression import FineTuning, kernel_sparsity, prune, quantize_aware
from workbench.compression.training import accuracy
from workbench.supervised import compile_args


def family_loss(recipe):
    """The supervised family's loss for the recipe's task (what the compression stages hand
    the fine-tuning)."""
    return compile_args(recipe)["loss"]


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    from recipes.digits_compress import RECIPE
    import workbench.supervised  # noqa: F401  (registers the family)
    from workbench.context import RunContext, RunDir
    from workbench.tasks import task_of
    from workbench.data.arrays import load_digits
    from workbench.recipe import apply_overrides
    from workbench.stages.train import train

    recipe = apply_overrides(RECIPE, ["epochs=20"])
    keras.utils.set_random_seed(0)
    data = load_digits(seed=0)
    ctx = RunContext(recipe=recipe, run_dir=RunDir(tmp_path_factory.mktemp("train")), verbose=0,
                     data=data, strategy=tf.distribute.get_strategy(), task=task_of(data))
    return recipe, train(ctx).model, data


def _arrays(dataset):
    x, y = zip(*dataset.as_numpy_iterator())
    return np.stack(x), np.stack(y)


def test_digits_pruned_to_80_percent_keeps_accuracy_and_pqat_keeps_the_zeros(digits_model,
                                                                             tmp_path):
    recipe, model, data = digits_model
    (x_train, y_train), (x_test, y_test) = _arrays(data.train), _arrays(data.test)
    baseline = accuracy(model, x_test, y_test)
    keras.utils.set_random_seed(0)
    result = prune(model, x_train, y_train, target_sparsity=0.8, epochs=4,
                   fine_tuning=FineTuning.from_recipe(recipe, family_loss(recipe)))
    assert all(f == pytest.approx(0.8, abs=0.005) for f in kernel_sparsity(result.model).values())
    assert accuracy(result.model, x_test, y_test) >= baseline - 0.015
    path = tmp_path / "pqat.tflite"
    quantize_aware(result.model, x_train, y_train, path, preserve_sparsity=True,
                   epochs=2, fine_tuning=FineTuning.from_recipe(recipe, family_loss(recipe), 0.1))
    stored = deploy.weight_sparsity(path)
    assert stored["weight_sparsity"] >= 0.795
    assert deploy.verify_tflite(path, x_test, y_test)["accuracy"] >= baseline - 0.015


def test_cli_runs_distill_cluster_and_post_training_quantization(tmp_path):
    out = tmp_path / "run"
    result = run_cli("digits_compress", "--fast", "--quiet", "--out", out, "--stages",
                     "train,evaluate,distill,cluster,quantize,verify",
                     "--set", "quantize.mode=ptq_float16", "--set", "cluster.clusters=8")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert list(report["exports"]) == ["student_float32", "student_int8", "clustered_float32",
                                       "clustered_int8", "ptq_float16"]
    stages = report["stages"]
    assert stages["distill"]["parameters"] < stages["distill"]["teacher_parameters"]
    assert max(stages["cluster"]["unique_values"].values()) <= 8
    for name in ("model_student.keras", "model_clustered.keras", "model_ptq_float16.tflite"):
        assert (out / name).is_file()
    # The clustered student came back as a Keras 3 model that loads safely, values intact.
    loaded = keras.models.load_model(out / "model_clustered.keras", safe_mode=True)
    assert set(stages["cluster"]["unique_values"]) == {
        layer.name for layer in loaded.layers if hasattr(layer, "kernel")}
    for name in stages["cluster"]["unique_values"]:
        assert len(np.unique(np.asarray(loaded.get_layer(name).kernel))) <= 8, name
