"""TFLite export and verification with the LiteRT interpreter."""

import numpy as np
import pytest

import keras

from workbench import deploy
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small classifier trained on separable synthetic data it makes itself."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6, 6, 1)).astype("float32") * 2
    y = rng.integers(0, 3, size=600).astype("int32")
    x = (centers[y] + rng.normal(scale=0.5, size=(600, 6, 6, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:500], y[:500], epochs=5, verbose=0)
    return model, x[500:], y[500:], tmp_path_factory.mktemp("tflite")


def test_float32_export_matches_keras_predictions(trained):
    model, x, y, tmp = trained
    path = deploy.export_tflite(model, tmp / "float32.tflite", "float32")
    outputs, latencies = deploy.predict_tflite(deploy.make_interpreter(path), x)
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), atol=1e-5)
    assert len(latencies) == len(x) and np.all(latencies > 0)
    metrics = deploy.verify_tflite(path, x, y)
    keras_accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert metrics["accuracy"] == pytest.approx(keras_accuracy)
    assert metrics["examples"] == len(x) and metrics["input_dtype"] == "float32"
    assert metrics["size_bytes"] == path.stat().st_size


def test_int8_export_has_integer_io_and_close_accuracy(trained):
    model, x, y, tmp = trained
    path = deploy.export_tflite(model, tmp / "int8.tflite", "int8", representative=x[:50])
    interpreter = deploy.make_interpreter(path)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    outputs, _ = deploy.predict_tflite(interpreter, x)
    # Dequantized softmax outputs stay close to the float model's probabilities.
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), atol=0.05)
    metrics = deploy.verify_tflite(path, x, y, max_examples=40)
    assert metrics["examples"] == 40 and metrics["input_dtype"] == "int8"


@pytest.mark.parametrize("fmt", ["float16", "dynamic"])
def test_other_formats_run(trained, fmt):
    model, x, y, tmp = trained
    path = deploy.export_tflite(model, tmp / f"{fmt}.tflite", fmt)
    outputs, _ = deploy.predict_tflite(deploy.make_interpreter(path), x[:20])
    np.testing.assert_allclose(outputs, model.predict(x[:20], verbose=0), atol=0.02)


def test_int8_without_representative_data_is_refused(trained, tmp_path):
    model, *_ = trained
    with pytest.raises(WorkbenchError, match="representative data"):
        deploy.export_tflite(model, tmp_path / "x.tflite", "int8", representative=None)
    assert not (tmp_path / "x.tflite").exists()


def test_a_mixed_precision_model_exports_as_float32_with_the_same_predictions(trained, tmp_path):
    model, x, _, _ = trained
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(model.get_weights())
    assert mixed.layers[0].compute_dtype == "float16"
    path = deploy.export_tflite(mixed, tmp_path / "mixed.tflite", "int8", representative=x[:50])
    outputs, _ = deploy.predict_tflite(deploy.make_interpreter(path), x)
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), atol=0.05)
    float_path = deploy.export_tflite(mixed, tmp_path / "mixed32.tflite", "float32")
    outputs, _ = deploy.predict_tflite(deploy.make_interpreter(float_path), x)
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), atol=1e-5)
