"""Sources that are streams already: TFRecord files, a user's `module:function`, and TFDS.

- TFRecord: `data=PATH.tfrecord` (or a glob) with the feature description in the recipe:
  `data_options.features = {"image": {"shape": [28, 28, 1], "dtype": "float32"},
  "label": {"shape": [], "dtype": "int64"}}` and `data_options.label = "label"`.
- `module:function`: a function returning `tf.data.Dataset`s of unbatched `(x, y)` examples:
  a dict with `train`, `val`, `test` (or `train` and `test`, or `train` alone), or a tuple of
  one to three data sets in that order. What is missing is split off `train` deterministically.
- `tfds:NAME`: a TensorFlow Datasets set already prepared on disk (never downloaded here).

One streaming pass over each split checks it before any work: example count, NaN/inf in the
inputs, consistent example shapes, and labels against the task.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import importlib.util
from pathlib import Path

import numpy as np

from workbench.data.checks import (LabelStats, check_fractions, count_nonfinite, label_reader,
                                   select_split)
from workbench.data.core import Data, DataInfo
from workbench.errors import WorkbenchError

SCAN_BATCH = 1024


def scan_split(dataset, where):
    """Count examples, NaN/inf inputs and label statistics in one pass; return (count, stats,
    input shape, fingerprint)."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise WorkbenchError(f"{where}: expected examples `(x, y)`, got elements {spec}")
    stats = LabelStats()
    count, bad = 0, 0
    shape = None
    digest = hashlib.sha256()
    # Inputs of unknown size (a generator, variable-length records) are read one by one, so
    # examples of different shapes are found rather than failing inside `batch`.
    batched = dataset.batch(SCAN_BATCH) if not _ragged(spec) else dataset.map(
        lambda x, y: (tf.nest.map_structure(lambda t: t[None], x), y[None]))
    # One streaming pass over the whole split, by design (every example is checked); each batch
    # is reduced to counts and label statistics and dropped, so memory stays one batch.
    for batch in batched:
        x, y = tf.nest.map_structure(lambda tensor: tensor.numpy(), batch)
        arrays = x.values() if isinstance(x, dict) else [x]
        for array in arrays:
            bad += count_nonfinite(array)
        example_shape = {k: v.shape[1:] for k, v in x.items()} if isinstance(x, dict) \
            else x.shape[1:]
        if shape is None:
            shape = example_shape
        elif shape != example_shape:
            raise WorkbenchError(f"{where}: examples have inconsistent shapes "
                                 f"({shape} and {example_shape})")
        stats.add_batch(y)
        count += len(y)
        digest.update(np.asarray(y).tobytes())
    if bad:
        raise WorkbenchError(f"{where}: {bad} input value(s) are NaN or infinite; clean or "
                             "impute them first")
    return count, stats, shape, digest.hexdigest()[:16]


def _ragged(spec):
    x_spec = spec[0]
    specs = x_spec.values() if isinstance(x_spec, dict) else [x_spec]
    return any(s.shape.rank is None or None in s.shape.as_list() for s in specs)


