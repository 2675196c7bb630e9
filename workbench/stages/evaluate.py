"""Evaluate the model on the held-out test split."""

from workbench.data import make_dataset


def evaluate(ctx):
    model = ctx.require_model("evaluate")
    data = ctx.require_data("evaluate")
    test = make_dataset(data.x_test, data.y_test, ctx.recipe.batch_size)
    values = model.evaluate(test, verbose=0, return_dict=True)
    metrics = {f"test_{name}": float(value) for name, value in values.items()}
    ctx.results["evaluate"] = metrics
    ctx.say("  " + "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    return ctx
