import bisect

import keras


@keras.saving.register_keras_serializable(package="workbench")
class BatchSizeSchedule:
    """Grow the batch size at set epochs instead of decaying the rate.

    Decaying the learning rate by a factor and multiplying the batch size
    by the same factor shrink the noise scale of SGD alike, so they reach
    the same accuracy after the same number of epochs, but the larger
    batches need proportionally fewer parameter updates and parallelize
    better (Smith, Kindermans, Ying & Le, 2017, "Don't Decay the Learning
    Rate, Increase the Batch Size", https://arxiv.org/abs/1711.00489):

    ```python
    def batch_size_at(epoch, base_batch_size):
        k = number of entries of `epochs` that are <= epoch
        return min(round(base_batch_size * factor ** k), max_batch_size)
    ```

    Once `max_batch_size` is reached, the paper goes back to decaying the
    learning rate for the remaining drops; that is the train stage's call.

    Why not a `Callback`: `fit()` draws batches from one dataset whose batch
    size is fixed when the dataset is built, and a callback cannot swap it
    mid-`fit()`. The train stage instead runs one `fit()` per phase (see
    `phases`), rebuilding the dataset with that phase's batch size and
    passing `initial_epoch` so epoch numbers, schedules and other callbacks
    carry on. This object only answers "which batch size when"; it is
    small, has no state, and serializes with
    `keras.saving.serialize_keras_object` so recipes and run reports can
    store it.

    Example:

    >>> schedule = BatchSizeSchedule(factor=5, epochs=[60, 120, 160])
    >>> [schedule.batch_size_at(e, 128) for e in (0, 59, 60, 130, 170)]
    [128, 128, 640, 3200, 16000]
    >>> schedule.phases(total_epochs=130, base_batch_size=128)
    [(0, 60, 128), (60, 120, 640), (120, 130, 3200)]

    Args:
        factor: Positive number. Multiplier applied to the batch size at
            each epoch in `epochs`; the paper uses the factor the rate
            schedule would have divided by (e.g. 5 or 10).
        epochs: Iterable of non-negative ints, the 0-based epochs at whose
            start the batch size is multiplied (as in Keras' callbacks,
            epoch 0 is the first).
        max_batch_size: `None` or a positive int capping the batch size.
    """

    def __init__(self, factor, epochs, max_batch_size=None):
        if factor <= 0:
            raise ValueError(
                f"Argument `factor` must be > 0. Received: factor={factor}"
            )
        epochs = sorted(int(e) for e in epochs)
        if any(e < 0 for e in epochs) or len(set(epochs)) != len(epochs):
            raise ValueError(
                "Argument `epochs` must hold distinct non-negative epoch "
                f"indices. Received: epochs={epochs}"
            )
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(
                "Argument `max_batch_size` must be None or > 0. "
                f"Received: max_batch_size={max_batch_size}"
            )
        self.factor = factor
        self.epochs = epochs
        self.max_batch_size = max_batch_size

    def batch_size_at(self, epoch, base_batch_size):
        """The batch size for 0-based `epoch`, starting from
        `base_batch_size`."""
        drops = bisect.bisect_right(self.epochs, epoch)
        size = max(1, round(base_batch_size * self.factor**drops))
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        return size

    def phases(self, total_epochs, base_batch_size):
        """Splits `range(total_epochs)` into runs of equal batch size.

        Returns:
            A list of `(initial_epoch, end_epoch, batch_size)`, meant for
            `fit(..., initial_epoch=initial_epoch, epochs=end_epoch)` on a
            dataset batched with `batch_size`.
        """
        result = []
        for epoch in range(total_epochs):
            size = self.batch_size_at(epoch, base_batch_size)
            if result and result[-1][2] == size:
                result[-1] = (result[-1][0], epoch + 1, size)
            else:
                result.append((epoch, epoch + 1, size))
        return result

    def get_config(self):
        return {
            "factor": self.factor,
            "epochs": list(self.epochs),
            "max_batch_size": self.max_batch_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
