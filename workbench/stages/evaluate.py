"""Evaluate the run's model on held-out data with the task's measures."""


def evaluate(ctx):
    ctx.require_data("evaluate")
    model = ctx.require_model("evaluate")
    metrics = ctx.task.evaluate(ctx, model)
    ctx.results["evaluate"] = metrics
    ctx.say("  " + ctx.task.describe_evaluation(metrics))
    return ctx
