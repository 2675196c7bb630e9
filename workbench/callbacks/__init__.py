"""Training callbacks (`keras.callbacks.Callback` subclasses) and the
batch-size schedule the train stage applies between `fit()` phases."""

from workbench.callbacks.backup_and_restore import BackupAndRestore
from workbench.callbacks.batch_size_schedule import BatchSizeSchedule
from workbench.callbacks.early_stopping import EarlyStopping
from workbench.callbacks.lr_finder import LRFinder
from workbench.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau

__all__ = [
    "BackupAndRestore",
    "BatchSizeSchedule",
    "EarlyStopping",
    "LRFinder",
    "ReduceLROnPlateau",
]
