"""What the supervised family reads in labels: which task they imply, whether they fit the task,
and how each task's labels are stored. `Labels` is the family's `workbench.data.LabelReader`:
the data sources take one and ask it, so they never name a task themselves; defining it registers
it, as defining a `Task` subclass registers a family.

| task       | labels                        | stored as                  |
|------------|-------------------------------|----------------------------|
| multiclass | one integer class id          | int32 scalar               |
| binary     | 0 or 1                        | float32 scalar             |
| multilabel | 0/1, one column a label       | float32 vector             |
| regression | numbers, one column a target  | float32 vector             |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


from workbench.data.checks import LabelReader
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class LabelKind:
    """How one supervised task's labels look and are stored."""

    name: str
    class_ids: bool = False  # one integer class id per example
    fixed_classes: Optional[int] = None
    label_columns: bool = False  # one 0/1 column per label
    targets: bool = False  # real-valued targets
    float_labels: bool = True

    def num_classes(self, stats, class_names=None):
        if self.class_ids:
            return self.fixed_classes or (len(class_names) if class_names
                                          else int(stats.maximum) + 1)
        if self.label_columns:
            return stats.width
        return None

    def num_targets(self, width):
        return width if self.targets else None

    def as_array(self, y):
        """NumPy labels of several examples in this task's storage."""
        if self.class_ids:
            return y.reshape(len(y)).astype("int32")
        y = y.astype("float32")
        if self.targets and y.ndim == 1:
            return y[:, None]
        return y.reshape(len(y), -1)

    def as_tensor(self, y):
        """One example's label, in a tf.data map, in this task's storage."""
        import tensorflow as tf

        if self.class_ids:
            return tf.cast(tf.reshape(y, ()), tf.float32 if self.float_labels else tf.int32)
        if self.targets:
            return tf.reshape(tf.cast(y, tf.float32), (-1,))
        return tf.cast(y, tf.float32)

    def check(self, stats, where, num_classes=None):
        """Labels against the task: integer classes in range, 0/1 for binary and multi-label,
        finite targets for regression."""
        if stats.nonfinite:
            raise WorkbenchError(f"{where}: {stats.nonfinite} label value(s) are NaN or infinite")
        if self.class_ids:
            if stats.width and stats.width > 1:
                raise WorkbenchError(
                    f"{where}: task '{self.name}' needs one integer class id per example, got "
                    f"{stats.width} label values per example (use --set task=multilabel or "
                    "task=regression)")
            if not stats.is_integer:
                raise WorkbenchError(
                    f"{where}: task '{self.name}' needs integer class ids, got fractional labels "
                    "(e.g. regression targets); use --set task=regression or integer labels")
            if stats.minimum < 0:
                raise WorkbenchError(f"{where}: class ids must be >= 0, found {stats.minimum:g}")
            limit = self.fixed_classes or num_classes
            if limit is not None and stats.maximum >= limit:
                raise WorkbenchError(
                    f"{where}: label {stats.maximum:g} is out of range for {limit} classes "
                    f"(class ids must be 0..{limit - 1})")
            if len(stats.distinct) < 2:
                raise WorkbenchError(
                    f"{where}: every example has the same label "
                    f"({next(iter(stats.distinct), '?')}); a classifier needs at least two "
                    "classes")
        if self.label_columns and not stats.zero_one:
            raise WorkbenchError(
                f"{where}: task '{self.name}' needs 0/1 labels (one column per label), found "
                f"values from {stats.minimum:g} to {stats.maximum:g}")


KINDS = {
    "multiclass": LabelKind("multiclass", class_ids=True, float_labels=False),
    "binary": LabelKind("binary", class_ids=True, fixed_classes=2),
    "multilabel": LabelKind("multilabel", label_columns=True),
    "regression": LabelKind("regression", targets=True),
}


def infer_kind(stats) -> LabelKind:
    """The task the labels imply: several columns are multi-label (all 0/1) or regression; few
    distinct non-negative integers are classes (binary for 0/1); anything else is regression."""
    if stats.width and stats.width > 1:
        return KINDS["multilabel" if stats.zero_one else "regression"]
    if stats.is_integer and stats.minimum >= 0 and (
            len(stats.distinct) <= max(2, min(1000, stats.count // 5))):
        return KINDS["binary" if stats.distinct <= {0, 1} else "multiclass"]
    return KINDS["regression"]


class Labels(LabelReader):
    """The run's reading of labels: the recipe's task, or (with `task=None`) the one the labels
    imply. Data sources call `resolve` once they have seen the labels."""

    def __init__(self, task=None, where="the data"):
        if task is not None and task not in KINDS:
            raise WorkbenchError(f"{where} holds labelled examples, which task '{task}' does not "
                                 f"take (labelled data serves {', '.join(KINDS)})")
        self.task = task

    def resolve(self, stats) -> LabelKind:
        return infer_kind(stats) if self.task is None else KINDS[self.task]

    def for_class_folders(self, class_count, what) -> LabelKind:
        """A class-per-subfolder source: the recipe's classification task, or binary for two
        folders and multiclass for more."""
        if self.task is None:
            return KINDS["binary" if class_count == 2 else "multiclass"]
        kind = KINDS[self.task]
        if not kind.class_ids:
            raise WorkbenchError(f"a class-per-folder {what} set is a classification task, not "
                                 f"'{self.task}'")
        return kind
