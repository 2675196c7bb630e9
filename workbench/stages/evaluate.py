"""Evaluate the model on the held-out test split with the task's loss and metrics."""


def evaluate(ctx):
    data = ctx.require_data("evaluate")
    if data.info.task == "language_model":
        from workbench.lm.stages import evaluate as evaluate_language_model

        return evaluate_language_model(ctx)
    model = ctx.require_model("evaluate")
    test = data.batches("test", ctx.recipe.batch_size)
    values = model.evaluate(test, verbose=0, return_dict=True)
    metrics = {f"test_{name}": float(value) for name, value in values.items()}
    ctx.results["evaluate"] = metrics
    ctx.say("  " + "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    return ctx
