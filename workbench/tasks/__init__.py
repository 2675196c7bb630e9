"""Task families: what kind of problem a run solves, and everything that follows from it.

`Task` (workbench.tasks.base) is the contract; a family registers the task names it answers to
with `@register_task`. The supervised family (multiclass, binary, multilabel, regression) lives in
`workbench.tasks.supervised`; the language model in `workbench.lm.task`. The helpers recipes use
to build their last layer (`output_layer`) and their compile arguments are re-exported here.
"""

from workbench.tasks.base import (
    COMMON_READS, Task, Trained, changed_settings, register_task, resolve_task, task_class,
    task_names)
from workbench.tasks.supervised import (
    TASKS, SupervisedTask, check_loss_name, check_metric_names, check_recipe_names,
    compile_args, get_task, loss_for, metrics_for, monitors, output_layer, output_units,
    search_objective)

__all__ = ["COMMON_READS", "TASKS", "SupervisedTask", "Task", "Trained", "changed_settings",
           "check_loss_name", "check_metric_names", "check_recipe_names", "compile_args",
           "get_task", "loss_for", "metrics_for", "monitors", "output_layer", "output_units",
           "register_task", "resolve_task", "search_objective", "task_class", "task_names"]
