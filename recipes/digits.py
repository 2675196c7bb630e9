"""The default recipe: a small CNN on scikit-learn's bundled 8x8 digits, exported to TFLite."""

import keras

from workbench.recipe import Recipe


def build_model(hp):
    """Two 3x3 convolutions, max pooling and a dense head; `hp` values serve search too."""
    filters = hp.Int("filters", 16, 64, step=16, default=32)
    units = hp.Int("dense_units", 64, 256, step=64, default=128)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.3)
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(filters * 2, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


RECIPE = Recipe(
    name="digits",
    description="Small CNN on the bundled 8x8 digits: train, evaluate, export float32 + int8 "
                "TFLite, verify with LiteRT.",
    model=build_model,
    data="digits",
    optimizer="adam",
    learning_rate=1e-3,
    epochs=40,
    batch_size=16,
    stages=("train", "evaluate", "export", "verify"),
    fast={"epochs": 2, "verify.max_examples": 100, "export.representative_examples": 32},
)
