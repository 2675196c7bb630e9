"""Bad data is bad input: found in one streaming pass before any work, and named in one line.

Each check raises `WorkbenchError` naming where the problem is (file, column, class folder or
array) and what is wrong, so the CLI exits with code 2 before a run directory exists.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import WorkbenchError

MIN_EXAMPLES_PER_SPLIT = 1


def count_nonfinite(x) -> int:
    """NaN and +-inf values among the floating-point entries of `x` (0 for non-float data)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return 0
    return int(x.size - np.count_nonzero(np.isfinite(x)))


def check_fractions(val_fraction, test_fraction, where="data_options"):
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
            raise WorkbenchError(f"{where}.{name} must be in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise WorkbenchError(
            f"{where}.val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves no "
            "training data; keep their sum below 1 (e.g. 0.1 and 0.2)")


class LabelStats:
    """What one pass over the labels learns: enough to check them against the task."""

    MAX_DISTINCT = 10_000

    def __init__(self):
        self.count = 0
        self.nonfinite = 0
        self.is_integer = True
        self.minimum = np.inf
        self.maximum = -np.inf
        self.width = None
        self.distinct = set()
        self.zero_one = True

    def add_batch(self, y):
        """`y`: labels of several examples, first axis the examples."""
        y = np.asarray(y)
        width = 1 if y.ndim <= 1 else int(np.prod(y.shape[1:]))
        if self.width is None:
            self.width = width
        elif self.width != width:
            raise WorkbenchError(f"labels change shape: {self.width} then {width} values "
                                 "per example")
        self.count += len(y)
        values = y.reshape(-1)
        if np.issubdtype(y.dtype, np.floating):
            self.nonfinite += count_nonfinite(values)
            values = values[np.isfinite(values)]
            if values.size and np.any(values != np.round(values)):
                self.is_integer = False
        elif not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
            raise WorkbenchError(f"labels of dtype {y.dtype} are not numbers")
        if values.size:
            self.minimum = min(self.minimum, float(values.min()))
            self.maximum = max(self.maximum, float(values.max()))
            if not np.isin(values, (0, 1)).all():
                self.zero_one = False
            if len(self.distinct) <= self.MAX_DISTINCT:
                self.distinct.update(np.unique(values).tolist())


class LabelReader:
    """What a data source asks about its labels: which kind they are (`resolve(stats)` over a
    `LabelStats`, `for_class_folders(count, what)` for a class-per-folder source), each kind
    knowing how its labels are stored. A task family that reads labels subclasses it (the
    supervised family's `workbench.supervised.labels.Labels`); defining the subclass registers
    it, so the data sources never name a task."""

    def __init__(self, task=None, where="the data"):
        self.task = task

    def resolve(self, stats):
        raise NotImplementedError

    def for_class_folders(self, class_count, what):
        raise NotImplementedError


def label_reader(task, where="the data"):
    """What reads the labels for `task` (a name, `None` to let the labels say, or a reader
    already): the registered `LabelReader` subclass, made for `task`."""
    if isinstance(task, LabelReader):
        return task
    readers = LabelReader.__subclasses__()
    if len(readers) != 1:
        raise WorkbenchError(
            "no task family that reads labels is imported (import workbench.supervised)"
            if not readers else "more than one label reader is registered: "
            + ", ".join(reader.__name__ for reader in readers))
    return readers[0](task, where)


def split_assignment(count, seed, val_fraction, test_fraction, labels=None, where="data"):
    """One split code per example (0 train, 1 validation, 2 test), fixed by `seed`.

    Stratified by `labels` when they are given (class labels known up front), so every split has
    the classes in the same proportions; otherwise a seeded permutation. A data set too small for
    the requested split is bad input."""
    check_fractions(val_fraction, test_fraction)
    n_test = int(round(count * test_fraction))
    n_val = int(round(count * val_fraction))
    n_train = count - n_val - n_test
    if min(n_train, n_val, n_test) < MIN_EXAMPLES_PER_SPLIT:
        raise WorkbenchError(
            f"{where}: {count} examples are too few to split into train/validation/test with "
            f"val_fraction={val_fraction:g} and test_fraction={test_fraction:g} "
            f"({n_train}/{n_val}/{n_test}); add data or change data_options")
    assignment = np.zeros(count, dtype="int8")
    index = np.arange(count)
    if labels is not None:
        labels = np.asarray(labels)
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) > min(n_val, n_test) or counts.min() < 3:
            labels = None  # too few examples of some class to stratify: a seeded shuffle instead
    if labels is None:
        order = np.random.default_rng(seed).permutation(count)
        assignment[order[:n_val]] = 1
        assignment[order[n_val:n_val + n_test]] = 2
        return assignment
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(index, test_size=n_test, random_state=seed, stratify=labels)
    _, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=labels[rest])
    assignment[val] = 1
    assignment[test] = 2
    return assignment


def select_split(dataset, assignment, code):
    """The examples of `dataset` whose position has split code `code`; streams, never caches."""
    import tensorflow as tf

    table = tf.constant(assignment)
    return (dataset.enumerate()
            .filter(lambda i, *_: tf.equal(tf.gather(table, i), code))
            .map(lambda i, example: example, num_parallel_calls=tf.data.AUTOTUNE))
