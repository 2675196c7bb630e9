"""How a built-in layer's config differs between Keras 3 and tf_keras.

Both libraries ship layers with the same class names, but their `get_config()` dicts are not
interchangeable: some arguments are renamed (`LeakyReLU(negative_slope=)` is tf_keras'
`alpha=`), some exist on one side only (Keras 3's `LayerNormalization(rms_scaling=)`, tf_keras'
`LSTM(time_major=)`), dtype policies and nested objects (initializers, regularizers,
constraints, wrapped layers) are serialized differently, and some activations share a name but
not a formula (`hard_sigmoid`). This module turns one side's config into keyword arguments the
other side accepts, or says precisely why it cannot.

An argument that exists on one side only is dropped only when its value means what the other side
does without it; any other value is a `TranslationProblem`, never a silent change of behaviour.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from workbench.compression import custom_regularizers


class TranslationProblem(Exception):
    """One reason a layer cannot be rebuilt on the other side; collected, then reported at once."""


ANY = object()
"""Marks a one-sided argument that can be dropped whatever its value (it does not change outputs)."""


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """The config differences of one layer class.

    Args:
        renamed: Keras 3 argument name -> tf_keras argument name.
        keras3_only: arguments tf_keras lacks -> the value that means tf_keras' fixed behaviour
            (or `ANY`).
        tf_keras_only: arguments Keras 3 lacks -> the value that means Keras 3's fixed behaviour
            (or `ANY`).
        tf_keras_forgets: attributes a tf_keras layer honours but leaves out of its own config
            (read back from the layer itself when translating to Keras 3).
        to_keras3_values: argument -> function that rewrites a tf_keras value into the form
            Keras 3 accepts (raising `TranslationProblem` when there is none).
    """

    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    keras3_only: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tf_keras_only: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tf_keras_forgets: tuple = ()
    to_keras3_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _single_axis(axis):
    # tf_keras stores BatchNormalization's axis as a list; Keras 3 takes exactly one int.
    if isinstance(axis, int):
        return axis
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        return int(axis[0])
    raise TranslationProblem(
        f"axis={axis!r}: Keras 3's BatchNormalization normalizes over one axis only"
    )


_PLAIN = LayerRule()
# Keras 3 adds LoRA and int8/float8 quantization to its weight layers; tf_keras has neither, so
# only the "off" settings can cross.
_KERAS3_WEIGHT_LAYER_EXTRAS = {"lora_rank": None, "lora_alpha": ANY, "quantization_config": None}
_RNN = LayerRule(
    # `seed` only steers dropout masks in training; `implementation` picks a kernel, not a formula.
    keras3_only={"seed": ANY, "use_cudnn": ANY},
    tf_keras_only={"time_major": False, "implementation": ANY},
)
_TF_KERAS_CONV_GROUPS = LayerRule(tf_keras_only={"groups": 1})
_SEPARABLE = LayerRule(
    # tf_keras' separable convolutions inherit, and ignore, the plain convolution's kernel arguments.
    tf_keras_only={
        "groups": 1,
        "kernel_initializer": ANY,
        "kernel_regularizer": None,
        "kernel_constraint": None,
    }
)
# Keras 3's spatial dropouts take no `trainable` (they have no weights, so it means nothing).
_SPATIAL_DROPOUT_TF_KERAS_ONLY = {"noise_shape": None, "trainable": ANY}
_SPATIAL_DROPOUT = LayerRule(
    tf_keras_only=_SPATIAL_DROPOUT_TF_KERAS_ONLY, tf_keras_forgets=("data_format",)
)

LAYER_RULES = {
    "InputLayer": LayerRule(
        renamed={"batch_shape": "batch_input_shape"}, keras3_only={"optional": False}
    ),
    "Dense": _PLAIN,
    "Embedding": LayerRule(tf_keras_only={"input_length": ANY}),
    "Conv1D": _PLAIN,
    "Conv2D": _PLAIN,
    "Conv3D": _PLAIN,
    "Conv1DTranspose": _TF_KERAS_CONV_GROUPS,
    "Conv2DTranspose": _TF_KERAS_CONV_GROUPS,
    "Conv3DTranspose": LayerRule(
        keras3_only={"dilation_rate": (1, 1, 1)}, tf_keras_only={"groups": 1}
    ),
    "DepthwiseConv1D": _TF_KERAS_CONV_GROUPS,
    "DepthwiseConv2D": _TF_KERAS_CONV_GROUPS,
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    "BatchNormalization": LayerRule(to_keras3_values={"axis": _single_axis}),
    "LayerNormalization": LayerRule(keras3_only={"rms_scaling": False}),
    "UnitNormalization": _PLAIN,
    "Dropout": _PLAIN,
    "SpatialDropout1D": LayerRule(tf_keras_only=_SPATIAL_DROPOUT_TF_KERAS_ONLY),
    "SpatialDropout2D": _SPATIAL_DROPOUT,
    "SpatialDropout3D": _SPATIAL_DROPOUT,
    "GaussianNoise": _PLAIN,
    "GaussianDropout": _PLAIN,
    "ActivityRegularization": _PLAIN,
    "Flatten": _PLAIN,
    "Reshape": _PLAIN,
    "Permute": _PLAIN,
    "RepeatVector": _PLAIN,
    "Masking": _PLAIN,
    "MaxPooling1D": _PLAIN,
    "MaxPooling2D": _PLAIN,
    "MaxPooling3D": _PLAIN,
    "AveragePooling1D": _PLAIN,
    "AveragePooling2D": _PLAIN,
    "AveragePooling3D": _PLAIN,
    "GlobalMaxPooling1D": _PLAIN,
    "GlobalMaxPooling2D": _PLAIN,
    "GlobalMaxPooling3D": _PLAIN,
    "GlobalAveragePooling1D": _PLAIN,
    "GlobalAveragePooling2D": _PLAIN,
    "GlobalAveragePooling3D": _PLAIN,
    "Activation": _PLAIN,
    "ReLU": _PLAIN,
    "LeakyReLU": LayerRule(renamed={"negative_slope": "alpha"}),
    "PReLU": _PLAIN,
    "Softmax": _PLAIN,
    "ELU": _PLAIN,
    "Add": _PLAIN,
    "Subtract": _PLAIN,
    "Multiply": _PLAIN,
    "Average": _PLAIN,
    "Maximum": _PLAIN,
    "Minimum": _PLAIN,
    "Concatenate": _PLAIN,
    "Dot": _PLAIN,
    # Keras 3 lets ZeroPadding1D pad a channels-first axis; tf_keras always pads axis 1.
    "ZeroPadding1D": LayerRule(keras3_only={"data_format": "channels_last"}),
    "ZeroPadding2D": _PLAIN,
    "ZeroPadding3D": _PLAIN,
    "Cropping1D": _PLAIN,
    "Cropping2D": _PLAIN,
    "Cropping3D": _PLAIN,
    "UpSampling1D": _PLAIN,
    "UpSampling2D": _PLAIN,
    "UpSampling3D": _PLAIN,
    "Rescaling": _PLAIN,
    "Normalization": _PLAIN,
    "LSTM": _RNN,
    "GRU": _RNN,
    "SimpleRNN": _RNN,
    "Bidirectional": _PLAIN,
    "TimeDistributed": _PLAIN,
}

# Built-in Keras 3 layers that tf_keras (and so TF-MOT) has no counterpart of, with the reason.
KERAS3_ONLY_LAYERS = {
    "ReversibleEmbedding": (
        "is Keras 3-only (an embedding that also computes the tied output logits); tf_keras has "
        "no such layer, so TF-MOT cannot wrap it"),
}

# Activations whose formula and default arguments are the same on both sides (checked
# numerically). Keras 3's `hard_sigmoid` is relu6(x + 3) / 6, tf_keras' is clip(0.2x + 0.5):
# same name, different function, so it is deliberately absent.
SHARED_ACTIVATIONS = frozenset(
    [
        "elu",
        "exponential",
        "gelu",
        "leaky_relu",
        "linear",
        "log_softmax",
        "mish",
        "relu",
        "relu6",
        "selu",
        "sigmoid",
        "silu",
        "softmax",
        "softplus",
        "softsign",
        "swish",
        "tanh",
    ]
)
_ACTIVATION_KEYS = ("activation", "recurrent_activation")

# Built-in objects that exist under the same class name and arguments on both sides.
SHARED_OBJECTS = {
    "initializers": frozenset(
        [
            "Constant",
            "GlorotNormal",
            "GlorotUniform",
            "HeNormal",
            "HeUniform",
            "Identity",
            "LecunNormal",
            "LecunUniform",
            "Ones",
            "Orthogonal",
            "RandomNormal",
            "RandomUniform",
            "TruncatedNormal",
            "VarianceScaling",
            "Zeros",
        ]
    ),
    "regularizers": frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"}),
    "constraints": frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}),
}
# Keras 3's variance-scaling initializers can be told which kernel axes are fan-in/fan-out;
# tf_keras always infers them, which is what `None` means.
_KERAS3_ONLY_OBJECT_ARGS = {"input_axes": None, "output_axes": None}

# Plain dtypes and the two mixed-precision policies mean the same on both sides; Keras 3's
# quantized policies ("int8_from_float32", ...) do not exist in tf_keras.
_SHARED_DTYPES = frozenset(
    [
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "mixed_float16",
        "mixed_bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
        "string",
        "complex64",
        "complex128",
    ]
)


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _drop_one_sided(config, one_sided, other_side_name):
    for key, neutral in one_sided.items():
        if key not in config:
            continue
        value = config.pop(key)
        if neutral is not ANY and not _same(value, neutral):
            raise TranslationProblem(
                f"argument {key}={value!r} has no {other_side_name} equivalent "
                f"(only {key}={neutral!r} can be translated)"
            )


def translate_layer_config(class_name, config, *, to_tf_keras, layer=None, target=None):
    """Returns `config` rewritten as keyword arguments for the other side's `class_name`.

    Args:
        class_name: the layer's class name, the same on both sides.
        config: the source layer's `get_config()`.
        to_tf_keras: True for Keras 3 -> tf_keras, False for tf_keras -> Keras 3.
        layer: the source layer, when there is one (nested layers inside wrappers have only a
            config), to read back attributes a tf_keras config leaves out.
        target: the destination package (`tf_keras` or `keras`); nested objects are built with it.

    Raises:
        TranslationProblem: an argument or value has no equivalent on the other side.
    """
    rule = LAYER_RULES.get(class_name)
    if rule is None:
        raise TranslationProblem(
            KERAS3_ONLY_LAYERS.get(
                class_name,
                "the bridge has no tf_keras <-> Keras 3 translation for this layer class")
        )
    config = _plain(config)
    if to_tf_keras:
        _drop_one_sided(config, _KERAS3_WEIGHT_LAYER_EXTRAS, "tf_keras")
        _drop_one_sided(config, rule.keras3_only, "tf_keras")
        renames = dict(rule.renamed)
    else:
        for attribute in rule.tf_keras_forgets:
            if layer is not None and attribute not in config:
                config[attribute] = getattr(layer, attribute)
        if class_name != "InputLayer":
            # Set by tf_keras when a layer was created with `input_shape=`; the rebuilt graph
            # supplies shapes itself.
            config.pop("batch_input_shape", None)
        _drop_one_sided(config, rule.tf_keras_only, "Keras 3")
        for key, rewrite in rule.to_keras3_values.items():
            if key in config:
                config[key] = rewrite(config[key])
        renames = {new: old for old, new in rule.renamed.items()}
    for old, new in renames.items():
        if old in config:
            config[new] = config.pop(old)
    translated = {
        key: _translate_value(key, value, to_tf_keras, target) for key, value in config.items()
    }
    if class_name == "Bidirectional":
        _name_directions(translated, to_tf_keras)
    return translated


def _name_directions(config, to_tf_keras):
    # A Bidirectional's halves are named "forward_<name>"/"backward_<name>". tf_keras adds both
    # prefixes unconditionally (so it is handed bare names, or says "forward_forward_lstm");
    # Keras 3 adds the forward one only if missing and takes a given backward layer's name as is.
    for key, prefix in (("layer", "forward_"), ("backward_layer", "backward_")):
        inner = config.get(key)
        if not isinstance(inner, dict):
            continue
        name = inner["config"]["name"]
        bare = name.removeprefix(prefix)
        inner["config"]["name"] = bare if to_tf_keras else prefix + bare


def _plain(value):
    # tf_keras hands out configs holding its tracking wrappers (ListWrapper, _DictWrapper), which
    # Keras 3 does not take for lists and dicts.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _translate_value(key, value, to_tf_keras, target):
    if key == "dtype":
        return _translate_dtype(value)
    if key in _ACTIVATION_KEYS:
        return _translate_activation(key, value)
    if isinstance(value, dict) and "class_name" in value:
        return _translate_object(key, value, to_tf_keras, target)
    return value


_PLAIN_POLICY_CLASSES = frozenset({"DTypePolicy", "FloatDTypePolicy", "Policy"})


def _translate_dtype(value):
    name = value
    if isinstance(value, dict):
        if value.get("class_name") not in _PLAIN_POLICY_CLASSES:
            raise TranslationProblem(
                f"dtype policy {value.get('class_name')}{value.get('config')} (quantized or "
                f"custom) has no equivalent on the other side"
            )
        name = value.get("config", {}).get("name")
    if name is None or name in _SHARED_DTYPES:
        return name
    raise TranslationProblem(
        f"dtype policy {name!r} has no equivalent on the other side "
        f"(supported: {', '.join(sorted(_SHARED_DTYPES))})"
    )


def _translate_activation(key, value):
    if value is None or (isinstance(value, str) and value in SHARED_ACTIVATIONS):
        return value
    shown = value if isinstance(value, str) else value.get("config", value)
    raise TranslationProblem(
        f"{key}={shown!r} is not an activation that computes the same on both sides "
        f"(supported: {', '.join(sorted(SHARED_ACTIVATIONS))})"
    )


def _translate_object(key, value, to_tf_keras, target):
    class_name = value["class_name"]
    module = value.get("module") or ""
    kind = module.rpartition(".")[2]
    registered = value.get("registered_name")
    # Both libraries tag their own built-ins "keras.<kind>" with no registered (custom) name.
    is_builtin = module == f"keras.{kind}" and registered in (None, class_name)
    if is_builtin and kind == "layers" and class_name in LAYER_RULES:
        config = translate_layer_config(
            class_name, value["config"], to_tf_keras=to_tf_keras, target=target
        )
        try:
            inner = getattr(target.layers, class_name).from_config(config)
        except (TypeError, ValueError) as error:
            raise TranslationProblem(f"{key}: {class_name} was rejected: {error}") from None
        # Wrappers (Bidirectional, TimeDistributed) deserialize their inner layer themselves.
        return target.layers.serialize(inner)
    if is_builtin and class_name in SHARED_OBJECTS.get(kind, ()):
        config = dict(value.get("config") or {})
        if to_tf_keras:
            _drop_one_sided(config, _KERAS3_ONLY_OBJECT_ARGS, "tf_keras")
        try:
            return getattr(getattr(target, kind), class_name)(**config)
        except (TypeError, ValueError) as error:
            raise TranslationProblem(f"{key}: {class_name}{config} was rejected: {error}") from None
    if key.endswith("regularizer"):
        carried = custom_regularizers.translate(value, to_tf_keras)
        if carried is not None:
            return carried
    raise TranslationProblem(
        f"{key} is {registered or class_name!r} (module {value.get('module')!r}), which is not a "
        f"built-in object the bridge can translate"
    )
