"""The compression and shipping stages for language models: `quantize`, `distill`, `prune`,
`export` and `verify` (`stage(ctx) -> ctx`; the generic stages hand over when the task is
`language_model`).

Every stage measures on the same validation windows (`eval_windows` evenly spaced windows of the
validation split, `workbench.lm.corpus.window_starts`) and greedy continuations of the same
prompts (the `generate` settings' prompts), so their numbers compare directly. Settings:
`recipe.lm_compress` (`workbench.lm.settings.LanguageModelCompressSettings`, `--set
lm_compress.KEY=...`).
"""

from __future__ import annotations

import numpy as np

from workbench.errors import WorkbenchError
from workbench.lm.compress import DEFAULT_PROMPTS
from workbench.lm.settings import LanguageModelCompressSettings  # noqa: F401 (its home before)


def compress_settings(recipe):
    return recipe.lm_compress


def _corpus(ctx, stage):
    data = ctx.require_data(stage)
    corpus = getattr(data, "corpus", None)
    if corpus is None:
        raise WorkbenchError(f"stage '{stage}' for a language model needs its corpus; load the "
                             "data with a language_model recipe such as 'gpt'")
    return corpus


def _windows(tokens, context, count):
    from workbench.lm.corpus import window_starts

    starts = window_starts(len(tokens), context, count)
    return np.asarray(tokens)[starts[:, None] + np.arange(context + 1)].astype("int32")


def evaluation_windows(ctx, model, stage):
    """The fixed validation windows every language-model stage measures on."""
    from workbench.lm.compress import context_length

    return _windows(_corpus(ctx, stage).val, context_length(model),
                    compress_settings(ctx.recipe).eval_windows)


def prompt_ids(ctx):
    """The generate settings' prompts as token ids of the run's tokenizer."""
    generate = getattr(ctx.recipe, "generate", None)
    prompts = [p for p in ((generate.prompt, *generate.prompts) if generate else ()) if p]
    prompts = prompts or list(DEFAULT_PROMPTS)
    corpus = getattr(ctx.data, "corpus", None)
    if corpus is not None and hasattr(corpus.tokenizer, "encode"):
        return [list(corpus.tokenizer.encode(p)) for p in prompts]
    from workbench.lm.compress import encode_prompt

    return [encode_prompt(p) for p in prompts]


def _public(row):
    return {k: v for k, v in row.items() if k != "greedy_tokens"}


def quantize(ctx):
    """Every `quantize_modes` mode on a copy of the run's model, compared with float32; each
    quantized model is offered to the LiteRT converter (`verify` checks the files it takes)."""
    from workbench.lm.compress import compare_quantization_modes, context_length
    from workbench.lm.export import try_export_quantized
    from workbench.lm.generate import check_language_model

    model = ctx.require_model("quantize")
    check_language_model(model, "quantize")
    settings = compress_settings(ctx.recipe)
    corpus = _corpus(ctx, "quantize")
    windows = evaluation_windows(ctx, model, "quantize")
    calibration = _windows(corpus.train, context_length(model), settings.calibration_windows)

    def offer_to_litert(mode, quantized):
        if not settings.export_quantized:
            return {}
        name = f"model_keras_{mode}.tflite"
        reason = try_export_quantized(quantized, ctx.run_dir / name)
        if reason is not None:
            ctx.say(f"  {mode}: the LiteRT converter refused the Keras-quantized model "
                    f"({reason[:160]})")
            return {"tflite_refused": reason}
        path = ctx.run_dir / name
        ctx.exports[f"keras_{mode}"] = {"path": str(path), "size_bytes": path.stat().st_size}
        return {"tflite": str(path)}

    rows = compare_quantization_modes(
        model, windows, calibration, settings.quantize_modes, group_size=settings.group_size,
        num_samples=settings.calibration_windows, prompts=prompt_ids(ctx),
        generate_steps=settings.generate_tokens, on_model=offer_to_litert, log=ctx.say)
    from workbench.lm.compress import format_quantization_table

    ctx.run_dir.write_text("quantization.md", format_quantization_table(rows) + "\n")
    ctx.results["quantize"] = {
        "eval_windows": len(windows), "calibration_windows": len(calibration),
        "group_size": settings.group_size,
        "modes": {row["mode"]: _public(row) for row in rows}}
    return ctx


