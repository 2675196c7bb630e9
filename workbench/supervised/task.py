"""The supervised family: multiclass, binary, multilabel and regression on labelled examples.

The task decides the loss, the metrics, the early-stopping and plateau monitor, the search
objective, the activation of the model's last layer, and what `verify` measures on every exported
`.tflite` file. A recipe names its task (`--set task=regression`) or lets the labels say
(`workbench.supervised.labels`, over `workbench.data.checks.LabelStats`). `SupervisedTask` is the family's `Task`: it trains by epochs
with `model.fit` (workbench.training) and offers every stage but `generate`.

| task           | labels                       | output               | loss                            |
|----------------|------------------------------|----------------------|---------------------------------|
| multiclass     | int in [0, classes)          | softmax, classes     | sparse_categorical_crossentropy |
| binary         | 0 or 1                       | sigmoid, 1           | binary_crossentropy             |
| multilabel     | multi-hot, one column a label | sigmoid, labels      | binary_crossentropy             |
| regression     | float, one column a target   | linear, targets      | mean_squared_error              |
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError, suggest
from workbench.settings import KNOWN_EXPORT_FORMATS
from workbench.tasks.base import Task


@dataclass(frozen=True)
class LabelTask:
    name: str
    loss: str
    metrics: tuple
    activation: str | None
    monitor: str
    objective: tuple  # (name, "min" | "max") for KerasTuner
    verify_metrics: tuple


TASKS = {
    "multiclass": LabelTask("multiclass", "sparse_categorical_crossentropy", ("accuracy",), "softmax",
                       "val_loss", ("val_accuracy", "max"), ("accuracy",)),
    "binary": LabelTask("binary", "binary_crossentropy", ("accuracy", "auc"), "sigmoid", "val_loss",
                   ("val_auc", "max"), ("accuracy", "auc")),
    "multilabel": LabelTask("multilabel", "binary_crossentropy", ("binary_accuracy", "multilabel_auc"),
                       "sigmoid", "val_loss", ("val_auc", "max"), ("accuracy", "auc")),
    "regression": LabelTask("regression", "mean_squared_error", ("mae", "rmse"), None, "val_loss",
                       ("val_loss", "min"), ("mae", "rmse")),
}


def get_task(name: str) -> LabelTask:
    if name not in TASKS:
        raise WorkbenchError(f"unknown task '{name}': {suggest(name, list(TASKS))}")
    return TASKS[name]


def loss_for(task_name, loss=None):
    """A Keras loss (name or object) for the task; `loss` overrides the task's default."""
    if loss is not None:
        return loss
    return get_task(task_name).loss


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
    return keras.layers.Dense(output_units(data_info), activation=task.activation, name=name,
                              dtype="float32")


def output_units(info) -> int:
    """Units of the model's last layer for `info`'s task."""
    if info.task == "binary":
        return 1
    if info.task == "regression":
        return info.num_targets or 1
    return info.num_classes


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


def data_spec(recipe):
    """How the recipe's data is loaded, as plain values (`load_labelled_data`'s arguments): a
    federated run's job file carries it to the clients (workbench.supervised.federation), which
    load the same training split in the same order with it."""
    options = dict(recipe.data_options)
    if "federated" in recipe.stages:
        from workbench.federated.partition import data_options_for

        options = data_options_for(recipe)  # a by_column client id is not a feature
    return {"source": recipe.data, "options": options, "seed": recipe.seed, "task": recipe.task}


def load_labelled_data(source, options, seed, task):
    """The data of `source` with `options` and `seed`, its labels checked (and the task inferred
    when `task` is None) by `workbench.supervised.labels.Labels`."""
    from workbench.data import load_data
    from workbench.supervised.labels import Labels

    return load_data(source, seed=seed, task=Labels(task, f"data '{source}'"), **options)


