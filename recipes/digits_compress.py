"""The digits CNN made small: train, prune to 80% sparsity, pruning-preserving QAT, int8 TFLite."""

from recipes.digits import build_model
from workbench.recipe import Recipe
from workbench.settings import ExportSettings, PruneSettings, QuantizeSettings

RECIPE = Recipe(
    name="digits_compress",
    description="Digits CNN: train, prune to 80% (TF-MOT), pruning-preserving QAT to int8, "
                "export and verify every variant with LiteRT.",
    model=build_model,
    data="digits",
    optimizer="adam",
    learning_rate=1e-3,
    epochs=40,
    batch_size=16,
    export=ExportSettings(formats=("float32", "int8")),
    prune=PruneSettings(target_sparsity=0.8, epochs=4),
    quantize=QuantizeSettings(mode="pqat", epochs=2, learning_rate_factor=0.1),
    stages=("train", "evaluate", "export", "prune", "quantize", "verify"),
    fast={"epochs": 2, "prune.epochs": 1, "quantize.epochs": 1, "verify.max_examples": 100,
          "export.representative_examples": 32, "export.formats": ("int8",)},
)
