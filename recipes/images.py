"""Image classifier for any class-per-folder image set, on a `keras.applications` backbone.

Data: `--set data=PATH` (a folder with one subfolder of images per class; images are resized to
`data_options.image_size`, default 64x64). The default data is the bundled 8x8 digits, upsampled
in the model to the backbone's smallest input (32x32). Backbone weights are random
(`weights=None`, nothing is downloaded); `--set model_options.weights=imagenet` uses ImageNet
weights where Keras can load them.
"""

import keras

from workbench.recipe import Recipe
from workbench.supervised import output_layer

BACKBONES = {
    "mobilenet": (keras.applications.MobileNet, 32),
    "mobilenet_v2": (keras.applications.MobileNetV2, 32),
    "efficientnet_b0": (keras.applications.EfficientNetB0, 32),
    "resnet50_v2": (keras.applications.ResNet50V2, 32),
}


def build_model(hp, data_info, options):
    """Rescale to [0, 1] -> (augment) -> resize to at least the backbone's smallest input ->
    backbone -> global average pooling -> dropout -> the task's head."""
    from workbench.errors import WorkbenchError

    name = options.get("backbone", "mobilenet")
    if name not in BACKBONES:
        raise WorkbenchError(f"unknown model_options.backbone '{name}': "
                             f"{', '.join(BACKBONES)}")
    backbone_class, smallest = BACKBONES[name]
    height, width, channels = data_info.input_shape
    size = max(smallest, height, width)
    low, high = data_info.input_range or (0.0, 255.0)
    inputs = keras.Input(shape=data_info.input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / (high - low or 1.0), offset=-low / (high - low or 1.0))(inputs)
    if options.get("augment", True):
        x = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")(x)
        x = keras.layers.RandomZoom(0.1, fill_mode="constant")(x)
    if (height, width) != (size, size):
        x = keras.layers.Resizing(size, size)(x)
    if channels == 1:
        x = keras.layers.Concatenate()([x, x, x])
    x = keras.layers.Rescaling(2.0, offset=-1.0)(x)  # [-1, 1], what these backbones expect
    alpha = {"alpha": options.get("alpha", 0.25)} if name.startswith("mobilenet") else {}
    backbone = backbone_class(include_top=False, weights=options.get("weights"),
                              input_shape=(size, size, 3), pooling="avg", **alpha)
    if options.get("weights") is None:
        # Trained from scratch for a few hundred steps, the backbones' batch-norm statistics
        # (momentum 0.99-0.999, tuned for ImageNet-length training) would lag the weights.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    x = backbone(x)
    x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2))(x)
    outputs = output_layer(data_info)(x)
    return keras.Model(inputs, outputs, name=f"images_{name}")


RECIPE = Recipe(
    name="images",
    description="Image classifier on a keras.applications backbone for any class-per-folder "
                "image set (default: the digits, upsampled): train, evaluate, export, verify.",
    model=build_model,
    data="digits",
    optimizer="adam",
    learning_rate=2e-3,
    schedule="cosine",
    epochs=40,
    batch_size=32,
    stages=("train", "evaluate", "export", "verify"),
    fast={"epochs": 1, "verify.max_examples": 64, "export.representative_examples": 16,
          "export.formats": ("int8",)},
)
