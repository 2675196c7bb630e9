"""Quantization: post-training for any Keras 3 model, quantization-aware training through TF-MOT.

Modes:
- `ptq_int8`: full-integer post-training quantization; activation ranges calibrated on
  representative data, int8 inputs and outputs (`deploy.export_tflite(..., "int8")`).
- `ptq_dynamic`: dynamic-range quantization (int8 weights, float activations).
- `ptq_float16`: float16 weights.
- `qat`: quantization-aware training (Jacob et al., 2018, arXiv:1712.05877): the tf_keras twin is
  wrapped with `tfmot.quantization.keras.quantize_model`, so training sees the int8 rounding
  through fake-quantization nodes; fine-tuned, then converted to a full-integer int8 TFLite model
  with `tf.lite.TFLiteConverter.from_keras_model`.
- `pqat`: pruning-preserving QAT, TF-MOT's collaborative optimization:
  `quantize_annotate_model` + `quantize_apply` with `Default8BitPrunePreserveQuantizeScheme()`
  keeps every zero weight at zero while training, so a pruned model's sparsity survives into the
  int8 flatbuffer (plain QAT would let the zeros drift).

Example:

```python
quantize_post_training(model, "model_int8.tflite", "ptq_int8", representative=x_train[:256])
quantize_aware(pruned_model, x_train, y_train, "model_pqat_int8.tflite", preserve_sparsity=True)
```
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from workbench.compression.environment import legacy_keras_environment
from workbench.compression.training import (
    FineTuning, check_training_data, fine_tune, tf_keras_twin)
from workbench.errors import WorkbenchError, suggest
from workbench.quiet import quiet_native_output
from workbench.settings import QUANTIZE_MODES

POST_TRAINING_FORMATS = {"ptq_int8": "int8", "ptq_dynamic": "dynamic", "ptq_float16": "float16"}
"""Post-training mode -> the `deploy.export_tflite` format that implements it."""

TRAINING_MODES = ("qat", "pqat")


@dataclass
class QuantizedAware:
    """What `quantize_aware` returns.

    Attributes:
        path: the int8 `.tflite` file written.
        losses: mean fine-tuning loss of every epoch.
        qat_model: the fine-tuned tf_keras model with fake-quantization nodes.
    """

    path: Path
    losses: list = field(default_factory=list)
    qat_model: object = None


def check_mode(mode):
    if mode not in QUANTIZE_MODES:
        raise WorkbenchError(f"unknown quantization mode '{mode}': {suggest(mode, QUANTIZE_MODES)}")


def quantize_post_training(model, path, mode: str = "ptq_int8", representative=None):
    """Write `model` (any Keras 3 model) as a post-training-quantized `.tflite` file.

    Raises:
        WorkbenchError: an unknown or training mode, or `ptq_int8` without representative data
            (checked before anything is written).
    """
    from workbench import deploy

    check_mode(mode)
    if mode not in POST_TRAINING_FORMATS:
        raise WorkbenchError(f"'{mode}' trains the model; use quantize_aware for it, or one of "
                             f"{', '.join(POST_TRAINING_FORMATS)} here")
    return deploy.export_tflite(model, path, POST_TRAINING_FORMATS[mode], representative)


def quantize_aware(model, x, y, path, *, preserve_sparsity: bool = False, epochs: int = 2,
                   fine_tuning: Optional[FineTuning] = None):
    """Quantization-aware training of a Keras 3 model, written as a full-integer int8 `.tflite`.

    Args:
        model: a built Keras 3 Sequential or Functional model (left unchanged).
        x, y: training examples for the fine-tuning.
        path: where the int8 `.tflite` file goes (written only after training succeeds).
        preserve_sparsity: pruning-preserving QAT (`pqat`) instead of plain QAT.
        epochs: fine-tuning epochs.
        fine_tuning: loss, batch size and Keras 3 optimizer; `FineTuning()` when not given.

    Raises:
        WorkbenchError: a layer the bridge cannot translate or TF-MOT cannot quantize, no
            training data, or diverging training.
    """
    check_training_data(x, y, "quantization-aware training")
    if epochs < 1:
        raise WorkbenchError(f"quantization-aware training needs epochs >= 1, got {epochs}")
    with legacy_keras_environment() as tfmot:
        twin = tf_keras_twin(model)
        quantization = tfmot.quantization.keras
        try:
            if preserve_sparsity:
                scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
                qat_model = quantization.quantize_apply(
                    quantization.quantize_annotate_model(twin), scheme)
            else:
                qat_model = quantization.quantize_model(twin)
        except (RuntimeError, ValueError) as error:
            raise WorkbenchError(f"TF-MOT cannot quantize model '{model.name}': "
                                 f"{str(error).splitlines()[0]}") from error
        losses = fine_tune(qat_model, x, y, epochs=epochs, fine_tuning=fine_tuning)
        flatbuffer = _convert_to_int8(qat_model)
    path = Path(path)
    path.write_bytes(flatbuffer)
    return QuantizedAware(path=path, losses=losses, qat_model=qat_model)


def _convert_to_int8(qat_model):
    """A tf_keras QAT model as full-integer int8 TFLite bytes, int8 inputs and outputs.

    The fake-quantization nodes carry every range, so no representative data is needed (asking
    for `TFLITE_BUILTINS_INT8` only would make the converter demand it, as for post-training
    quantization); every operator of a model TF-MOT could quantize comes out int8.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            quiet_native_output():
        # The converter warns that the int8 input has no calibration statistics; QAT's input
        # fake-quantization node supplies that range.
        warnings.simplefilter("ignore")
        return converter.convert()
