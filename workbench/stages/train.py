"""Train the recipe's model (the task family's `fit`), then save it as `model.keras`."""

from __future__ import annotations

from workbench.builders import reuse_finished_training, save_model, save_preprocessing


def train(ctx):
    if reuse_finished_training(ctx):
        return ctx
    trained = ctx.task.fit(ctx)
    ctx.model = trained.model
    ctx.history = trained.history
    ctx.learning_rates = trained.learning_rates
    results = trained.results
    if results.get("stop_reason"):
        ctx.say(f"  stopped early: {results['stop_reason']}")
    results["model_path"], results["model_bytes"] = save_model(ctx, trained.model)
    preprocessing = save_preprocessing(ctx)
    if preprocessing:
        results["preprocessing_path"] = preprocessing
    ctx.results["train"] = results
    return ctx
