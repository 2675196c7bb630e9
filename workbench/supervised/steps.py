"""What the supervised family computes for each stage it offers (`SupervisedTask` calls these):
fit by epochs, the learning-rate range test, the KerasTuner hypermodel, TFLite export and LiteRT
verification, and the TF-MOT / distillation compressions. Each returns the stage's results; the
stage records them."""

from __future__ import annotations

import dataclasses
import math

from workbench import deploy
from workbench.tasks.base import Trained


def fit(ctx):
    from workbench.training import LearningRateLog, epochs_before, fit as fit_epochs

    model, history, callbacks = fit_epochs(ctx, backup=True)
    lr_log = next(c for c in callbacks if isinstance(c, LearningRateLog))
    resumed_from = int(getattr(model, "_initial_epoch", 0) or 0)
    curves = {key: epochs_before(ctx, key, resumed_from) + [float(v) for v in values]
              for key, values in history.history.items()}
    replicas = ctx.strategy.num_replicas_in_sync
    results = {**ctx.results.get("train", {}),
               "epochs_run": resumed_from + len(history.epoch), "resumed_from_epoch": resumed_from,
               "steps": int(model.optimizer.iterations.numpy()), "replicas": replicas,
               "global_batch_size": ctx.recipe.batch_size * replicas,
               "parameters": int(model.count_params())}
    for key, values in curves.items():
        if key.startswith("val_") and values:
            results[f"best_{key}"] = min(values) if "loss" in key else max(values)
    reasons = [c.stop_reason for c in callbacks if getattr(c, "stop_reason", None)]
    if reasons:
        results["stop_reason"] = reasons[0]
    return Trained(model=model, history=curves, learning_rates=lr_log.values, results=results)


def lr_find(ctx):
    from workbench.callbacks import LRFinder
    from workbench.training import compile_model

    data = ctx.require_data("lr_find")
    settings = ctx.recipe.lr_find
    # The sweep drives the rate itself, so the recipe's schedule stays out of it.
    recipe = dataclasses.replace(ctx.recipe, schedule=None)
    batch = recipe.batch_size * ctx.strategy.num_replicas_in_sync
    steps_per_epoch = math.ceil(data.info.sizes["train"] / batch)
    model = compile_model(ctx, recipe, steps_per_epoch)
    finder = LRFinder(min_lr=settings.min_lr, max_lr=settings.max_lr,
                      num_steps=settings.num_steps, suggest=settings.suggest)
    train = data.batches("train", batch, shuffle=True, seed=recipe.seed)
    model.fit(train, epochs=math.ceil(settings.num_steps / steps_per_epoch), callbacks=[finder],
              verbose=0, shuffle=False)
    with ctx.run_dir.atomic("lr_find.png") as temp:
        finder.plot(str(temp))
    return finder


def hypermodel(ctx, task):
    import keras_tuner

    from workbench import components
    from workbench.builders import build_model
    from workbench.training import optimizer_for

    data = ctx.data

    class RecipeHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            recipe = task.search_recipe(ctx.recipe, hp)
            steps = math.ceil(data.info.sizes["train"] / recipe.batch_size)
            model = build_model(recipe, hp, data.info)
            if recipe.regularizer:
                components.apply_regularizer(model, recipe.regularizer,
                                             recipe.regularizer_config)
            model.compile(optimizer=optimizer_for(recipe, recipe.epochs * steps),
                          jit_compile=recipe.jit_compile, **task.compile_args(recipe))
            return model

        def fit(self, hp, model, *args, epochs=1, callbacks=None, **kwargs):
            recipe = task.search_recipe(ctx.recipe, hp)
            train = data.batches("train", recipe.batch_size, shuffle=True, seed=recipe.seed)
            val = data.batches("val", recipe.batch_size)
            return model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                             verbose=0, shuffle=False, **{k: v for k, v in kwargs.items()
                                                          if k == "initial_epoch"})

    return RecipeHyperModel()


def export(ctx, model, formats):
    """Every format as `model_<format>.tflite`; `{format: path}`."""
    from workbench.data import representative_inputs

    representative = None
    if "int8" in formats:
        data = ctx.require_data("export")
        representative = representative_inputs(data, ctx.recipe.export.representative_examples,
                                               seed=ctx.recipe.seed)
    written = {}
    for fmt in formats:
        name = f"model_{fmt}.tflite"
        with ctx.run_dir.atomic(name) as temp:
            deploy.export_tflite(model, temp, fmt, representative)
        written[fmt] = ctx.run_dir / name
    return written


def verify(ctx, task_name):
    """Every exported file with the LiteRT interpreter on the test split: the task's metrics,
    their change against the Keras model's, size, latency and the sparsity that survived."""
    data = ctx.require_data("verify")
    settings = ctx.recipe.verify
    keras_metrics = ctx.results.get("evaluate", {})
    names = deploy.task_metric_names(task_name)
    results = {}
    width = max(8, *(len(name) for name in ctx.exports))
    for fmt, info in ctx.exports.items():
        metrics = deploy.verify_tflite(info["path"], data.test, num_threads=settings.num_threads,
                                       max_examples=settings.max_examples, task=task_name)
        for name in names:
            keras_value = keras_metrics.get(f"test_{name}")
            if keras_value is not None and name in metrics:
                metrics[f"{name}_delta_vs_keras"] = metrics[name] - keras_value
        sparsity = deploy.weight_sparsity(info["path"])
        metrics["weight_sparsity"] = sparsity["weight_sparsity"]
        metrics["weight_tensors_sparsity"] = sparsity["weight_tensors"]
        info.update(metrics)
        results[fmt] = metrics
        headline = "  ".join(f"{name} {metrics[name]:.4f}" for name in names)
        ctx.say(f"  {fmt:{width}s} {headline}  "
                f"gzip {metrics['gzip_bytes'] / 1024:.1f} KiB  "
                f"median latency {metrics['median_latency_ms']:.3f} ms  "
                f"weight sparsity {metrics['weight_sparsity']:.1%}")
    return results