class SupervisedTask(Task):
    """Labelled examples, trained by epochs with `model.fit`; every stage but `generate`."""

    NAMES = tuple(TASKS)
    STAGES = frozenset({"lr_find", "search", "train", "federated", "evaluate", "export", "verify", "prune",
                        "quantize", "cluster", "distill"})
    READS = frozenset({
        "data_options", "regularizer", "regularizer_config", "loss", "metrics", "epochs",
        "backup_interval_seconds", "early_stopping", "plateau", "batch_growth", "lr_find",
        "export", "verify.max_examples", "prune", "cluster", "quantize.mode", "quantize.epochs",
        "quantize.learning_rate_factor", "distill.alpha", "distill.temperature",
        "distill.epochs", "search.tuner", "search.max_trials", "search.objective",
        "search.epochs", "search.executions_per_trial", "search.optimizers",
        "search.learning_rate_min", "search.learning_rate_max", "search.schedules",
        "search.batch_sizes", "search.weight_decays", "search.hyperband_factor", "federated"})
    INSTEAD = {"generate": "generate continues text with a language model; use a "
                           "language_model recipe such as 'gpt'"}
    EXPORT_FORMATS = ("float32", "int8")
    DISTILL_ALPHA, DISTILL_TEMPERATURE = 0.1, 3.0

    @property
    def HEADLINE(self):
        metric = "mae" if self.name == "regression" else "accuracy"
        return f"test_{metric}", metric

    # ---- before any work -----------------------------------------------------------------

    def load_data(self, recipe):
        data = load_labelled_data(**data_spec(recipe))
        self.name = data.info.task  # inferred from the labels when the recipe names none
        return data

    def output_units(self, info):
        return output_units(info)

    def check_stages(self, recipe, stages):
        super().check_stages(recipe, stages)
        if "distill" in stages and recipe.student is None:
            raise WorkbenchError(
                "stage 'distill' needs a student model: add `student=...` (a builder of hp, "
                "like `model`) to the recipe, or leave 'distill' out of the stages")

    def check_settings(self, recipe):
        super().check_settings(recipe)
        for fmt in export_formats(recipe, self.EXPORT_FORMATS):
            if fmt not in KNOWN_EXPORT_FORMATS:
                raise WorkbenchError(f"unknown export format '{fmt}': "
                                     f"{suggest(fmt, KNOWN_EXPORT_FORMATS)}")

    def preflight(self, recipe, data, stages, has_model):
        """Names, then one build of the recipe's model: the search space must not be empty, and
        the model must take two training examples and give the task's outputs."""
        import keras
        import keras_tuner

        from workbench.builders import build_model, recipe_for

        check_recipe_names(recipe)
        if "federated" in stages:
            from workbench.federated.checks import check_federated

            self.partition = check_federated(recipe, data, stages)
        searching = "search" in stages
        if not (searching or (not has_model and {"train", "lr_find", "federated"} & set(stages))):
            return
        hp = keras_tuner.HyperParameters()
        if searching:
            recipe_for(recipe, hp)
        info = data.info
        try:
            model = build_model(recipe, hp, info)
        except WorkbenchError:
            raise
        except Exception as error:  # the user's builder failed on this data
            raise WorkbenchError(f"the recipe's model builder failed for data '{info.source}' "
                                 f"(input {info.input_shape}): {type(error).__name__}: "
                                 f"{str(error).splitlines()[0] if str(error) else ''}")
        if searching and not hp.space:
            raise WorkbenchError(
                "the search space is empty: the model builder declares no hp values and no "
                "search.* choices are set (try --set search.learning_rate_min=1e-4 "
                "--set search.learning_rate_max=1e-2)")
        if not has_model:
            _check_model_takes_data(model, data)
        keras.utils.set_random_seed(recipe.seed)  # the build drew from the same RNG

    # ---- training and evaluation ---------------------------------------------------------

    def compile_args(self, recipe):
        return compile_args(recipe)

    def fit(self, ctx):
        from workbench.supervised.steps import fit

        return fit(ctx)

    def federated(self, ctx):
        from workbench.federated.training import federated
        from workbench.tasks import Trained

        # The clients load the data through the family (workbench.supervised.federation).
        run = federated(ctx, self.partition, data_spec(ctx.recipe),
                        "workbench.supervised.federation:load_client_data")
        return Trained(model=run.model, history=run.history, results=run.results)

    def evaluate(self, ctx, model):
        test = ctx.data.batches("test", ctx.recipe.batch_size)
        values = model.evaluate(test, verbose=0, return_dict=True)
        return {f"test_{name}": float(value) for name, value in values.items()}

    def lr_find(self, ctx):
        from workbench.supervised.steps import lr_find

        return lr_find(ctx)

    # ---- search --------------------------------------------------------------------------

    def hypermodel(self, ctx):
        from workbench.supervised.steps import hypermodel

        return hypermodel(ctx, self)

    def search_objective(self, recipe):
        return search_objective(recipe)

    # ---- shipping ------------------------------------------------------------------------

    def export_formats(self, recipe):
        return export_formats(recipe, self.EXPORT_FORMATS)

    def export(self, ctx, model):
        from workbench.supervised.steps import export

        return export(ctx, model, self.export_formats(ctx.recipe))

    def verify(self, ctx):
        from workbench.supervised.steps import verify

        return verify(ctx, self.name)

    def prune(self, ctx):
        from workbench.supervised.steps import prune

        return prune(ctx)

    def quantize(self, ctx):
        from workbench.supervised.steps import quantize

        return quantize(ctx)

    def cluster(self, ctx):
        from workbench.supervised.steps import cluster

        return cluster(ctx)

    def distill(self, ctx):
        from workbench.supervised.steps import distill

        return distill(ctx, self)


def export_formats(recipe, default):
    """`export.formats`, or the family's default when the recipe leaves it unset."""
    return tuple(recipe.export.formats) if recipe.export.formats is not None else default


def _check_model_takes_data(model, data):
    """Run the model on two training examples: a shape it cannot take, or an output that does
    not fit the task, is bad input."""
    import numpy as np

    info = data.info
    x, _ = next(iter(data.train.batch(2)))
    try:
        output = model(x, training=False)
    except Exception as error:
        raise WorkbenchError(
            f"the recipe's model '{model.name}' cannot take data '{info.source}': examples "
            f"have shape {info.input_shape}, the model expects "
            f"{getattr(model, 'input_shape', '?')} ({type(error).__name__})")
    width = int(np.prod(output.shape[1:])) if len(output.shape) > 1 else 1
    units = output_units(info)
    if units and width != units:
        raise WorkbenchError(
            f"the recipe's model '{model.name}' gives {width} outputs per example, but task "
            f"'{info.task}' on '{info.source}' needs {units}; build the last layer "
            "with workbench.tasks.output_layer(data_info)")
