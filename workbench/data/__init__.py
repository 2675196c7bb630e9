"""Data sources -> `tf.data` pipelines of single examples plus a `DataInfo` (see core.py)."""

from workbench.data.arrays import DataInfo as _LegacyInfo  # noqa: F401
from workbench.data.arrays import DataSplits, load_data, load_digits, load_npz, make_dataset
from workbench.data.core import TASKS, Data, DataInfo

__all__ = ["TASKS", "Data", "DataInfo", "DataSplits", "load_data", "load_digits", "load_npz",
           "make_dataset"]
