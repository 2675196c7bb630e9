"""Quantize the run's model: post-training (`ptq_int8`, `ptq_dynamic`, `ptq_float16`) or
quantization-aware training (`qat`, pruning-preserving `pqat`), set by `quantize.mode`.

Writes one TFLite variant, `<mode>` for post-training modes and `<mode>_int8` for the trained
ones, which `verify` checks. The run's Keras model is left as it was: QAT's result is the
flatbuffer.
"""

from workbench.compression.pruning import kernel_sparsity
from workbench.compression.quantization import (
    POST_TRAINING_FORMATS, quantize_aware, quantize_post_training)
from workbench.compression.stage_outputs import add_export, representative_inputs
from workbench.compression.training import FineTuning


def quantize(ctx):
    if ctx.data is not None and ctx.data.info.task == "language_model":
        from workbench.lm.compress_stages import quantize as quantize_language_model

        return quantize_language_model(ctx)
    model = ctx.require_model("quantize")
    data = ctx.require_data("quantize")
    settings = ctx.recipe.quantize
    mode = settings.mode
    sparsity = kernel_sparsity(model)
    results = {"mode": mode, "input_kernel_sparsity": sparsity}
    if mode in POST_TRAINING_FORMATS:
        variant = mode
        representative = representative_inputs(ctx) if mode == "ptq_int8" else None
        with ctx.run_dir.atomic(f"model_{variant}.tflite") as temp:
            quantize_post_training(model, temp, mode, representative)
    else:
        variant = f"{mode}_int8"
        with ctx.run_dir.atomic(f"model_{variant}.tflite") as temp:
            result = quantize_aware(
                model, data, None, temp, preserve_sparsity=mode == "pqat",
                epochs=settings.epochs,
                fine_tuning=FineTuning.from_recipe(ctx.recipe, settings.learning_rate_factor))
        results["fine_tuning_losses"] = result.losses
    add_export(ctx, variant, ctx.run_dir / f"model_{variant}.tflite")
    results["export"] = variant
    ctx.results["quantize"] = results
    return ctx
