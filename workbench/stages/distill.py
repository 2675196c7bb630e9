"""Distill the run's model (the teacher) into a smaller student, which becomes the run's model
(`model_student.keras`). Settings: `distill.*`; the student is `recipe.student` (a builder of `hp`
like `recipe.model`) or the task's default."""


def distill(ctx):
    ctx.require_model("distill")
    ctx.require_data("distill")
    ctx.results["distill"] = ctx.task.distill(ctx)
    return ctx
