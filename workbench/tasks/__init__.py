"""The task-family contract: `Task` (what a family computes and declares), `Trained` (what its
training hands the train stage) and the registry that finds the families by task name.

The families live in their own packages and register themselves when imported:
`workbench.supervised` (multiclass, binary, multilabel, regression), `workbench.lm` (a language
model trained from scratch) and `workbench.hub` (pretrained KerasHub / Hugging Face causal LMs).
"""

from workbench.tasks.base import (
    COMMON_READS, STAGE_ORDER, Task, Trained, changed_settings, families, resolve_task,
    task_class, task_names, task_of)

__all__ = ["COMMON_READS", "STAGE_ORDER", "Task", "Trained", "changed_settings", "families",
           "resolve_task", "task_class", "task_names", "task_of"]
