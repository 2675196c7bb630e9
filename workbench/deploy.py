"""TFLite export through Keras' own LiteRT exporter, and verification with the LiteRT interpreter.

Formats:
- `float32`: the model as is.
- `float16`: weights stored as float16 (half the size, float math on device).
- `dynamic`: dynamic-range quantization (int8 weights, float activations).
- `int8`: full-integer quantization; activations calibrated on representative data, int8 inputs
  and outputs, so the model runs on integer-only accelerators.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import time
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.quiet import quiet_native_output


def _converter_settings(fmt, representative):
    import tensorflow as tf

    if fmt == "float32":
        return {}
    if fmt == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": {"supported_types": [tf.float16]}}
    if fmt == "dynamic":
        return {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if fmt == "int8":
        if representative is None or len(representative) == 0:
            raise WorkbenchError("int8 export needs representative data (a sample of the "
                                 "training inputs) to calibrate activation ranges")
        samples = np.asarray(representative)
        if np.issubdtype(samples.dtype, np.floating):
            samples = samples.astype("float32")

        def representative_dataset():
            for sample in samples:
                yield [sample[None, ...]]

        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "representative_dataset": representative_dataset,
                "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                "inference_input_type": tf.int8,
                "inference_output_type": tf.int8}
    raise WorkbenchError(f"unknown TFLite format '{fmt}'")


def representative_sample(x, count, seed=0):
    """A fixed, seeded sample of `count` training inputs (all when fewer) to calibrate int8."""
    rng = np.random.default_rng(seed)
    count = min(count, len(x))
    return x[rng.choice(len(x), count, replace=False)]


def _float32_policy(config):
    """A model config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and "mixed" in str(config.get("config")):
            return "float32"
        return {key: _float32_policy(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policy(value) for value in config]
    return config


def as_float32_model(model):
    """`model` computing in float32: a model trained with a mixed-precision policy is rebuilt
    with float32 layers and the same (float32) weights, since TFLite's converter and its int8
    calibration expect a float32 graph; the device format is chosen by `fmt` instead."""
    if all(getattr(layer, "dtype_policy", None) is None or
           layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model
    clone = type(model).from_config(_float32_policy(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone


def export_tflite(model, path, fmt="float32", representative=None):
    """Write `model` as a `.tflite` file in format `fmt` (see the module docstring)."""
    settings = _converter_settings(fmt, representative)
    model = as_float32_model(model)
    # The exporter reports the intermediate SavedModel on stdout; keep the CLI's output readable.
    with contextlib.redirect_stdout(io.StringIO()), quiet_native_output():
        model.export(str(path), format="litert", verbose=False, **settings)
    return Path(path)


def make_interpreter(path, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_output():
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter


def _quantize_input(x, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _dequantize_output(y, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        return (y.astype("float32") - zero_point) * scale
    return y


def predict_tflite(interpreter, x):
    """Run one example at a time (batch 1, as on a device); return outputs and latencies (s)."""
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs, latencies = [], []
    for example in x:
        interpreter.set_tensor(input_detail["index"], _quantize_input(example[None], input_detail))
        start = time.perf_counter()
        interpreter.invoke()
        latencies.append(time.perf_counter() - start)
        outputs.append(_dequantize_output(interpreter.get_tensor(output_detail["index"])[0],
                                          output_detail))
    return np.stack(outputs), np.asarray(latencies)


def _stream_predictions(interpreter, dataset, max_examples):
    """Outputs, labels and latencies over a data set of `(x, y)` examples, one at a time."""
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    outputs, labels, latencies = [], [], []
    for x, y in dataset.batch(256).as_numpy_iterator():
        out, seconds = predict_tflite(interpreter, x)
        outputs.append(out)
        labels.append(y)
        latencies.append(seconds)
    if not outputs:
        raise WorkbenchError("verify: the test split is empty")
    return np.concatenate(outputs), np.concatenate(labels), np.concatenate(latencies)


def task_metrics(outputs, y, task):
    """What `verify` measures for the task: accuracy (and AUC for binary and multi-label
    outputs), or MAE and RMSE for regression."""
    if task == "multiclass":
        return {"accuracy": float(np.mean(np.argmax(outputs, axis=-1) == y))}
    if task in ("binary", "multilabel"):
        from sklearn.metrics import roc_auc_score

        scores = outputs.reshape(len(outputs), -1)
        truth = np.asarray(y).reshape(len(y), -1)
        metrics = {"accuracy": float(np.mean((scores >= 0.5) == (truth >= 0.5)))}
        try:
            metrics["auc"] = float(roc_auc_score(truth, scores, average="macro"))
        except ValueError:  # a single class in the test split: AUC is undefined
            metrics["auc"] = float("nan")
        return metrics
    if task == "regression":
        error = outputs.reshape(len(outputs), -1) - np.asarray(y).reshape(len(y), -1)
        return {"mae": float(np.mean(np.abs(error))),
                "rmse": float(np.sqrt(np.mean(error ** 2)))}
    raise WorkbenchError(f"verify cannot measure task '{task}' on a .tflite file")


def task_metric_names(task):
    return {"multiclass": ("accuracy",), "binary": ("accuracy", "auc"),
            "multilabel": ("accuracy", "auc"), "regression": ("mae", "rmse")}.get(task, ())


def verify_tflite(path, x, y=None, num_threads=1, max_examples=None, task="multiclass"):
    """The task's metrics (see `task_metrics`), file size, gzip size and median per-example
    latency of a `.tflite` file, on arrays `x, y` or a `tf.data.Dataset` `x` of examples."""
    path = Path(path)
    interpreter = make_interpreter(path, num_threads)
    if y is None:
        outputs, y, latencies = _stream_predictions(interpreter, x, max_examples)
    else:
        if max_examples is not None:
            x, y = x[:max_examples], y[:max_examples]
        outputs, latencies = predict_tflite(interpreter, x)
    raw = path.read_bytes()
    return {
        "examples": int(len(y)),
        **task_metrics(outputs, y, task),
        "size_bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9)),
        "median_latency_ms": float(np.median(latencies) * 1000.0),
        "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
    }


WEIGHT_TENSOR_MIN_ELEMENTS = 256
"""Constant tensors smaller than this (biases, shapes, small scales) are not counted as weights."""


def weight_sparsity(path, min_elements=WEIGHT_TENSOR_MIN_ELEMENTS):
    """The weight sparsity stored in a `.tflite` flatbuffer, read with the LiteRT interpreter.

    Weight tensors are the constants of the graph: tensors that some operator reads and none
    writes, that are not graph inputs, have rank 2 or more and at least `min_elements` elements
    (kernels, not biases). Returns `{"weight_sparsity": zeros / elements over those tensors,
    "weight_elements": elements, "weight_tensors": {tensor name: its fraction of zeros}}`.
    """
    interpreter = make_interpreter(path)
    operators = interpreter._get_ops_details()  # the only view LiteRT gives of the graph's edges
    written = {int(i) for op in operators for i in op["outputs"]}
    read = {int(i) for op in operators for i in op["inputs"] if i >= 0}
    graph_inputs = {detail["index"] for detail in interpreter.get_input_details()}
    per_tensor, zeros, elements = {}, 0, 0
    for detail in interpreter.get_tensor_details():
        index = detail["index"]
        if (index not in read or index in written or index in graph_inputs
                or len(detail["shape"]) < 2 or int(np.prod(detail["shape"])) < min_elements):
            continue
        values = interpreter.get_tensor(index)
        per_tensor[detail["name"]] = float(np.mean(values == 0))
        zeros += int(np.sum(values == 0))
        elements += values.size
    return {"weight_sparsity": zeros / elements if elements else 0.0,
            "weight_elements": elements, "weight_tensors": per_tensor}
