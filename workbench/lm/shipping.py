"""What the language-model family computes for `quantize`, `distill`, `export` and `verify`
(`LanguageModelTask` calls these; each returns the stage's results and the stage records them).

Every step measures on the same validation windows (`verify.max_examples` evenly spaced windows of
the validation split, 1024 unless set; `workbench.lm.corpus.window_starts`) and greedy
continuations of the same prompts (the `generate` settings' prompts, `verify.generate_tokens`
tokens each), so their numbers compare directly. Settings: `export.formats` (float32, dynamic),
`export.representative_examples` (GPTQ / AWQ calibration windows), `quantize.keras_modes`,
`quantize.group_size`, `quantize.export_quantized`, `distill.*`, `verify.*`.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import WorkbenchError
from workbench.lm.compress import DEFAULT_PROMPTS

DEFAULT_EVAL_WINDOWS = 1024
EXPORT_FORMATS = ("float32", "dynamic")
DISTILL_ALPHA, DISTILL_TEMPERATURE, DISTILL_LEARNING_RATE = 0.5, 1.0, 2e-3


def eval_window_count(recipe):
    return recipe.verify.max_examples or DEFAULT_EVAL_WINDOWS


def _or(value, default):
    return default if value is None else value


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
                    eval_window_count(ctx.recipe))


def prompt_ids(ctx):
    """The generate settings' prompts as token ids of the run's tokenizer (wrapped as a user turn
    by the data's chat template where it has one: `data.encode_prompt`)."""
    generate = getattr(ctx.recipe, "generate", None)
    prompts = [p for p in ((generate.prompt, *generate.prompts) if generate else ()) if p]
    prompts = prompts or list(DEFAULT_PROMPTS)
    encode_prompt = getattr(ctx.data, "encode_prompt", None)  # a chat template's user turn
    if encode_prompt is not None:
        return [list(encode_prompt(p)) for p in prompts]
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
    settings = ctx.recipe.quantize
    calibration_count = ctx.recipe.export.representative_examples
    corpus = _corpus(ctx, "quantize")
    windows = evaluation_windows(ctx, model, "quantize")
    calibration = _windows(corpus.train, context_length(model), calibration_count)

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
        model, windows, calibration, settings.keras_modes, group_size=settings.group_size,
        num_samples=calibration_count, prompts=prompt_ids(ctx),
        generate_steps=ctx.recipe.verify.generate_tokens, on_model=offer_to_litert,
        log=ctx.say)
    from workbench.lm.compress import format_quantization_table

    ctx.run_dir.write_text("quantization.md", format_quantization_table(rows) + "\n")
    return {"eval_windows": len(windows), "calibration_windows": len(calibration),
            "group_size": settings.group_size,
            "modes": {row["mode"]: _public(row) for row in rows}}


def distill(ctx):
    """Distil the run's GPT into a smaller one, which becomes the run's model."""
    from workbench.lm.compress import evaluate_language_model
    from workbench.lm.distill import default_student, distill_language_model

    from workbench.builders import build_student

    teacher = ctx.require_model("distill")
    corpus = _corpus(ctx, "distill")
    recipe, settings = ctx.recipe, ctx.recipe.distill
    generate_tokens = recipe.verify.generate_tokens
    if recipe.student is not None:
        student = build_student(recipe, ctx.data.info)
    else:
        student = default_student(teacher, settings.student_layers or None,
                                  settings.student_width or None,
                                  settings.student_heads or None)
    temperature = _or(settings.temperature, DISTILL_TEMPERATURE)
    alpha = _or(settings.alpha, DISTILL_ALPHA)
    result = distill_language_model(
        teacher, student, corpus.train, steps=settings.steps, batch_size=recipe.batch_size,
        learning_rate=_or(settings.learning_rate, DISTILL_LEARNING_RATE),
        temperature=temperature, alpha=alpha, seed=recipe.seed)
    windows = evaluation_windows(ctx, teacher, "distill")
    prompts = prompt_ids(ctx)
    measured = {role: _public(evaluate_language_model(model, windows, prompts,
                                                      generate_tokens))
                for role, model in (("teacher", teacher), ("student", result.model))}
    with ctx.run_dir.atomic("model_student.keras") as temp:
        result.model.save(str(temp))
    ctx.model = result.model
    teacher_params, student_params = int(teacher.count_params()), int(student.count_params())
    ctx.say(f"  student: {student_params:,} parameters (teacher {teacher_params:,}), val loss "
            f"{measured['student']['val_loss']:.4f} (teacher "
            f"{measured['teacher']['val_loss']:.4f}) after {settings.steps} steps")
    return {
        "steps": settings.steps, "temperature": temperature,
        "alpha": alpha, "student_parameters": student_params,
        "teacher_parameters": teacher_params, "eval_windows": len(windows), **{
            f"{role}_{key}": value for role, row in measured.items() for key, value in
            row.items()},
        "model_path": str(ctx.run_dir / "model_student.keras"), "history": result.history}


def export_formats(recipe):
    return tuple(recipe.export.formats) if recipe.export.formats is not None else EXPORT_FORMATS


def export(ctx, model):
    """The run's model as LiteRT files, one per `export.formats` entry: `{format: path}`."""
    from workbench.lm.export import export_language_model
    from workbench.lm.generate import check_language_model

    check_language_model(model, "export")
    return {fmt: export_language_model(model, ctx.run_dir / f"model_{fmt}.tflite", fmt)
            for fmt in export_formats(ctx.recipe)}


def verify(ctx):
    """Each exported file with the LiteRT interpreter: validation loss on the evaluation windows
    against the Keras model's, and greedy tokens from the prompts against the Keras model's."""
    from workbench.lm.export import FLOAT32_LOSS_TOLERANCE, keras_reference, verify_language_model

    model = ctx.require_model("verify")
    generate_tokens = ctx.recipe.verify.generate_tokens
    windows = evaluation_windows(ctx, model, "verify")
    prompts = prompt_ids(ctx)
    reference = keras_reference(model, windows, prompts, generate_tokens)
    results = {"eval_windows": len(windows), "keras_val_loss": reference["val_loss"],
               "generate_tokens": generate_tokens}
    width = max(8, *(len(name) for name in ctx.exports))
    for name, info in ctx.exports.items():
        metrics = verify_language_model(
            info["path"], windows, keras_loss=reference["val_loss"],
            keras_tokens=reference["greedy_tokens"], prompts=prompts,
            generate_steps=generate_tokens, num_threads=ctx.recipe.verify.num_threads)
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
    return results

