"""An MLP for any table: a CSV (`--set data=FILE.csv --set data_options.target=COLUMN`, numeric
and string columns encoded by Keras' `FeatureSpace`) or scikit-learn's bundled tables (columns
normalized by a `Normalization` layer adapted on the training split; both are saved with the run
as `preprocessing.keras`).

Default data: `sklearn:breast_cancer` (binary). `--set data=sklearn:diabetes` gives regression,
`sklearn:wine` and `sklearn:iris` multi-class; the task follows the data.
"""

import keras

from workbench.recipe import Recipe
from workbench.supervised import output_layer


def build_model(hp, data_info):
    """Dense layers -> the task's head over features the pipeline has already normalized
    (tables) or encoded (a CSV's FeatureSpace); regression predicts in standardized units and
    rescales to the target's."""
    inputs = keras.Input(shape=data_info.input_shape, name="features")
    x = inputs
    units = hp.Int("units", 32, 256, step=32, default=64)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.1)
    for _ in range(hp.Int("layers", 1, 3, default=2)):
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = output_layer(data_info)(x)
    if data_info.task == "regression" and data_info.target_mean is not None:
        outputs = keras.layers.Rescaling(data_info.target_std, offset=data_info.target_mean,
                                         name="target_scale")(outputs)
    return keras.Model(inputs, outputs, name="tabular_mlp")


RECIPE = Recipe(
    name="tabular",
    description="MLP over FeatureSpace features for any CSV or table (default: breast cancer, "
                "binary): train, evaluate, export, verify.",
    model=build_model,
    data="sklearn:breast_cancer",
    optimizer="adam",
    learning_rate=1e-3,
    epochs=100,
    batch_size=32,
    stages=("train", "evaluate", "export", "verify"),
    fast={"epochs": 3, "export.representative_examples": 32},
)
