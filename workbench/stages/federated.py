"""Train the recipe's model across clients on Flower (the task family's `federated`), in place of
`train`; the global model is saved as `model.keras` and becomes the run's model."""

from __future__ import annotations

from workbench.builders import save_model, save_preprocessing


def federated(ctx):
    trained = ctx.task.federated(ctx)
    ctx.model = trained.model
    results = trained.results
    results["model_path"], results["model_bytes"] = save_model(ctx, trained.model)
    preprocessing = save_preprocessing(ctx)
    if preprocessing:
        results["preprocessing_path"] = preprocessing
    ctx.results["federated"] = results
    # The summary's "keras" row reads the model's path and size from the train results.
    ctx.results.setdefault("train", {"model_path": results["model_path"],
                                     "model_bytes": results["model_bytes"]})
    return ctx
