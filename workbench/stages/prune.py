"""Prune the run's model (TF-MOT magnitude pruning, fine-tuned with the recipe's optimizer): the
pruned model becomes the run's model (`model_pruned.keras`) and is exported as `pruned_<format>`.
Settings: `prune.*`."""


def prune(ctx):
    ctx.require_model("prune")
    ctx.require_data("prune")
    ctx.results["prune"] = ctx.task.prune(ctx)
    return ctx