def distill(ctx):
    """Distil the run's GPT into a smaller one, which becomes the run's model."""
    from workbench.lm.compress import evaluate_language_model
    from workbench.lm.distill import default_student, distill_language_model

    teacher = ctx.require_model("distill")
    corpus = _corpus(ctx, "distill")
    recipe, settings = ctx.recipe, compress_settings(ctx.recipe)
    if recipe.student is not None:
        from workbench.stages.distill import build_student

        student = build_student(recipe, ctx.data.info)
    else:
        student = default_student(teacher, settings.student_layers or None,
                                  settings.student_width or None,
                                  settings.student_heads or None)
    result = distill_language_model(
        teacher, student, corpus.train, steps=settings.distill_steps,
        batch_size=recipe.batch_size, learning_rate=settings.distill_learning_rate,
        temperature=settings.distill_temperature, alpha=settings.distill_alpha, seed=recipe.seed)
    windows = evaluation_windows(ctx, teacher, "distill")
    prompts = prompt_ids(ctx)
    measured = {role: _public(evaluate_language_model(model, windows, prompts,
                                                      settings.generate_tokens))
                for role, model in (("teacher", teacher), ("student", result.model))}
    with ctx.run_dir.atomic("model_student.keras") as temp:
        result.model.save(str(temp))
    ctx.model = result.model
    teacher_params, student_params = int(teacher.count_params()), int(student.count_params())
    ctx.say(f"  student: {student_params:,} parameters (teacher {teacher_params:,}), val loss "
            f"{measured['student']['val_loss']:.4f} (teacher "
            f"{measured['teacher']['val_loss']:.4f}) after {settings.distill_steps} steps")
    ctx.results["distill"] = {
        "steps": settings.distill_steps, "temperature": settings.distill_temperature,
        "alpha": settings.distill_alpha, "student_parameters": student_params,
        "teacher_parameters": teacher_params, "eval_windows": len(windows), **{
            f"{role}_{key}": value for role, row in measured.items() for key, value in
            row.items()},
        "model_path": str(ctx.run_dir / "model_student.keras"), "history": result.history}
    return ctx


def prune(ctx):
    """TF-MOT pruning reaches a model through the bridge's tf_keras twin; a GPT's layers
    (Keras 3-only tied embedding, KerasHub and custom blocks) have none, which this names."""
    import keras

    from workbench.compression import to_tf_keras
    from workbench.compression.bridge import UntranslatableLayerError

    model = ctx.require_model("prune")
    # The graph itself, so that the layers are judged rather than the model's own class.
    graph = keras.Model(model.inputs, model.outputs, name=model.name)
    try:
        to_tf_keras(graph)
    except UntranslatableLayerError as error:
        others = ", ".join(f"'{name}'" for name, _, _ in error.problems[1:])
        first_reason = error.problems[0][2]
        raise WorkbenchError(
            f"stage 'prune' cannot prune language model '{model.name}' with TF-MOT: layer "
            f"'{error.layer_name}' ({error.layer_class}) {first_reason}"
            + (f"; nor can {others} be translated (KerasHub and custom layers have no tf_keras "
               "twin)" if others else "")
            + "; shrink it with 'quantize' (int8, int4, gptq, awq) or 'distill' instead"
        ) from None
    raise WorkbenchError(
        f"stage 'prune' for language models is limited to reporting why TF-MOT cannot reach "
        f"them, and model '{model.name}' translates; prune it as a generic model instead")


def export(ctx):
    """The run's model as LiteRT files, one per `export_formats` entry."""
    from workbench.lm.export import export_language_model
    from workbench.lm.generate import check_language_model

    model = ctx.require_model("export")
    check_language_model(model, "export")
    for fmt in compress_settings(ctx.recipe).export_formats:
        name = f"model_{fmt}.tflite"
        path = export_language_model(model, ctx.run_dir / name, fmt)
        ctx.exports[fmt] = {"path": str(path), "size_bytes": path.stat().st_size}
        ctx.say(f"  {name}: {path.stat().st_size / 1024:.1f} KiB")
    ctx.results["export"] = {fmt: dict(info) for fmt, info in ctx.exports.items()}
    return ctx


def verify(ctx):
    """Each exported file with the LiteRT interpreter: validation loss on the evaluation windows
    against the Keras model's, and greedy tokens from the prompts against the Keras model's."""
    from workbench.lm.export import FLOAT32_LOSS_TOLERANCE, keras_reference, verify_language_model

    model = ctx.require_model("verify")
    settings = compress_settings(ctx.recipe)
    windows = evaluation_windows(ctx, model, "verify")
    prompts = prompt_ids(ctx)
    reference = keras_reference(model, windows, prompts, settings.generate_tokens)
    results = {"eval_windows": len(windows), "keras_val_loss": reference["val_loss"],
               "generate_tokens": settings.generate_tokens}
    width = max(8, *(len(name) for name in ctx.exports))
    for name, info in ctx.exports.items():
        metrics = verify_language_model(
            info["path"], windows, keras_loss=reference["val_loss"],
            keras_tokens=reference["greedy_tokens"], prompts=prompts,
            generate_steps=settings.generate_tokens, num_threads=ctx.recipe.verify.num_threads)
        if name == "float32":
            metrics["within_tolerance"] = (
                abs(metrics["val_loss_change_vs_keras"]) <= FLOAT32_LOSS_TOLERANCE
                and metrics["greedy_tokens_match_keras"])
        info.update(_public(metrics))
        results[name] = _public(metrics)
        ctx.say(f"  {name:{width}s} val loss {metrics['val_loss']:.4f} "
                f"({metrics['val_loss_change_vs_keras']:+.3%} vs Keras)  greedy tokens "
                f"{'match' if metrics['greedy_tokens_match_keras'] else 'differ'} "
                f"({metrics['greedy_prompts_matching']}/{len(prompts)} prompts)  "
                f"{metrics['size_bytes'] / 1024:.1f} KiB")
    ctx.results["verify"] = results
    return ctx

