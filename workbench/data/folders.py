"""Class-per-folder sources: images and text files, one subfolder per class.

Files are listed and loaded by the same Keras code that `keras.utils.image_dataset_from_directory`
and `keras.utils.text_dataset_from_directory` run (`index_directory`, `paths_and_labels_to_dataset`),
so decoding, resizing and label order are Keras'; the workbench adds the three-way stratified
split fixed by the seed (Keras' loaders split two ways) and the checks. Files stream from disk.

Unreadable or corrupt files are refused, not skipped: the run stops before any work with the
count and the first such file, since a silently smaller data set is a worse surprise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from workbench.data.checks import label_reader, split_assignment
from workbench.data.core import Data, DataInfo
from workbench.errors import WorkbenchError

IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TEXT_FORMATS = (".txt",)


def is_class_folder(path) -> bool:
    path = Path(path)
    return path.is_dir() and any(child.is_dir() for child in path.iterdir())


def kind_of_folder(path) -> str:
    """'images' or 'text', by what the class folders hold."""
    if not any(child.is_dir() for child in Path(path).iterdir()):
        raise WorkbenchError(f"data folder '{path}' has no class subfolders; put the examples "
                             "of each class in a subfolder named after it")
    suffixes = {p.suffix.lower() for p in Path(path).rglob("*") if p.is_file()}
    if suffixes & set(IMAGE_FORMATS):
        return "images"
    if suffixes & set(TEXT_FORMATS):
        return "text"
    raise WorkbenchError(f"data folder '{path}' holds no images ({', '.join(IMAGE_FORMATS)}) "
                         f"and no text files ({', '.join(TEXT_FORMATS)})")


def _index(directory, formats, what):
    from keras.src.utils import dataset_utils

    directory = Path(directory)
    if not directory.is_dir():
        raise WorkbenchError(f"data folder '{directory}' does not exist")
    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir())
    if not class_dirs:
        raise WorkbenchError(f"data folder '{directory}' has no class subfolders; put the "
                             f"{what} of each class in a subfolder named after it")
    for class_dir in class_dirs:
        if not any(p.suffix.lower() in formats for p in class_dir.rglob("*") if p.is_file()):
            raise WorkbenchError(f"class folder '{class_dir}' holds no {what} "
                                 f"({', '.join(formats)})")
    if len(class_dirs) < 2:
        raise WorkbenchError(f"data folder '{directory}' has a single class folder "
                             f"('{class_dirs[0].name}'); a classifier needs at least two")
    paths, labels, class_names = dataset_utils.index_directory(
        str(directory), "inferred", formats=formats, shuffle=False, verbose=False)
    return list(paths), np.asarray(labels, dtype="int32"), list(class_names)


def _check_images(paths):
    from PIL import Image

    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception:  # PIL raises many types for a broken file; each means "unreadable"
            bad.append(path)
    if bad:
        raise WorkbenchError(f"{len(bad)} image file(s) are unreadable or corrupt, e.g. "
                             f"'{bad[0]}'; remove or replace them")


def _check_texts(paths):
    bad = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError:
            bad.append(path)
    if bad:
        raise WorkbenchError(f"{len(bad)} text file(s) are unreadable, e.g. '{bad[0]}'")


def _fingerprint(paths, labels, assignment):
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        stat = Path(path).stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    digest.update(assignment.tobytes())
    return digest.hexdigest()[:16]


def _splits(paths, labels, make, seed, val_fraction, test_fraction, where):
    """The three splits, then the training split once more in the files' (sorted) order; the
    first training split reshuffles its file paths every epoch (before any file is read, so the
    shuffle holds paths, not decoded examples). Also the training files in that fixed order."""
    assignment = split_assignment(len(paths), seed, val_fraction, test_fraction, labels,
                                  where=where)
    datasets, sizes = [], {}
    for code, name in enumerate(("train", "val", "test")):
        chosen = np.flatnonzero(assignment == code)
        datasets.append(make([paths[i] for i in chosen], labels[chosen], code == 0))
        sizes[name] = int(len(chosen))
    train = np.flatnonzero(assignment == 0)
    train_files = [paths[i] for i in train]
    datasets.append(make(train_files, labels[train], False))
    return datasets, sizes, assignment, train_files


def folder_groups(directory, train_files):
    """The "folder" groups of `Data.groups`: for `level`, the name of each training file's
    folder `level` levels below its class folder (`DIR/<class>/<level 1>/.../file`)."""
    def folder_at(level):
        names = []
        for path in train_files:
            parts = Path(os.path.relpath(path, directory)).parts
            if not 1 <= level < len(parts) - 1:
                raise WorkbenchError(
                    f"'{path}' is not inside a folder {level} level(s) below its class folder "
                    f"'{parts[0]}'; expected {directory}/<class>/" +
                    "/".join(f"<level {i}>" for i in range(1, level + 1)) + "/FILE")
            names.append(parts[level])
        return names

    return folder_at


def load_image_folder(directory, seed=0, task=None, val_fraction=0.1, test_fraction=0.2,
                      image_size=(64, 64), color_mode="rgb"):
    """Images in class subfolders -> float32 `(height, width, channels)` in [0, 255], int labels."""
    from keras.src.utils import image_dataset_utils

    reader = label_reader(task, f"data folder '{directory}'")
    reader.for_class_folders(2, "image")  # a non-classification task is refused before the scan
    paths, labels, class_names = _index(directory, IMAGE_FORMATS, "images")
    kind = reader.for_class_folders(len(class_names), "image")
    _check_images(paths)
    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}.get(color_mode)
    if channels is None:
        raise WorkbenchError(f"data_options.color_mode must be rgb, grayscale or rgba, "
                             f"got '{color_mode}'")
    image_size = tuple(int(s) for s in image_size)

    def make(split_paths, split_labels, shuffle):
        return image_dataset_utils.paths_and_labels_to_dataset(
            split_paths, image_size, channels, split_labels, "int", len(class_names),
            "bilinear", "channels_last", shuffle=shuffle,
            shuffle_buffer_size=max(1, len(split_paths)), seed=seed)

    datasets, sizes, assignment, train_files = _splits(
        paths, labels, make, seed, val_fraction, test_fraction, f"data folder '{directory}'")
    info = DataInfo(name=Path(directory).name, task=kind.name,
                    input_shape=(*image_size, channels),
                    num_classes=kind.num_classes(None, class_names),
                    class_names=class_names, sizes=sizes,
                    fingerprint=_fingerprint(paths, labels, assignment), source=str(directory),
                    input_range=(0.0, 255.0))
    datasets = [d.map(lambda x, y: (x, kind.as_tensor(y))) for d in datasets]
    return Data(*datasets[:3], info=info, train_shuffled=True, train_in_order=datasets[3],
                groups={"folder": folder_groups(directory, train_files)})


def load_text_folder(directory, seed=0, task=None, val_fraction=0.1, test_fraction=0.2,
                     max_tokens=20_000, sequence_length=256, max_length=None):
    """Text files in class subfolders -> int token ids of length `sequence_length` and int labels.

    A `TextVectorization` layer is adapted on the training split only; it is the data's
    `preprocessing` (saved with the run), and the pipelines carry its token ids."""
    import keras
    import tensorflow as tf
    from keras.src.utils import text_dataset_utils

    reader = label_reader(task, f"data folder '{directory}'")
    reader.for_class_folders(2, "text")  # a non-classification task is refused before the scan
    paths, labels, class_names = _index(directory, TEXT_FORMATS, "text files")
    kind = reader.for_class_folders(len(class_names), "text")
    _check_texts(paths)

    def make(split_paths, split_labels, shuffle):
        return text_dataset_utils.paths_and_labels_to_dataset(
            split_paths, split_labels, "int", len(class_names), max_length, shuffle=shuffle,
            shuffle_buffer_size=max(1, len(split_paths)), seed=seed)

    datasets, sizes, assignment, train_files = _splits(
        paths, labels, make, seed, val_fraction, test_fraction, f"data folder '{directory}'")
    vectorizer = keras.layers.TextVectorization(
        max_tokens=int(max_tokens), output_mode="int",
        output_sequence_length=int(sequence_length))
    vectorizer.adapt(datasets[0].map(lambda text, label: text).batch(256))
    vocabulary_size = int(vectorizer.vocabulary_size())
    if vocabulary_size <= 2:
        raise WorkbenchError(f"data folder '{directory}': the training texts hold no words")

    def vectorize(text, label):
        tokens = tf.cast(vectorizer(text[None])[0], tf.int32)
        return tokens, kind.as_tensor(label)

    datasets = [d.map(vectorize, num_parallel_calls=tf.data.AUTOTUNE) for d in datasets]
    info = DataInfo(name=Path(directory).name, task=kind.name,
                    input_shape=(int(sequence_length),), input_dtype="int32",
                    num_classes=kind.num_classes(None, class_names),
                    class_names=class_names, vocabulary_size=vocabulary_size, sizes=sizes,
                    fingerprint=_fingerprint(paths, labels, assignment), source=str(directory),
                    preprocessing=vectorizer)
    return Data(*datasets[:3], info=info, train_shuffled=True, train_in_order=datasets[3],
                groups={"folder": folder_groups(directory, train_files)})