def prune(ctx):
    from workbench.compression.pruning import prune as prune_model

    model = ctx.require_model("prune")
    data = ctx.require_data("prune")
    settings = ctx.recipe.prune
    result = prune_model(
        model, data, None, target_sparsity=settings.target_sparsity,
        initial_sparsity=settings.initial_sparsity, schedule=settings.schedule,
        structure=settings.structure, layers=settings.layers, epochs=settings.epochs,
        frequency=settings.frequency,
        fine_tuning=_fine_tuning(ctx, settings.learning_rate_factor))
    for name, fraction in result.layer_sparsity.items():
        ctx.say(f"  {name}: {fraction:.1%} zeros")
    return {**_adopt_and_export(ctx, result, "pruned", "dense"),
            "layer_sparsity": result.layer_sparsity}


def quantize(ctx):
    """Post-training (`ptq_int8`, `ptq_dynamic`, `ptq_float16`) or quantization-aware training
    (`qat`, pruning-preserving `pqat`): one TFLite variant, `<mode>` or `<mode>_int8`. The run's
    Keras model is left as it was: QAT's result is the flatbuffer."""
    from workbench.compression.pruning import kernel_sparsity
    from workbench.compression.quantization import (
        POST_TRAINING_FORMATS, quantize_aware, quantize_post_training)
    from workbench.compression.stage_outputs import add_export, representative_inputs

    model = ctx.require_model("quantize")
    data = ctx.require_data("quantize")
    settings = ctx.recipe.quantize
    mode = settings.mode
    results = {"mode": mode, "input_kernel_sparsity": kernel_sparsity(model)}
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
                fine_tuning=_fine_tuning(ctx, settings.learning_rate_factor))
        results["fine_tuning_losses"] = result.losses
    add_export(ctx, variant, ctx.run_dir / f"model_{variant}.tflite")
    results["export"] = variant
    return results


def cluster(ctx):
    from workbench.compression.clustering import cluster as cluster_model

    model = ctx.require_model("cluster")
    data = ctx.require_data("cluster")
    settings = ctx.recipe.cluster
    result = cluster_model(
        model, data, None, clusters=settings.clusters, init=settings.init,
        layers=settings.layers, preserve_sparsity=settings.preserve_sparsity,
        epochs=settings.epochs,
        fine_tuning=_fine_tuning(ctx, settings.learning_rate_factor))
    for name, count in result.unique_values.items():
        ctx.say(f"  {name}: {count} distinct weight values")
    return {**_adopt_and_export(ctx, result, "clustered", "unclustered"),
            "unique_values": result.unique_values}


def _adopt_and_export(ctx, result, name, untouched):
    """A TF-MOT result becomes the run's model (saved, scored) and is exported; its results."""
    from workbench.compression.stage_outputs import adopt_model, export_variants

    for layer, why in result.skipped_layers.items():
        ctx.say(f"  {layer}: left {untouched} (it {why})")
    metrics = adopt_model(ctx, result.model, name)
    ctx.say(f"  {name} model: test accuracy {metrics.get('test_accuracy', float('nan')):.4f}")
    return {**metrics, "skipped_layers": result.skipped_layers,
            "fine_tuning_losses": result.losses,
            "exports": export_variants(ctx, result.model, name)}


def distill(ctx, task):
    """The run's model (the teacher) into the recipe's `student` with `keras.distillation`."""
    from workbench.builders import build_student
    from workbench.compression.distillation import distill as distill_model
    from workbench.compression.stage_outputs import adopt_model, export_variants, test_metrics

    teacher = ctx.require_model("distill")
    data = ctx.require_data("distill")
    recipe = ctx.recipe
    settings = recipe.distill
    student = build_student(recipe, data.info)
    result = distill_model(
        teacher, student, data, None,
        alpha=task.DISTILL_ALPHA if settings.alpha is None else settings.alpha,
        temperature=(task.DISTILL_TEMPERATURE if settings.temperature is None
                     else settings.temperature),
        epochs=settings.epochs, fine_tuning=_fine_tuning(ctx),
        metrics=task.compile_args(recipe)["metrics"])
    teacher_metrics = test_metrics(ctx, teacher)
    metrics = adopt_model(ctx, result.model, "student")
    headline = next(iter(k for k in metrics if k.startswith("test_") and k != "test_loss"),
                    "test_loss")
    ctx.say(f"  student ({metrics['parameters']} parameters, teacher "
            f"{teacher.count_params()}): {headline} {metrics.get(headline, float('nan')):.4f} "
            f"(teacher {teacher_metrics.get(headline, float('nan')):.4f})")
    variants = export_variants(ctx, result.model, "student")
    return {**metrics, "teacher_parameters": int(teacher.count_params()),
            "teacher_test_accuracy": teacher_metrics.get("test_accuracy"),
            "teacher_test_metrics": teacher_metrics, "history": result.history,
            "exports": variants}


def _fine_tuning(ctx, learning_rate_factor=1.0):
    """How a compressed model is fine-tuned: the family's loss for the recipe's task, with the
    recipe's optimizer, schedule, batch size and seed."""
    from workbench.compression.training import FineTuning

    return FineTuning.from_recipe(ctx.recipe, ctx.task.compile_args(ctx.recipe)["loss"],
                                  learning_rate_factor)
