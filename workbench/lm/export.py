"""LiteRT export of a language model's forward pass, and its verification with the LiteRT
interpreter.

The exported function is the model itself: int32 token ids `(batch, context)` -> logits
`(batch, context, vocabulary)`, over the model's fixed context, written by Keras' LiteRT exporter
(`workbench.deploy.export_tflite`) as `float32` or `dynamic` (dynamic-range int8 weights, float
activations). A Keras-quantized model (`workbench.lm.compress`) is offered to the same converter;
where the converter refuses its integer kernels the reason is returned, not raised.

`verify_language_model` runs the `.tflite` file with `ai_edge_litert`'s interpreter on the same
validation windows as the Keras model (mean next-token loss, perplexity) and generates greedily
from fixed prompts with the same loop as the Keras model (`compress.greedy_generate`), so the two
are compared on the model alone.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from workbench import deploy
from workbench.errors import WorkbenchError
from workbench.lm.compress import (DEFAULT_PROMPTS, context_length, encode_prompt,
                                   greedy_generate, token_losses)

LM_EXPORT_FORMATS = ("float32", "dynamic")
FLOAT32_LOSS_TOLERANCE = 0.005
"""The float32 `.tflite` file's validation loss must be within 0.5% of the Keras model's."""


def export_language_model(model, path, fmt="float32"):
    """Write `model`'s forward pass as a `.tflite` file in `fmt`, atomically (temporary name in
    the same folder, then renamed). Returns the path."""
    if fmt not in LM_EXPORT_FORMATS:
        from workbench.errors import suggest

        raise WorkbenchError(f"unknown language-model export format '{fmt}': "
                             f"{suggest(fmt, LM_EXPORT_FORMATS)} (full-integer int8 needs "
                             "integer activations, which token logits do not calibrate to)")
    context_length(model)
    path = Path(path)
    temp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        deploy.export_tflite(model, temp, fmt)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path


def try_export_quantized(model, path):
    """Export a Keras-quantized model as it is (float32 converter settings); returns `None` on
    success, else the converter's first error line (e.g. integer kernels in a fully connected
    op that only takes float or quantized-type operands)."""
    try:
        export_language_model(model, path, "float32")
        return None
    except Exception as error:  # the converter's errors are many and undocumented
        text = str(error)
        # MLIR errors start with a location; the reason is the "'op' ..." part after it.
        match = re.search(r"error: ('[\w.]+' op [^\n]*)", text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        message = match.group(1) if match else (lines[0] if lines else type(error).__name__)
        return f"{type(error).__name__}: {message[:300]}"


class LiteRTLogits:
    """`ids (batch, context) -> logits` with a LiteRT interpreter, resized to each batch size."""

    def __init__(self, path, num_threads=1):
        self.interpreter = deploy.make_interpreter(path, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])
        self.context = int(self.input["shape"][1])

    def __call__(self, ids):
        ids = np.asarray(ids, dtype=self.input["dtype"])
        if ids.shape[0] != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], ids.shape)
            self.interpreter.allocate_tensors()
            self.batch = ids.shape[0]
        self.interpreter.set_tensor(self.input["index"], ids)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


def verify_language_model(path, windows, *, keras_loss=None, keras_tokens=None,
                          prompts=DEFAULT_PROMPTS, generate_steps=32, num_threads=1,
                          batch_size=64):
    """Validation loss on `windows` and greedy tokens from `prompts` with the LiteRT interpreter,
    compared with the Keras model's (`keras_loss`, `keras_tokens`) where given."""
    path = Path(path)
    logits = LiteRTLogits(path, num_threads)
    if logits.context != np.asarray(windows).shape[1] - 1:
        raise WorkbenchError(f"'{path.name}' reads {logits.context} tokens, but the validation "
                             f"windows hold {np.asarray(windows).shape[1] - 1}")
    start = time.perf_counter()
    total, count = token_losses(logits, windows, batch_size)
    loss_seconds = time.perf_counter() - start
    loss = total / count
    start = time.perf_counter()
    tokens = greedy_generate(logits, [encode_prompt(p) for p in prompts], generate_steps,
                             logits.context)
    generate_seconds = time.perf_counter() - start
    result = {"size_bytes": path.stat().st_size, "val_loss": loss,
              "perplexity": float(np.exp(loss)), "val_tokens": count,
              "val_tokens_per_second": count / loss_seconds,
              "generation_tokens_per_second": len(prompts) * generate_steps / generate_seconds,
              "greedy_tokens": tokens}
    if keras_loss is not None:
        result["val_loss_change_vs_keras"] = loss / keras_loss - 1
    if keras_tokens is not None:
        same = [a == b for a, b in zip(tokens, keras_tokens)]
        result["greedy_tokens_match_keras"] = all(same)
        result["greedy_prompts_matching"] = int(sum(same))
    return result


def keras_reference(model, windows, prompts=DEFAULT_PROMPTS, generate_steps=32, batch_size=64):
    """The Keras model's validation loss and greedy tokens, to compare exports with."""
    from workbench.lm.compress import keras_logits

    logits = keras_logits(model)
    total, count = token_losses(logits, windows, batch_size)
    tokens = greedy_generate(logits, [encode_prompt(p) for p in prompts], generate_steps,
                             context_length(model))
    return {"val_loss": total / count, "greedy_tokens": tokens}
