"""A CSV file with a header row: one column is the target (`data_options.target`), the others are
features, except those `data_options.exclude` names (an id, or a column that groups the rows).
Numeric columns are normalized and string columns one-hot encoded by Keras' `FeatureSpace`,
adapted on the training split only; the pipelines stream rows from disk with
`tf.data.experimental.CsvDataset` and carry the encoded feature vector.

One streaming pass over the file checks it before any work (column types, missing or non-finite
numbers, the target) and keeps only the target column, for a split stratified by class.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np

from workbench.data.checks import LabelStats, label_reader, select_split, split_assignment
from workbench.data.core import Data, DataInfo
from workbench.errors import WorkbenchError, suggest


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def scan_csv(path, target):
    """One pass over the file: header, per-column kind (number or string), problems, targets."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"data file '{path}' does not exist")
    digest = hashlib.sha256()
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as error:
        raise WorkbenchError(f"data file '{path}' is unreadable: {error}")
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise WorkbenchError(f"'{path}' is empty; expected a header row and data rows")
        except UnicodeDecodeError:
            raise WorkbenchError(f"'{path}' is not UTF-8 text")
        header = [name.strip() for name in header]
        if target is None:
            raise WorkbenchError(f"'{path}': name the target column with --set "
                                 f"data_options.target=COLUMN (columns: {', '.join(header)})")
        if target not in header:
            raise WorkbenchError(f"'{path}' has no column '{target}': "
                                 f"{suggest(target, header)}")
        numeric = [True] * len(header)
        nonfinite = [0] * len(header)
        targets = []
        rows = 0
        try:
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise WorkbenchError(f"'{path}' line {line}: {len(row)} fields, the header "
                                         f"has {len(header)}")
                digest.update("\x1f".join(row).encode())
                rows += 1
                for column, cell in enumerate(row):
                    cell = cell.strip()
                    if numeric[column] and cell and not _is_number(cell):
                        numeric[column] = False
                    if cell == "" or (numeric[column] and not math.isfinite(float(cell))):
                        nonfinite[column] += 1
                targets.append(row[header.index(target)].strip())
        except UnicodeDecodeError:
            raise WorkbenchError(f"'{path}' is not UTF-8 text")
    if rows == 0:
        raise WorkbenchError(f"'{path}' has a header but no data rows")
    for column, name in enumerate(header):
        if numeric[column] and nonfinite[column]:
            raise WorkbenchError(f"'{path}' column '{name}': {nonfinite[column]} value(s) are "
                                 "missing, NaN or infinite; clean or impute them first")
    return header, numeric, targets, digest.hexdigest()[:16]


def load_csv(path, seed=0, task=None, val_fraction=0.1, test_fraction=0.2, target=None,
             categorical=(), exclude=()):
    """`path` -> pipelines of `(encoded features, target)`; `categorical` forces numeric columns
    (integer codes) to be treated as categories; `exclude` names columns that are not features.

    The data's "column" groups (`Data.groups`) read any column's value for each training row."""
    import keras
    import tensorflow as tf

    header, numeric, raw_targets, fingerprint = scan_csv(path, target)
    target_index = header.index(target)
    categorical = set(categorical)
    # One name alone is one column, not a set of its letters.
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    for option, names in (("categorical", categorical), ("exclude", exclude)):
        for name in names:
            if name not in header:
                raise WorkbenchError(f"data_options.{option} names '{name}', which '{path}' "
                                     f"does not have: {suggest(name, header)}")
    if target in exclude:
        raise WorkbenchError(f"data_options.exclude names the target '{target}'; the target is "
                             "never a feature, leave it out of exclude")
    where = f"'{path}' column '{target}'"
    class_names = None
    if numeric[target_index]:
        y = np.asarray([float(v) for v in raw_targets])
        if np.all(y == np.round(y)):
            y = y.astype("int64")
    else:
        class_names = sorted(set(raw_targets))
        lookup = {name: i for i, name in enumerate(class_names)}
        y = np.asarray([lookup[v] for v in raw_targets], dtype="int64")
    stats = LabelStats()
    stats.add_batch(y)
    kind = label_reader(task, where).resolve(stats)
    if class_names is not None and kind.targets:
        raise WorkbenchError(f"{where} holds text, not numbers; a {kind.name} target must "
                             "be numeric")
    if kind.label_columns:
        raise WorkbenchError(f"{where}: a CSV target is one column; {kind.name} CSVs are not "
                             "supported (use a TFRecord or module:function source)")
    num_classes = kind.num_classes(stats, class_names)
    kind.check(stats, where, num_classes)
    assignment = split_assignment(len(y), seed, val_fraction, test_fraction,
                                  y if kind.class_ids else None, where=f"'{path}'")
    features = [name for i, name in enumerate(header)
                if i != target_index and name not in exclude]
    if not features:
        raise WorkbenchError(f"'{path}' has no feature columns besides the target '{target}'")
    kinds = {name: numeric[header.index(name)] and name not in categorical for name in features}
    defaults = [tf.constant(0.0, tf.float32) if kinds.get(name, False) else
                tf.constant("", tf.string) for name in header]
    if numeric[target_index]:
        defaults[target_index] = tf.constant(0.0, tf.float32)
    rows = tf.data.experimental.CsvDataset(str(path), defaults, header=True)
    label_table = None if class_names is None else tf.constant(class_names)

    def to_example(*columns):
        x = {name: columns[header.index(name)] for name in features}
        label = columns[target_index]
        if label_table is not None:
            label = tf.argmax(tf.cast(tf.equal(label_table, tf.strings.strip(label)), tf.int32))
        return x, kind.as_tensor(label)

    examples = rows.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    splits = [select_split(examples, assignment, code) for code in (0, 1, 2)]
    space = keras.utils.FeatureSpace(
        {name: ("float_normalized" if kinds[name] else "string_categorical")
         for name in features}, output_mode="concat")
    space.adapt(splits[0].map(lambda x, y: x).batch(512))

    def encode(x, y):
        return space(x), y

    encoded = [s.batch(512).map(encode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
               for s in splits]
    width = int(encoded[0].element_spec[0].shape[-1])
    sizes = {name: int(np.sum(assignment == code))
             for code, name in enumerate(("train", "val", "test"))}
    info = DataInfo(name=Path(path).stem, task=kind.name, input_shape=(width,),
                    num_classes=num_classes, num_targets=kind.num_targets(1),
                    class_names=class_names, sizes=sizes, fingerprint=fingerprint,
                    source=str(path), preprocessing=space)
    if kind.targets:
        train_targets = y[assignment == 0].astype("float64")
        info.target_mean = np.asarray([train_targets.mean()], "float32")
        info.target_std = np.asarray([max(train_targets.std(), 1e-6)], "float32")
    train_rows = np.flatnonzero(assignment == 0)

    def column_values(column):
        """`column`'s value in every training row, in the training split's (the file's) order."""
        values = scan_csv(path, column)[2]
        return [values[i] for i in train_rows]

    return Data(*encoded, info=info, groups={"column": column_values})
