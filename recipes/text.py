"""A Transformer-encoder text classifier (KerasHub layers) for any class-per-folder text set.

Data: `--set data=DIR` (one subfolder of `.txt` files per class), vectorized by a
`TextVectorization` layer adapted on the training split (saved with the run as
`preprocessing.keras`). Default data: `stdlib_packages`, chunks of Python source labelled by the
standard-library package they come from (ten packages; on every machine).
"""

import keras
import keras_hub

from workbench.recipe import Recipe
from workbench.supervised import output_layer


def build_model(hp, data_info):
    """Token + position embedding -> Transformer encoder blocks -> mean pooling -> the head."""
    width = hp.Int("width", 32, 128, step=32, default=64)
    inputs = keras.Input(shape=data_info.input_shape, dtype="int32", name="tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=data_info.vocabulary_size, sequence_length=data_info.input_shape[0],
        embedding_dim=width)(inputs)
    for _ in range(hp.Int("layers", 1, 3, default=1)):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=2 * width, num_heads=hp.Choice("heads", [2, 4], default=2),
            dropout=hp.Float("dropout", 0.0, 0.3, step=0.1, default=0.1))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = output_layer(data_info)(x)
    return keras.Model(inputs, outputs, name="text_transformer")


RECIPE = Recipe(
    name="text",
    description="Transformer-encoder text classifier (KerasHub) for any class-per-folder text "
                "set (default: which stdlib package a chunk of source is from).",
    model=build_model,
    data="stdlib_packages",
    data_options={"max_tokens": 8000, "sequence_length": 128},
    optimizer="adamw",
    learning_rate=1e-3,
    epochs=12,
    batch_size=32,
    stages=("train", "evaluate", "export", "verify"),
    fast={"epochs": 1, "verify.max_examples": 64, "export.representative_examples": 16},
)
