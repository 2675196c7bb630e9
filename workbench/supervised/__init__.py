"""The supervised family: multiclass, binary, multilabel and regression on labelled examples.

Importing this package registers the family (`SupervisedTask`) and its label reader (`Labels`,
the `workbench.data.LabelReader` the data sources ask what labels mean). Recipes build their model's last
layer with `output_layer`; the loss, metrics and monitors of each task are here too.
"""

from workbench.supervised.labels import Labels
from workbench.supervised.task import (
    TASKS, SupervisedTask, check_loss_name, check_metric_names, check_recipe_names,
    compile_args, get_task, loss_for, metrics_for, monitors, output_layer, output_units,
    search_objective)

__all__ = ["TASKS", "Labels", "SupervisedTask", "check_loss_name", "check_metric_names",
           "check_recipe_names", "compile_args", "get_task", "loss_for", "metrics_for",
           "monitors", "output_layer", "output_units", "search_objective"]
