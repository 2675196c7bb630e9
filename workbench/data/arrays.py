"""Sources that arrive as arrays: scikit-learn's bundled data sets and `.npz` files.

- `digits`: the 8x8 handwritten digits scikit-learn ships (1,797 images, 10 classes).
- `sklearn:breast_cancer` (two classes), `sklearn:wine`, `sklearn:iris` (three classes),
  `sklearn:diabetes` (a real-valued target): the tables scikit-learn ships inside its wheel.
- a `.npz` file with `x, y` (split here) or `x_train, y_train, x_test, y_test` (optionally
  `x_val, y_val`).

These are already in memory when they arrive (that is what an array is); from here on they are
`tf.data` pipelines like every other source. Splits are stratified for classes, fixed by the seed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from workbench.data.checks import LabelStats, count_nonfinite, label_reader, split_assignment
from workbench.data.core import Data, DataInfo
from workbench.errors import WorkbenchError, suggest

SKLEARN_TABLES = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}


def _check_x(x, where):
    if x.ndim < 2:
        raise WorkbenchError(f"{where}: expected inputs of shape (N, ...), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)):
        raise WorkbenchError(f"{where}: inputs of dtype {x.dtype} are not numbers")
    bad = count_nonfinite(x)
    if bad:
        raise WorkbenchError(f"{where}: {bad} input value(s) are NaN or infinite "
                             f"(of {x.size}); clean or impute them first")


def fingerprint_arrays(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def feature_normalizer(x_train):
    """A `Normalization` layer with the training split's per-column mean and variance, for 2-D
    numeric tables (`None` otherwise). Tables are normalized in the pipeline, like a CSV's
    `FeatureSpace` features, so that every column has a similar range when an int8 export
    quantizes the model's input with one scale for all of them."""
    import keras

    if x_train.ndim != 2:
        return None
    layer = keras.layers.Normalization(mean=x_train.mean(axis=0), variance=x_train.var(axis=0))
    layer.build((None, x_train.shape[1]))
    return layer


def from_arrays(x, y, *, name, source, seed, task, val_fraction=0.1, test_fraction=0.2,
                presplit=None, class_names=None, where=None):
    """Check `x, y`, split them (or take `presplit` indices) and wrap the splits as pipelines.

    `presplit`: optional split codes (0 train, 1 val, 2 test) per example."""
    import tensorflow as tf

    where = where or source
    x, y = np.asarray(x), np.asarray(y)
    _check_x(x, f"'{where}' x")
    if y.ndim == 0 or len(x) != len(y):
        raise WorkbenchError(f"'{where}': x has {len(x)} examples but y has "
                             f"{y.shape[0] if y.ndim else 0} labels")
    stats = LabelStats()
    stats.add_batch(y)
    kind = label_reader(task, f"'{where}'").resolve(stats)
    num_classes = kind.num_classes(stats, class_names)
    kind.check(stats, f"'{where}' y", num_classes)
    y = kind.as_array(y)
    x = x.astype("float32")
    if presplit is None:
        stratify = y if kind.class_ids else None
        presplit = split_assignment(len(x), seed, val_fraction, test_fraction, stratify,
                                    where=f"'{where}'")
    parts = [(x[presplit == code], y[presplit == code]) for code in (0, 1, 2)]
    sizes = dict(zip(("train", "val", "test"), (len(p[0]) for p in parts)))
    normalizer = feature_normalizer(parts[0][0])
    info = DataInfo(
        name=name, task=kind.name, input_shape=tuple(x.shape[1:]), input_dtype="float32",
        num_classes=num_classes, num_targets=kind.num_targets(y.shape[-1]),
        class_names=list(class_names) if class_names is not None else None, sizes=sizes,
        fingerprint=fingerprint_arrays(x, y, presplit), source=source,
        input_range=(float(x.min()), float(x.max())), preprocessing=normalizer)
    if kind.targets:
        info.target_mean = parts[0][1].mean(axis=0).astype("float32")
        info.target_std = np.maximum(parts[0][1].std(axis=0), 1e-6).astype("float32")
    splits = [tf.data.Dataset.from_tensor_slices(part) for part in parts]
    if normalizer is not None:
        def normalize(inputs, labels):
            return normalizer(inputs), labels

        splits = [s.batch(512).map(normalize).unbatch() for s in splits]
    return Data(*splits, info=info)


