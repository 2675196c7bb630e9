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
        samples = np.asarray(representative, dtype="float32")

        def representative_dataset():
            for sample in samples:
                yield [sample[None, ...]]

        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "representative_dataset": representative_dataset,
                "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                "inference_input_type": tf.int8,
                "inference_output_type": tf.int8}
    raise WorkbenchError(f"unknown TFLite format '{fmt}'")


def export_tflite(model, path, fmt="float32", representative=None):
    """Write `model` as a `.tflite` file in format `fmt` (see the module docstring)."""
    settings = _converter_settings(fmt, representative)
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


def verify_tflite(path, x, y, num_threads=1, max_examples=None):
    """Accuracy, file size, gzip size and median per-example latency of a `.tflite` file."""
    path = Path(path)
    if max_examples is not None:
        x, y = x[:max_examples], y[:max_examples]
    interpreter = make_interpreter(path, num_threads)
    outputs, latencies = predict_tflite(interpreter, x)
    raw = path.read_bytes()
    return {
        "examples": int(len(x)),
        "accuracy": float(np.mean(np.argmax(outputs, axis=-1) == y)),
        "size_bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9)),
        "median_latency_ms": float(np.median(latencies) * 1000.0),
        "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
    }
