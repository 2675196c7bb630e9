"""The digits CNN made small: train, prune to 80% sparsity, pruning-preserving QAT, int8 TFLite.

`build_student` is a CNN with about a seventh of the teacher's weights for the `distill` stage:
`--stages train,evaluate,distill,verify` trains the teacher, then distills it into the student.
"""

import keras

from recipes.digits import build_model
from workbench.recipe import Recipe
from workbench.settings import DistillSettings, ExportSettings, PruneSettings, QuantizeSettings


def build_student(hp):
    """The teacher's shape with fewer filters and units; `hp` values serve search too."""
    filters = hp.Int("student_filters", 8, 32, step=8, default=16)
    units = hp.Int("student_units", 16, 64, step=16, default=32)
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name="student_conv_1")(inputs)
    x = keras.layers.Conv2D(filters * 2, 3, padding="same", activation="relu",
                            name="student_conv_2")(x)
    x = keras.layers.MaxPooling2D(name="student_pool")(x)
    x = keras.layers.Flatten(name="student_flatten")(x)
    x = keras.layers.Dense(units, activation="relu", name="student_dense")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(x)
    return keras.Model(inputs, outputs, name="digits_student")


RECIPE = Recipe(
    name="digits_compress",
    description="Digits CNN: train, prune to 80% (TF-MOT), pruning-preserving QAT to int8, "
                "export and verify every variant with LiteRT.",
    model=build_model,
    student=build_student,
    data="digits",
    optimizer="adam",
    learning_rate=1e-3,
    epochs=40,
    batch_size=16,
    export=ExportSettings(formats=("float32", "int8")),
    prune=PruneSettings(target_sparsity=0.8, epochs=4),
    quantize=QuantizeSettings(mode="pqat", epochs=2, learning_rate_factor=0.1),
    distill=DistillSettings(alpha=0.1, temperature=3.0, epochs=40),
    stages=("train", "evaluate", "export", "prune", "quantize", "verify"),
    fast={"epochs": 2, "prune.epochs": 1, "quantize.epochs": 1, "distill.epochs": 2,
          "verify.max_examples": 100, "export.representative_examples": 32,
          "export.formats": ("float32", "int8")},
)
