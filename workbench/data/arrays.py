"""Data sets: loaded into train/validation/test splits, fed to Keras as `tf.data` pipelines.

Sources:
- `"digits"`: the 8x8 handwritten digits that scikit-learn ships inside its wheel (1,797 images,
  10 classes); no network needed.
- a path to a `.npz` file with either `x_train, y_train, x_test, y_test` (and optionally
  `x_val, y_val`) or just `x, y`, which are then split like digits.

The split is stratified and fixed by the seed, so the same seed always gives the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError


@dataclass
class DataInfo:
    """What a model builder needs to know about the data."""

    name: str
    input_shape: tuple
    num_classes: int


@dataclass
class DataSplits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DataInfo

    def sizes(self):
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


def _split(x, y, seed, val_fraction, test_fraction):
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1.0 - test_fraction), random_state=seed,
        stratify=y_rest)
    return x_train, y_train, x_val, y_val, x_test, y_test


def load_digits(seed=0, val_fraction=0.1, test_fraction=0.2):
    """scikit-learn's bundled digits as (N, 8, 8, 1) float32 images in [0, 1] and int labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images.astype("float32") / 16.0)[..., None]
    y = bunch.target.astype("int32")
    parts = _split(x, y, seed, val_fraction, test_fraction)
    return DataSplits(*parts, info=DataInfo("digits", x.shape[1:], 10))


def load_npz(path, seed=0, val_fraction=0.1, test_fraction=0.2):
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"data file '{path}' does not exist")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        x_test, y_test = arrays["x_test"], arrays["y_test"]
        if {"x_val", "y_val"} <= arrays.keys():
            x_val, y_val = arrays["x_val"], arrays["y_val"]
        else:
            from sklearn.model_selection import train_test_split

            x_train, x_val, y_train, y_val = train_test_split(
                x_train, y_train, test_size=val_fraction, random_state=seed, stratify=y_train)
        parts = (x_train, y_train, x_val, y_val, x_test, y_test)
    elif {"x", "y"} <= arrays.keys():
        _check_pair(arrays["x"], arrays["y"], path, "x/y")
        parts = _split(arrays["x"], arrays["y"], seed, val_fraction, test_fraction)
    else:
        raise WorkbenchError(
            f"'{path}' holds arrays {sorted(arrays)}; expected x_train, y_train, x_test, y_test "
            "(optionally x_val, y_val) or x, y")
    for name, (x, y) in zip(("train", "val", "test"), zip(parts[0::2], parts[1::2])):
        _check_pair(x, y, path, name)
    shapes = {p.shape[1:] for p in parts[0::2]}
    if len(shapes) != 1:
        raise WorkbenchError(f"'{path}': the splits' example shapes differ: {sorted(shapes)}")
    x_parts = [p.astype("float32") for p in parts[0::2]]
    y_parts = [p.astype("int32") for p in parts[1::2]]
    num_classes = int(max(y.max() for y in y_parts)) + 1
    return DataSplits(x_parts[0], y_parts[0], x_parts[1], y_parts[1], x_parts[2], y_parts[2],
                      info=DataInfo(path.stem, x_parts[0].shape[1:], num_classes))


def _check_pair(x, y, path, name):
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise WorkbenchError(
            f"'{path}' {name}: expected x of shape (N, ...) and integer labels y of shape (N,), "
            f"got x {x.shape} and y {y.shape}")


def load_data(source: str, seed=0, **options) -> DataSplits:
    """Load `source` ("digits" or a .npz path) into fixed splits."""
    allowed = {"val_fraction", "test_fraction"}
    unknown = set(options) - allowed
    if unknown:
        raise WorkbenchError(
            f"unknown data_options {sorted(unknown)}; valid: {', '.join(sorted(allowed))}")
    if source == "digits":
        return load_digits(seed, **options)
    if source.endswith(".npz"):
        return load_npz(source, seed, **options)
    raise WorkbenchError(f"unknown data source '{source}': use 'digits' or a path to a .npz file")


def make_dataset(x, y, batch_size, shuffle=False, seed=0):
    """A batched, prefetched `tf.data.Dataset`; reshuffled every epoch when `shuffle` is set."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