def from_streams(splits, *, name, source, seed, task, val_fraction, test_fraction,
                 class_names=None):
    """Check and complete `splits` (a dict of train/val/test data sets; val and test may be
    missing and are then split off train) into `Data`."""
    import tensorflow as tf

    check_fractions(val_fraction, test_fraction)
    train = splits.get("train")
    if train is None:
        raise WorkbenchError(f"'{source}' gives no training data")
    missing = [s for s in ("val", "test") if splits.get(s) is None]
    if missing:
        count, stats, _, _ = scan_split(train, f"'{source}' train")
        fractions = {"val": val_fraction, "test": test_fraction}
        holdout_val = fractions["val"] if "val" in missing else 0.0
        holdout_test = fractions["test"] if "test" in missing else 0.0
        where = f"'{source}' train"
        if count == 0:
            raise WorkbenchError(f"{where} is empty")
        assignment = _holdout(count, seed, holdout_val, holdout_test, where)
        parts = {code: select_split(train, assignment, code) for code in (0, 1, 2)}
        splits = {"train": parts[0], "val": splits.get("val") or parts[1],
                  "test": splits.get("test") or parts[2]}
    merged = LabelStats()
    sizes, shapes, digests = {}, set(), []
    for split in ("train", "val", "test"):
        count, stats, shape, digest = scan_split(splits[split], f"'{source}' {split}")
        if count == 0:
            raise WorkbenchError(f"'{source}' {split} split is empty; add data or change "
                                 "data_options.val_fraction/test_fraction")
        sizes[split] = count
        shapes.add(repr(shape))
        digests.append(digest)
        merged.count += stats.count
        merged.nonfinite += stats.nonfinite
        merged.is_integer &= stats.is_integer
        merged.minimum = min(merged.minimum, stats.minimum)
        merged.maximum = max(merged.maximum, stats.maximum)
        merged.zero_one &= stats.zero_one
        merged.distinct |= stats.distinct
        if merged.width is None:
            merged.width = stats.width
        elif stats.width != merged.width:
            raise WorkbenchError(f"'{source}': labels have {merged.width} values per example "
                                 f"in one split and {stats.width} in {split}")
    if len(shapes) > 1:
        raise WorkbenchError(f"'{source}': the splits' example shapes differ: {sorted(shapes)}")
    kind = label_reader(task, f"'{source}'").resolve(merged)
    num_classes = kind.num_classes(merged, class_names)
    kind.check(merged, f"'{source}' labels", num_classes)
    datasets = [splits[s].map(lambda x, y: (x, kind.as_tensor(y)),
                              num_parallel_calls=tf.data.AUTOTUNE)
                for s in ("train", "val", "test")]
    x_spec = datasets[0].element_spec[0]
    if isinstance(x_spec, dict):
        input_shape = {k: tuple(v.shape) for k, v in x_spec.items()}
        input_dtype = {k: v.dtype.name for k, v in x_spec.items()}
    else:
        input_shape, input_dtype = tuple(x_spec.shape), x_spec.dtype.name
    info = DataInfo(name=name, task=kind.name, input_shape=input_shape, input_dtype=input_dtype,
                    num_classes=num_classes, num_targets=kind.num_targets(merged.width),
                    class_names=class_names, sizes=sizes,
                    fingerprint=hashlib.sha256("".join(digests).encode()).hexdigest()[:16],
                    source=source)
    return Data(*datasets, info=info)


def _holdout(count, seed, val_fraction, test_fraction, where):
    """Split codes for `count` streamed examples, fixed by the seed; a zero fraction keeps that
    split out (it came from the source)."""
    order = np.random.default_rng(seed).permutation(count)
    n_val = int(round(count * val_fraction))
    n_test = int(round(count * test_fraction))
    if (val_fraction and n_val < 1) or (test_fraction and n_test < 1) or \
            count - n_val - n_test < 1:
        raise WorkbenchError(
            f"{where}: {count} examples are too few to hold out val_fraction={val_fraction:g} "
            f"and test_fraction={test_fraction:g}; add data or change data_options")
    assignment = np.zeros(count, dtype="int8")
    assignment[order[:n_val]] = 1
    assignment[order[n_val:n_val + n_test]] = 2
    return assignment


# --------------------------------------------------------------------------------------------

_DTYPES = {"float32": "float32", "float": "float32", "int64": "int64", "int": "int64",
           "string": "string", "bytes": "string"}


def load_tfrecord(pattern, seed=0, task=None, val_fraction=0.1, test_fraction=0.2,
                  features=None, label="label", compression=None):
    """TFRecord files of `tf.train.Example`s parsed with `features` (see the module docstring)."""
    import tensorflow as tf

    files = sorted(glob.glob(str(pattern)))
    if not files:
        raise WorkbenchError(f"no TFRecord file matches '{pattern}'")
    if not features:
        raise WorkbenchError(
            f"TFRecord data '{pattern}' needs a feature description: data_options.features = "
            "{NAME: {shape: [...], dtype: float32|int64|string}, ...} and data_options.label")
    description = {}
    for name, spec in features.items():
        if not isinstance(spec, dict) or _DTYPES.get(str(spec.get("dtype"))) is None:
            raise WorkbenchError(f"data_options.features.{name} must be "
                                 "{shape: [...], dtype: float32|int64|string}")
        description[name] = tf.io.FixedLenFeature(
            list(spec.get("shape", [])), getattr(tf, _DTYPES[str(spec["dtype"])]))
    if label not in description:
        raise WorkbenchError(f"data_options.label '{label}' is not among data_options.features "
                             f"({', '.join(description)})")
    inputs = [name for name in description if name != label]
    if not inputs:
        raise WorkbenchError("data_options.features describes only the label; add the inputs")
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
                pass
        except tf.errors.OpError as error:
            raise WorkbenchError(f"'{path}' is not a readable TFRecord file: "
                                 f"{str(error).splitlines()[0]}")

    def parse(record):
        example = tf.io.parse_single_example(record, description)
        x = example[inputs[0]] if len(inputs) == 1 else {k: example[k] for k in inputs}
        if len(inputs) == 1 and x.dtype != tf.string:
            x = tf.cast(x, tf.float32)
        return x, example[label]

    records = tf.data.TFRecordDataset(files, compression_type=compression)
    dataset = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    try:
        for _ in dataset.take(1):
            pass
    except tf.errors.OpError as error:
        raise WorkbenchError(f"'{pattern}': the records do not match data_options.features: "
                             f"{str(error).splitlines()[0][:200]}")
    return from_streams({"train": dataset}, name=Path(files[0]).stem, source=str(pattern),
                        seed=seed, task=task, val_fraction=val_fraction,
                        test_fraction=test_fraction)


