"""Distill the run's model (the teacher) into the recipe's `student` with `keras.distillation`.

The trained student becomes the run's model (`model_student.keras`) and is exported as
`student_<format>` for every `export.formats` entry. Settings: `distill.*`; the student is
`recipe.student`, a builder of `hp` like `recipe.model`.
"""

from workbench.compression.distillation import distill as distill_model
from workbench.compression.stage_outputs import adopt_model, export_variants, test_metrics
from workbench.compression.training import FineTuning
from workbench.tasks import compile_args
from workbench.errors import WorkbenchError
from workbench.recipe import call_builder


def build_student(recipe, data_info):
    """The recipe's student, built with its own default hyperparameters."""
    import keras_tuner

    if recipe.student is None:
        raise WorkbenchError("stage 'distill' needs a student model: add `student=build_student` "
                             "(a builder of hp, like `model`) to the recipe")
    hp = keras_tuner.HyperParameters()
    return call_builder(recipe.student, hp, data_info, recipe.model_options)


def distill(ctx):
    if ctx.data is not None and ctx.data.info.task == "language_model":
        from workbench.lm.compress_stages import distill as distill_language_model

        return distill_language_model(ctx)
    teacher = ctx.require_model("distill")
    data = ctx.require_data("distill")
    recipe = ctx.recipe
    settings = recipe.distill
    student = build_student(recipe, data.info)
    result = distill_model(
        teacher, student, data, None, alpha=settings.alpha,
        temperature=settings.temperature, epochs=settings.epochs,
        fine_tuning=FineTuning.from_recipe(recipe), metrics=compile_args(recipe)["metrics"])
    teacher_metrics = test_metrics(ctx, teacher)
    metrics = adopt_model(ctx, result.model, "student")
    headline = next(iter(k for k in metrics if k.startswith("test_") and k != "test_loss"),
                    "test_loss")
    ctx.say(f"  student ({metrics['parameters']} parameters, teacher "
            f"{teacher.count_params()}): {headline} {metrics.get(headline, float('nan')):.4f} "
            f"(teacher {teacher_metrics.get(headline, float('nan')):.4f})")
    teacher_accuracy = teacher_metrics.get("test_accuracy")
    variants = export_variants(ctx, result.model, "student")
    ctx.results["distill"] = {**metrics, "teacher_parameters": int(teacher.count_params()),
                              "teacher_test_accuracy": teacher_accuracy,
                              "teacher_test_metrics": teacher_metrics,
                              "history": result.history, "exports": variants}
    return ctx