def load_digits(seed=0, task=None, val_fraction=0.1, test_fraction=0.2):
    """scikit-learn's bundled digits as (8, 8, 1) float32 images in [0, 1] and int labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images.astype("float32") / 16.0)[..., None]
    return from_arrays(x, bunch.target.astype("int32"), name="digits", source="digits",
                       seed=seed, task=task, val_fraction=val_fraction,
                       test_fraction=test_fraction, class_names=[str(i) for i in range(10)])


def load_sklearn_table(table, seed=0, task=None, val_fraction=0.1, test_fraction=0.2):
    import sklearn.datasets

    if table not in SKLEARN_TABLES:
        raise WorkbenchError(f"unknown scikit-learn data set 'sklearn:{table}': "
                             f"{suggest(table, list(SKLEARN_TABLES))}")
    bunch = getattr(sklearn.datasets, SKLEARN_TABLES[table])()
    names = list(bunch.target_names) if "target_names" in bunch else None
    return from_arrays(bunch.data.astype("float32"), bunch.target, name=table,
                       source=f"sklearn:{table}", seed=seed, task=task, val_fraction=val_fraction,
                       test_fraction=test_fraction, class_names=names)


def load_npz(path, seed=0, task=None, val_fraction=0.1, test_fraction=0.2):
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"data file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise WorkbenchError(f"data file '{path}' is not a readable .npz archive: {error}")
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        names = ["train", "test"] + (["val"] if {"x_val", "y_val"} <= arrays.keys() else [])
        shapes = {arrays[f"x_{n}"].shape[1:] for n in names if arrays[f"x_{n}"].ndim >= 2}
        if len(shapes) > 1:
            raise WorkbenchError(f"'{path}': the splits' example shapes differ: {sorted(shapes)}")
        for n in names:
            if len(arrays[f"x_{n}"]) != len(arrays[f"y_{n}"]):
                raise WorkbenchError(f"'{path}': x_{n} has {len(arrays[f'x_{n}'])} examples but "
                                     f"y_{n} has {len(arrays[f'y_{n}'])}")
        x = np.concatenate([arrays[f"x_{n}"] for n in names])
        y = np.concatenate([arrays[f"y_{n}"] for n in names])
        codes = {"train": 0, "val": 1, "test": 2}
        presplit = np.concatenate([np.full(len(arrays[f"x_{n}"]), codes[n], "int8")
                                   for n in names])
        if "val" not in names:
            train_index = np.flatnonzero(presplit == 0)
            order = np.random.default_rng(seed).permutation(len(train_index))
            n_val = max(1, int(round(len(train_index) * val_fraction)))
            if len(train_index) - n_val < 1:
                raise WorkbenchError(f"'{path}': x_train is too small to hold out a "
                                     f"validation split (val_fraction={val_fraction:g})")
            presplit[train_index[order[:n_val]]] = 1
        return from_arrays(x, y, name=path.stem, source=str(path), seed=seed, task=task,
                           presplit=presplit, where=str(path))
    if {"x", "y"} <= arrays.keys():
        return from_arrays(arrays["x"], arrays["y"], name=path.stem, source=str(path), seed=seed,
                           task=task, val_fraction=val_fraction, test_fraction=test_fraction,
                           where=str(path))
    raise WorkbenchError(
        f"'{path}' holds arrays {sorted(arrays)}; expected x_train, y_train, x_test, y_test "
        "(optionally x_val, y_val) or x, y")
