import time

import keras


@keras.saving.register_keras_serializable(package="workbench")
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` with a minimum interval between backups.

    Keras' callback writes the whole training state (weights, optimizer state, epoch) at the end of
    every epoch, so that a run killed at any moment and started again continues from the last
    finished epoch. For small models with sub-second epochs that write costs a noticeable share of
    the training time; `min_interval_seconds` skips epoch-end backups until that many seconds have
    passed since the previous one, bounding both the overhead and the work a crash can lose. With
    `min_interval_seconds=0` it is exactly Keras' callback.

    Example:

    >>> import numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = BackupAndRestore(tempfile.mkdtemp(), min_interval_seconds=30)
    >>> history = model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=2, callbacks=[backup],
    ...                     verbose=0)

    Args:
        backup_dir: where the training state is kept (deleted when training finishes, unless
            `delete_checkpoint=False`).
        min_interval_seconds: least time between two epoch-end backups; the first epoch always
            backs up.
        save_freq, double_checkpoint, delete_checkpoint: as in Keras' `BackupAndRestore`.
    """

    def __init__(self, backup_dir, min_interval_seconds=0.0, save_freq="epoch",
                 double_checkpoint=False, delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=double_checkpoint,
                         delete_checkpoint=delete_checkpoint)
        self.min_interval_seconds = float(min_interval_seconds)
        self._last_backup = None

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if (self.save_freq == "epoch" and self._last_backup is not None
                and now - self._last_backup < self.min_interval_seconds):
            self._current_epoch = epoch + 1
            self._last_batch_seen = 0
            return
        super().on_epoch_end(epoch, logs)
        self._last_backup = time.monotonic()

    def get_config(self):
        return {"backup_dir": self.backup_dir, "min_interval_seconds": self.min_interval_seconds,
                "save_freq": self.save_freq, "double_checkpoint": self.double_checkpoint,
                "delete_checkpoint": self.delete_checkpoint}
