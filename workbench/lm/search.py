"""Hyperparameter search for language models: what a trial of the generic search stage does for
the language-model family (`LanguageModelTask.hypermodel`).

A trial trains the way the train stage does (`workbench.lm.training`), only shorter: the recipe's
builder makes the model from the trial's `hp` (the gpt recipe declares width, layers, heads and
dropout), `compile_language_model` gives it the trial's optimizer, learning rate, weight decay and
warm-up, with the schedule laid over the search's budget of `search.steps` optimizer steps (default
`min(lm.steps, 200)`), and `train_language_model` runs those steps on random training windows. The
score is `val_loss`, the mean cross-entropy in nats per token on `lm.eval_windows` fixed validation
windows, the same windows and the same stream of training batches for every trial, so trials differ
only in their hyperparameters (and their initial weights). Epochs have no meaning here: a trial's
budget is steps, and Hyperband, which hands out epochs, is refused.
"""

from __future__ import annotations

import dataclasses
import math

from workbench.errors import WorkbenchError

DEFAULT_MAX_SEARCH_STEPS = 200


def search_steps(recipe):
    """Optimizer steps per trial: `search.steps`, else `min(lm.steps, 200)`."""
    if recipe.search.steps is not None:
        return recipe.search.steps
    return min(recipe.lm.steps, DEFAULT_MAX_SEARCH_STEPS)


def trial_settings(recipe):
    """`recipe.lm` for one trial: the search's step budget, one validation at its end, no
    checkpoints (a trial is short; an interrupted one is run again on `--resume`)."""
    steps = search_steps(recipe)
    return dataclasses.replace(recipe.lm, steps=steps, eval_interval=steps, checkpoint_steps=0,
                               checkpoint_seconds=0.0)


def search_recipe(recipe, hp):
    """The workbench-level choices of a trial (workbench.builders.recipe_for), plus the warm-up
    (`search.warmup_steps`)."""
    from workbench.builders import recipe_for

    recipe = recipe_for(recipe, hp)
    if recipe.search.warmup_steps:
        warmup = hp.Choice("warmup_steps", [int(w) for w in recipe.search.warmup_steps])
        recipe = dataclasses.replace(recipe, lm=dataclasses.replace(recipe.lm,
                                                                    warmup_steps=warmup))
    return recipe


def check_language_model_search(recipe):
    """Bad input found before any work: settings a step-trained search cannot honour."""
    search = recipe.search
    if search.tuner == "hyperband":
        raise WorkbenchError(
            "search.tuner=hyperband hands out epochs, but a language model trains by steps "
            "(search.steps per trial); use search.tuner=random, grid or bayesian")
    if search.steps is not None and search.steps < 1:
        raise WorkbenchError(f"search.steps must be at least 1, got {search.steps}")
    steps = search_steps(recipe)
    if any(w < 0 for w in search.warmup_steps):
        raise WorkbenchError(f"search.warmup_steps must be >= 0, got {search.warmup_steps}")
    for warmup, key in ([(w, "search.warmup_steps") for w in search.warmup_steps]
                        or [(recipe.lm.warmup_steps, "lm.warmup_steps")]):
        if warmup and warmup >= steps:
            raise WorkbenchError(
                f"{key} has {warmup} warm-up steps, but a search trial trains {steps} steps "
                f"(search.steps): it would only warm up; raise search.steps or lower {key}")
        if warmup and warmup >= recipe.lm.steps:
            raise WorkbenchError(
                f"{key} has {warmup} warm-up steps, but training runs lm.steps={recipe.lm.steps}; "
                f"choose warm-ups below lm.steps")


def language_model_hypermodel(ctx):
    """The KerasTuner hypermodel of `ctx`'s language-model recipe (see the module docstring)."""
    import keras_tuner

    from workbench.builders import build_model
    from workbench.lm.training import (compile_language_model, effective_steps_per_execution,
                                       train_language_model)

    data = ctx.data

    class LanguageModelHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            recipe = search_recipe(ctx.recipe, hp)
            settings = trial_settings(recipe)
            model = build_model(recipe, hp, data.info)
            return compile_language_model(
                model, recipe, settings,
                steps_per_execution=effective_steps_per_execution(settings))

        def fit(self, hp, model, *args, callbacks=None, **kwargs):
            # `epochs` from `tuner.search` is ignored: the budget is `search.steps` steps.
            recipe = search_recipe(ctx.recipe, hp)
            state, stop_reason = train_language_model(
                model, data.corpus.train, data.corpus.val, recipe, trial_settings(recipe),
                say=lambda *parts: None, extra_callbacks=callbacks or ())
            if stop_reason or not state.val_loss or not math.isfinite(state.val_loss[-1]):
                # A diverged trial has no score; KerasTuner records it as failed and goes on.
                raise keras_tuner.errors.FailedTrialError(
                    stop_reason or f"the validation loss became {state.val_loss[-1:]}")
            return {"val_loss": state.val_loss[-1], "loss": state.train_loss[-1]}

    return LanguageModelHyperModel()


def describe_budget(recipe):
    """One line for the run's output: what a trial costs and how it is scored."""
    settings = trial_settings(recipe)
    return (f"  language model: {settings.steps} steps per trial of {recipe.batch_size} random "
            f"windows of {settings.context} tokens; val_loss on {settings.eval_windows} fixed "
            "validation windows")
