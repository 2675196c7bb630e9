"""Data sources -> `tf.data` pipelines of single examples plus a `DataInfo` (see core.py).

`load_data(source, seed, task, **data_options)` picks the source by the `data` setting:

| `data=`                        | source                                                     |
|--------------------------------|------------------------------------------------------------|
| `digits`                       | scikit-learn's bundled 8x8 digits                          |
| `stdlib_packages`              | Python source chunks labelled by standard-library package  |
| `sklearn:NAME`                 | breast_cancer, wine, iris, diabetes (scikit-learn's tables) |
| `PATH.npz`                     | arrays `x, y` or `x_train, y_train, x_test, y_test`        |
| `PATH.csv`                     | a CSV with a header; `data_options.target` names the target |
| `PATH.tfrecord` (or a glob)    | TFRecords; `data_options.features` and `data_options.label` |
| `DIR/` with class subfolders   | images or `.txt` files, one subfolder per class            |
| `tfds:NAME`                    | a TensorFlow Datasets set prepared on disk                 |
| `module:function`              | the user's function returning `tf.data.Dataset`s           |
"""

from __future__ import annotations

from pathlib import Path

from workbench.data.checks import LabelReader
from workbench.data.core import Data, DataInfo
from workbench.errors import WorkbenchError, suggest

COMMON_OPTIONS = {"val_fraction", "test_fraction"}
SOURCE_OPTIONS = {
    "digits": set(),
    "sklearn": set(),
    "npz": set(),
    "csv": {"target", "categorical", "exclude"},
    "tfrecord": {"features", "label", "compression"},
    "images": {"image_size", "color_mode"},
    "text": {"max_tokens", "sequence_length", "max_length"},
    "tfds": {"data_dir"},
    "function": None,  # any: passed to the user's function as keyword arguments
}


def source_kind(source: str) -> str:
    """Which loader handles `source` (see the module docstring)."""
    if source == "digits":
        return "digits"
    if source == "stdlib_packages":
        return "text"
    if source.startswith("sklearn:"):
        return "sklearn"
    if source.startswith("tfds:"):
        return "tfds"
    suffix = Path(source).suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tfrecord", ".tfrecords") or "*" in source:
        return "tfrecord"
    if Path(source).is_dir():
        from workbench.data.folders import kind_of_folder

        return kind_of_folder(source)
    if ":" in source and not Path(source).exists():
        return "function"
    if Path(source).exists():
        raise WorkbenchError(f"data '{source}' is a file of a kind the workbench does not read; "
                             "use .npz, .csv, .tfrecord, a folder with class subfolders, "
                             "tfds:NAME, sklearn:NAME or module:function")
    raise WorkbenchError(
        f"data '{source}' does not exist; use digits, sklearn:NAME, tfds:NAME, module:function, "
        "or a path to a .npz, .csv or .tfrecord file or a folder with class subfolders")


def check_options(kind, options):
    allowed = SOURCE_OPTIONS[kind]
    if allowed is None:
        return
    allowed = allowed | COMMON_OPTIONS
    for key in options:
        if key not in allowed:
            raise WorkbenchError(f"unknown data_options.{key} for {kind} data: "
                                 f"{suggest(key, sorted(allowed))}")


def load_data(source: str, seed=0, task=None, **options) -> Data:
    """Load `source` into checked, fixed train/validation/test pipelines (see the table above)."""
    from workbench.data import arrays, csv_source, folders, streams
    from workbench.data.checks import check_fractions, label_reader

    task = label_reader(task, f"data '{source}'")
    kind = source_kind(source)
    check_options(kind, options)
    fractions = {key: options.pop(key) for key in COMMON_OPTIONS if key in options}
    check_fractions(fractions.get("val_fraction", 0.1), fractions.get("test_fraction", 0.2))
    common = dict(seed=seed, task=task, **fractions)
    if kind == "digits":
        return arrays.load_digits(**common)
    if kind == "sklearn":
        return arrays.load_sklearn_table(source.split(":", 1)[1], **common)
    if kind == "npz":
        return arrays.load_npz(source, **common)
    if kind == "csv":
        return csv_source.load_csv(source, **common, **options)
    if kind == "images":
        return folders.load_image_folder(source, **common, **options)
    if kind == "text":
        if source == "stdlib_packages":
            from workbench.data.stdlib_text import stdlib_packages_folder

            source = str(stdlib_packages_folder())
        return folders.load_text_folder(source, **common, **options)
    if kind == "tfrecord":
        return streams.load_tfrecord(source, **common, **options)
    if kind == "tfds":
        return streams.load_tfds(source.split(":", 1)[1], **common, **options)
    return streams.load_function(source, **common, **options)


def representative_inputs(data: Data, count: int, seed=0):
    """A fixed, seeded sample of `count` training inputs (fewer when the split is smaller), as a
    NumPy array, drawn by streaming through a shuffle buffer: calibration data for int8."""
    import numpy as np

    from workbench.data.core import shuffle_buffer

    sample = data.train
    if not data.train_shuffled:  # a bounded buffer: a fair sample without holding the split
        buffer = min(shuffle_buffer(data.info.sizes.get("train")), max(4 * count, 1024))
        sample = sample.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    inputs = [x for x, _ in sample.take(count).as_numpy_iterator()]
    return np.stack(inputs) if inputs else np.zeros((0, *data.info.input_shape), "float32")


def make_dataset(x, y, batch_size, shuffle=False, seed=0):
    """A batched, prefetched `tf.data.Dataset` over in-memory arrays (the compression API's
    NumPy entry points); reshuffled every epoch when `shuffle` is set."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


__all__ = ["Data", "DataInfo", "LabelReader", "load_data", "make_dataset", "representative_inputs",
           "source_kind"]
