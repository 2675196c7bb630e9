"""A tiny model for any data the tests generate: images, token ids or feature vectors."""

import keras

from workbench.recipe import Recipe
from workbench.tasks import output_layer


def build_model(hp, data_info):
    inputs = keras.Input(shape=data_info.input_shape, dtype=data_info.input_dtype)
    x = inputs
    if data_info.input_dtype == "int32":
        x = keras.layers.Embedding(data_info.vocabulary_size, 8)(x)
        x = keras.layers.GlobalAveragePooling1D()(x)
    elif len(data_info.input_shape) == 3:
        x = keras.layers.Rescaling(1 / 255.0)(x)
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(hp.Int("units", 8, 32, step=8, default=16), activation="relu")(x)
    return keras.Model(inputs, output_layer(data_info)(x), name="tiny")


RECIPE = Recipe(name="tiny", model=build_model, epochs=3, batch_size=16, learning_rate=1e-2,
                stages=("train", "evaluate", "export", "verify"))
