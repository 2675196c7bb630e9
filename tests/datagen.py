"""Small data sets the tests write for themselves: every source kind the workbench reads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def image_folder(root, classes=("circle", "square", "stripes"), per_class=20, size=16, seed=0):
    """PNG images, one subfolder per class; each class has its own drawable pattern."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    yy, xx = np.mgrid[0:size, 0:size] / size
    patterns = {
        "circle": ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).astype(float),
        "square": ((abs(xx - 0.5) < 0.3) & (abs(yy - 0.5) < 0.3)).astype(float),
        "stripes": (np.sin(xx * 20) > 0).astype(float),
    }
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = patterns.get(name, rng.random((size, size)))
        for index in range(per_class):
            pixels = np.clip(base * 200 + rng.normal(0, 25, (size, size)), 0, 255)
            image = np.stack([pixels, pixels * 0.5, 255 - pixels], axis=-1).astype("uint8")
            Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def csv_table(path, rows=150, seed=0):
    """Numeric, string and target columns: `price` (regression) and `kind` (3 classes)."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["size", "color", "age", "kind", "price"])
        for _ in range(rows):
            size, age = rng.normal(), rng.normal()
            color = rng.choice(["red", "green", "blue"])
            kind = ["a", "b", "c"][int(size > 0.4) + int(size > -0.4)]
            price = 3 * size + (2 if color == "red" else 0) - age + rng.normal(0, 0.1)
            writer.writerow([f"{size:.4f}", color, f"{age:.4f}", kind, f"{price:.4f}"])
    return path


TOPICS = {
    "space": "rocket orbit planet star moon launch galaxy telescope astronaut comet",
    "cooking": "recipe oven flour sugar bake butter salt pan boil taste",
    "sport": "ball goal team score match player coach field win league",
}


def text_folder(root, per_class=20, seed=0):
    rng = np.random.default_rng(seed)
    root = Path(root)
    for topic, words in TOPICS.items():
        folder = root / topic
        folder.mkdir(parents=True, exist_ok=True)
        vocabulary = words.split()
        for index in range(per_class):
            text = " ".join(rng.choice(vocabulary, 12)) + " the a of and"
            (folder / f"{index:04d}.txt").write_text(text)
    return root


def tfrecord_file(path, examples=120, seed=0):
    """`tf.train.Example`s with a float feature vector `x` (shape 6) and an int64 `label`."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(examples):
            label = int(rng.integers(0, 3))
            x = rng.normal(0, 0.3, 6) + np.eye(6)[label * 2] * 2
            example = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=x.tolist())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }))
            writer.write(example.SerializeToString())
    return path


TFRECORD_FEATURES = ('{"x": {"shape": [6], "dtype": "float32"}, '
                     '"label": {"shape": [], "dtype": "int64"}}')

FUNCTION_SOURCE = '''
import numpy as np
import tensorflow as tf


def blobs(examples=150):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, examples)
    x = (rng.normal(0, 0.5, (examples, 4)) + y[:, None]).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y))
    return data.take(120), data.skip(120)
'''


def function_module(folder):
    path = Path(folder) / "my_blobs.py"
    path.write_text(FUNCTION_SOURCE)
    return path
