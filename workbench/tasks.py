"""Tasks: what kind of prediction a model makes, and the defaults that follow from it.

The task decides the loss, the metrics, the early-stopping and plateau monitor, the search
objective, the activation of the model's last layer, and what `verify` measures on every exported
`.tflite` file — so that no stage special-cases a kind of problem. A recipe names its task
(`--set task=regression`) or lets the labels say (`workbench.data.checks.LabelStats`).

| task           | labels                       | output               | loss                            |
|----------------|------------------------------|----------------------|---------------------------------|
| multiclass     | int in [0, classes)          | softmax, classes     | sparse_categorical_crossentropy |
| binary         | 0 or 1                       | sigmoid, 1           | binary_crossentropy             |
| multilabel     | multi-hot, one column a label | sigmoid, labels      | binary_crossentropy             |
| regression     | float, one column a target   | linear, targets      | mean_squared_error              |
| language_model | the next token of each token | logits, vocabulary   | sparse CE from logits           |
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError, suggest


@dataclass(frozen=True)
class Task:
    name: str
    loss: str
    metrics: tuple
    activation: str | None
    monitor: str
    objective: tuple  # (name, "min" | "max") for KerasTuner
    verify_metrics: tuple


TASKS = {
    "multiclass": Task("multiclass", "sparse_categorical_crossentropy", ("accuracy",), "softmax",
                       "val_loss", ("val_accuracy", "max"), ("accuracy",)),
    "binary": Task("binary", "binary_crossentropy", ("accuracy", "auc"), "sigmoid", "val_loss",
                   ("val_auc", "max"), ("accuracy", "auc")),
    "multilabel": Task("multilabel", "binary_crossentropy", ("binary_accuracy", "multilabel_auc"),
                       "sigmoid", "val_loss", ("val_auc", "max"), ("accuracy", "auc")),
    "regression": Task("regression", "mean_squared_error", ("mae", "rmse"), None, "val_loss",
                       ("val_loss", "min"), ("mae", "rmse")),
    "language_model": Task("language_model", "sparse_categorical_crossentropy_from_logits",
                           (), None, "val_loss", ("val_loss", "min"), ("loss",)),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise WorkbenchError(f"unknown task '{name}': {suggest(name, list(TASKS))}")
    return TASKS[name]


def loss_for(task_name, loss=None):
    """A Keras loss (name or object) for the task; `loss` overrides the task's default."""
    import keras

    if loss is not None:
        return loss
    name = get_task(task_name).loss
    if name == "sparse_categorical_crossentropy_from_logits":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return name


def metrics_for(task_name, metrics=None):
    """Keras metric objects/names for the task; names in `metrics` override the defaults."""
    import keras

    names = tuple(metrics) if metrics is not None else get_task(task_name).metrics
    built = []
    for name in names:
        if name == "auc":
            built.append(keras.metrics.AUC(name="auc"))
        elif name == "multilabel_auc":
            built.append(keras.metrics.AUC(name="auc", multi_label=True))
        elif name == "rmse":
            built.append(keras.metrics.RootMeanSquaredError(name="rmse"))
        else:
            built.append(name)
    return built


def check_metric_names(names):
    """Unknown metric names are bad input, found before any work."""
    import keras

    for name in names:
        if name in ("auc", "multilabel_auc", "rmse"):
            continue
        try:
            keras.metrics.get(name)
        except (ValueError, TypeError):
            raise WorkbenchError(f"unknown metric '{name}' (see keras.metrics; e.g. accuracy, "
                                 "auc, mae, rmse, precision, recall)") from None


def check_loss_name(name):
    import keras

    if name is None:
        return
    try:
        keras.losses.get(name)
    except (ValueError, TypeError):
        raise WorkbenchError(f"unknown loss '{name}' (see keras.losses; e.g. "
                             "sparse_categorical_crossentropy, binary_crossentropy, "
                             "mean_squared_error, huber)") from None


def monitors(task_name, metrics=None):
    """Names `early_stopping.monitor` and `plateau.monitor` may take for this task."""
    names = ["loss"]
    for metric in (metrics if metrics is not None else get_task(task_name).metrics):
        names.append({"multilabel_auc": "auc"}.get(metric, metric))
    return [*names, *(f"val_{name}" for name in names)]


def output_layer(data_info, name="output"):
    """The last layer a builder puts on its model for `data_info`'s task: the right width and
    activation (softmax for classes, sigmoid for binary/multi-label, linear for regression).
    Under mixed precision the outputs stay float32, as Keras recommends."""
    import keras

    task = get_task(data_info.task)
    return keras.layers.Dense(data_info.output_units, activation=task.activation, name=name,
                              dtype="float32")


def compile_args(recipe):
    """`loss` and `metrics` for `model.compile`: the recipe's own, or its task's defaults."""
    task = recipe.task or "multiclass"
    return {"loss": loss_for(task, recipe.loss), "metrics": metrics_for(task, recipe.metrics)}


def search_objective(recipe):
    """KerasTuner's objective: `search.objective` when set, else the task's."""
    import keras_tuner

    if recipe.search.objective:
        name = recipe.search.objective
        direction = "min" if "loss" in name or name.endswith(("mae", "mse", "rmse")) else "max"
    else:
        name, direction = get_task(recipe.task or "multiclass").objective
    return keras_tuner.Objective(name, direction)


def check_recipe_names(recipe):
    """Loss, metric and monitor names in a recipe (task already resolved), before any work."""
    check_loss_name(recipe.loss)
    if recipe.metrics is not None:
        check_metric_names(recipe.metrics)
    valid = monitors(recipe.task, recipe.metrics)
    for key, settings in (("early_stopping.monitor", recipe.early_stopping),
                          ("plateau.monitor", recipe.plateau)):
        if settings.enabled and settings.monitor not in valid:
            raise WorkbenchError(f"unknown {key} '{settings.monitor}' for task '{recipe.task}': "
                                 f"{suggest(settings.monitor, valid)}")