def load_function(reference, seed=0, task=None, val_fraction=0.1, test_fraction=0.2, **kwargs):
    """`module:function` (or `path/file.py:function`) returning data sets of `(x, y)` examples."""
    import tensorflow as tf

    module_name, _, function_name = reference.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise WorkbenchError(f"data source file '{path}' does not exist")
            spec = importlib.util.spec_from_file_location(f"workbench_data_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except WorkbenchError:
        raise
    except Exception as error:  # the user's module failed to import: bad input, not a crash
        raise WorkbenchError(f"data source '{reference}': importing '{module_name}' failed: "
                             f"{type(error).__name__}: {error}")
    function = getattr(module, function_name, None)
    if not callable(function):
        raise WorkbenchError(f"data source '{reference}': '{module_name}' has no function "
                             f"'{function_name}'")
    try:
        result = function(**kwargs)
    except Exception as error:
        raise WorkbenchError(f"data source '{reference}' raised {type(error).__name__}: {error}")
    if isinstance(result, tf.data.Dataset):
        result = {"train": result}
    elif isinstance(result, (tuple, list)) and 1 <= len(result) <= 3:
        result = dict(zip(("train", "test") if len(result) == 2 else ("train", "val", "test"),
                          result))
    if not isinstance(result, dict) or not all(
            isinstance(v, tf.data.Dataset) for v in result.values() if v is not None):
        raise WorkbenchError(f"data source '{reference}' must return tf.data.Dataset(s): one, "
                             "a (train, test) or (train, val, test) tuple, or a dict with "
                             "train/val/test")
    unknown = set(result) - {"train", "val", "test"}
    if unknown:
        raise WorkbenchError(f"data source '{reference}' returned unknown splits "
                             f"{sorted(unknown)}; use train, val, test")
    return from_streams(result, name=function_name, source=reference, seed=seed, task=task,
                        val_fraction=val_fraction, test_fraction=test_fraction)


def load_tfds(name, seed=0, task=None, val_fraction=0.1, test_fraction=0.2, data_dir=None):
    """A TensorFlow Datasets set that is already prepared on disk, as `(x, y)` examples."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise WorkbenchError(f"data 'tfds:{name}' needs tensorflow-datasets: pip install "
                             "tensorflow-datasets, then prepare the set once where a network "
                             f"is available (tfds build {name})")
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError and others
        raise WorkbenchError(f"tfds:{name}: {str(error).splitlines()[0]}")
    if not Path(builder.data_dir).exists():
        raise WorkbenchError(
            f"tfds:{name} is not prepared in '{builder.data_dir}' and is never downloaded "
            f"during a run; prepare it once with `tfds build {name}` (or "
            f"tfds.builder('{name}').download_and_prepare()) on a machine with a network")
    available = list(builder.info.splits)
    splits = {"train": "train" if "train" in available else available[0]}
    for ours, theirs in (("val", "validation"), ("test", "test")):
        if theirs in available:
            splits[ours] = theirs
    datasets = {ours: builder.as_dataset(split=theirs, as_supervised=True, shuffle_files=False)
                for ours, theirs in splits.items()}
    label = builder.info.supervised_keys[1] if builder.info.supervised_keys else None
    names = None
    if label and hasattr(builder.info.features[label], "names"):
        names = list(builder.info.features[label].names)
    return from_streams(datasets, name=name, source=f"tfds:{name}", seed=seed, task=task,
                        val_fraction=val_fraction, test_fraction=test_fraction,
                        class_names=names)
