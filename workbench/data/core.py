"""What every data source produces: three `tf.data` pipelines of single examples and a `DataInfo`.

Batching, shuffling and prefetching happen in one place, `Data.batches`, so every stage sees the
data the same way and nothing holds a whole split in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional



@dataclass
class DataInfo:
    """What a model builder (and every stage) needs to know about the data.

    Args:
        name: short name of the data set (for the report).
        task: the name of the run's task (the task family decides it).
        input_shape: shape of one example's input, without the batch dimension (a dict of shapes
            for inputs with several named features).
        input_dtype: dtype of the input (`"float32"`, `"int32"`, `"string"`, or a dict).
        num_classes: classes (2 for a 0/1 label) or label columns; `None` otherwise.
        num_targets: real-valued target columns; `None` otherwise.
        class_names: names of the classes or labels, in label order, where known.
        vocabulary_size: token vocabulary for text and language models.
        sizes: examples per split (`train`, `val`, `test`), where known.
        fingerprint: a hash of the data's content and split, for the report.
        source: the `data` setting it came from.
        preprocessing: a Keras layer or model that turns raw inputs into what `input_shape`
            describes, adapted on the training split (`None` when inputs are used as they are).
        input_range: `(low, high)` of the input values where known (images: (0, 255) from
            files, (0, 1) for the bundled digits), for a builder's `Rescaling`.
        target_mean, target_std: moments of the real-valued training targets, so a builder
            can predict in standardized units and rescale its output.
    """

    name: str
    task: str
    input_shape: Any
    input_dtype: Any = "float32"
    num_classes: Optional[int] = None
    num_targets: Optional[int] = None
    class_names: Optional[list] = None
    vocabulary_size: Optional[int] = None
    sizes: dict = field(default_factory=dict)
    fingerprint: str = ""
    source: str = ""
    preprocessing: Any = None
    input_range: Any = None
    target_mean: Any = None
    target_std: Any = None


@dataclass
class Data:
    """Train/validation/test pipelines of unbatched `(x, y)` examples, and what they hold."""

    train: Any
    val: Any
    test: Any
    info: DataInfo
    # True when the source reshuffles its training split itself, before decoding (file paths
    # rather than decoded images), so memory does not grow with the data set's size.
    train_shuffled: bool = False
    # The training split once more, in one fixed order, where `train` reshuffles itself (`None`:
    # `train` keeps one order already). Positions in the training split refer to this order.
    train_in_order: Any = None
    # Ways to name a group for each training example, in that fixed order: "column" (a CSV's
    # column, by name) or "folder" (a folder level below the class folders, 1 the first),
    # each a function of the column or level returning one string per training example.
    groups: dict = field(default_factory=dict)

    def sizes(self):
        return dict(self.info.sizes)

    def split(self, name):
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def stable_train(self):
        """The training split in its fixed order: the same on every pass, and in every process
        that loads the same source with the same options and seed."""
        return self.train if self.train_in_order is None else self.train_in_order

    def batches(self, split, batch_size, shuffle=False, seed=0, repeat=False, drop_remainder=False):
        """`split` ("train", "val" or "test") batched and prefetched; shuffled every epoch with
        `shuffle` (through a buffer, so memory does not grow with the data set's size)."""
        import tensorflow as tf

        dataset = self.split(split)
        if shuffle and not (split == "train" and self.train_shuffled):
            dataset = dataset.shuffle(shuffle_buffer(self.info.sizes.get(split)), seed=seed,
                                      reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


SHUFFLE_BUFFER = 10_000


def shuffle_buffer(size):
    """A full shuffle for small splits, a bounded buffer for large ones."""
    return max(1, min(size or SHUFFLE_BUFFER, SHUFFLE_BUFFER))
