"""What every task family and stage shares when it makes, saves or reloads a run's model: the
`hp` of the run, the recipe's builder called with what it takes, the search's workbench-level
choices applied to a recipe, the distillation student, atomic model saving, and the reuse of a
finished training on `--resume`."""

from __future__ import annotations

import dataclasses

import numpy as np

from workbench.errors import WorkbenchError
from workbench.recipe import call_builder


def hyperparameters(ctx):
    """The `hp` handed to the model builder: the search's best values, or every default."""
    if ctx.hp is None:
        import keras_tuner

        ctx.hp = keras_tuner.HyperParameters()
    return ctx.hp


def build_model(recipe, hp, data_info):
    return call_builder(recipe.model, hp, data_info, recipe.model_options)


def build_student(recipe, data_info):
    """The recipe's student, built with its own default hyperparameters."""
    import keras_tuner

    if recipe.student is None:
        raise WorkbenchError("stage 'distill' needs a student model: add `student=build_student` "
                             "(a builder of hp, like `model`) to the recipe")
    return call_builder(recipe.student, keras_tuner.HyperParameters(), data_info,
                        recipe.model_options)


def recipe_for(recipe, hp):
    """The recipe with the workbench-level search choices of `hp` applied (every choice registered
    in `hp` first, so the same function declares the space and reads a trial's values): optimizer,
    learning rate (log scale), schedule, weight decay and batch size."""
    search = recipe.search
    changes = {}
    if search.optimizers:
        changes["optimizer"] = hp.Choice("optimizer", list(search.optimizers))
    if search.learning_rate_min is not None:
        low, high = search.learning_rate_min, search.learning_rate_max
        if search.tuner == "grid":  # a grid needs a finite set of values
            values = [float(f"{v:.3g}") for v in np.geomspace(low, high, 4)]
            changes["learning_rate"] = hp.Choice("learning_rate", values)
        else:
            changes["learning_rate"] = hp.Float("learning_rate", low, high, sampling="log")
    if search.schedules:
        changes["schedule"] = hp.Choice("schedule", list(search.schedules))
    if search.weight_decays:
        decay = hp.Choice("weight_decay", [float(w) for w in search.weight_decays])
        changes["optimizer_config"] = {**recipe.optimizer_config, "weight_decay": decay or None}
    if search.batch_sizes:
        changes["batch_size"] = hp.Choice("batch_size", [int(b) for b in search.batch_sizes])
    return dataclasses.replace(recipe, **changes)


def save_model(ctx, model, filename="model.keras"):
    """Save `model` under the run directory atomically; return `(path, bytes)`."""
    with ctx.run_dir.atomic(filename) as temp:
        # Keras insists on the .keras suffix, which the temporary name keeps.
        model.save(str(temp))
    path = ctx.run_dir / filename
    return str(path), path.stat().st_size


def reuse_finished_training(ctx):
    """On --resume, a training that had already finished is not repeated: its saved model, curves
    and results are taken over. True when that happened."""
    from workbench import components

    saved = ctx.run_dir / "model.keras"
    previous = ctx.previous_report.get("stages", {}).get("train", {})
    if not (ctx.resuming and saved.is_file() and previous.get("model_path")):
        return False
    ctx.model = components.load_model(saved)
    ctx.history = ctx.previous_report.get("history", {})
    ctx.results["train"] = {k: v for k, v in previous.items() if k != "seconds"}
    ctx.say(f"  training had finished before the interruption; using {saved}")
    return True


def save_preprocessing(ctx):
    """The data's adapted preprocessing (FeatureSpace, TextVectorization) beside the model, so raw
    inputs can be encoded the way training saw them."""
    layer = ctx.data.info.preprocessing if ctx.data is not None else None
    if layer is None:
        return None
    if not hasattr(layer, "save"):
        import keras

        layer = keras.Sequential([layer])
    with ctx.run_dir.atomic("preprocessing.keras") as temp:
        layer.save(str(temp))
    return str(ctx.run_dir / "preprocessing.keras")
