"""Keras 3 <-> tf_keras bridge: every supported layer round-trips with identical outputs."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers

from workbench.compression import (
    SUPPORTED_LAYERS,
    UntranslatableLayerError,
    copy_weights,
    from_tf_keras,
    legacy_keras_environment,
    to_tf_keras,
)

ATOL = 1e-5


def _randomize_weights(model, seed=0):
    """Replaces every float weight with random values, so a weight that is not copied shows."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "int" in str(weight.dtype):
            continue
        low, high = (0.5, 1.5) if "variance" in weight.path else (-0.5, 0.5)
        weight.assign(rng.uniform(low, high, tuple(weight.shape)).astype(weight.dtype))
    for layer in model._flatten_layers():
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()  # as loading weights does, for layers that cache them


def _flat_outputs(outputs):
    if isinstance(outputs, dict):
        return [np.asarray(outputs[key]) for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def _assert_same_outputs(expected, actual):
    expected, actual = _flat_outputs(expected), _flat_outputs(actual)
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        # Random weights can blow a deep network's activations up to ~1e10, where float32 has no
        # 1e-5 to give: the tolerance is 1e-5 of the output's scale once that exceeds 1.
        np.testing.assert_allclose(a, e, atol=ATOL * max(1.0, float(np.abs(e).max())), rtol=0)


def _assert_round_trip(model, inputs):
    import tf_keras

    _randomize_weights(model)
    expected = model(inputs, training=False)
    twin = to_tf_keras(model)
    assert isinstance(twin, tf_keras.Model) and not isinstance(twin, keras.Model)
    _assert_same_outputs(expected, twin(inputs, training=False))
    back = from_tf_keras(twin)
    assert isinstance(back, keras.Model) and type(back).__module__.startswith("keras.src")
    _assert_same_outputs(expected, back(inputs, training=False))
    return twin, back


def _classes(model):
    found = set()
    for layer in model._flatten_layers(include_self=False):
        found.add(type(layer).__name__)
    return found


def _rand(*shape, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


# --- the zoo -------------------------------------------------------------------------------


def dense_stack():
    return keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(
                16,
                activation="gelu",
                kernel_initializer=keras.initializers.HeNormal(seed=3),
                kernel_regularizer=keras.regularizers.L2(0.01),
                bias_regularizer=keras.regularizers.L1L2(l1=0.001, l2=0.002),
                kernel_constraint=keras.constraints.MaxNorm(2.0),
            ),
            layers.BatchNormalization(momentum=0.9, epsilon=0.01),
            layers.Dropout(0.3),
            layers.LeakyReLU(negative_slope=0.1),
            layers.Dense(12, activation="swish", activity_regularizer=keras.regularizers.L1(0.01)),
            layers.PReLU(alpha_initializer=keras.initializers.Constant(0.2)),
            layers.ELU(alpha=0.5),
            layers.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.05),
            layers.Activation("tanh"),
            layers.LayerNormalization(epsilon=1e-4),
            layers.Dense(6, bias_constraint=keras.constraints.NonNeg(), name="head"),
            layers.Softmax(),
        ],
        name="dense_stack",
    )


def conv2d_graph():
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 0.5])(x)
    x = layers.Normalization(axis=-1)(x)  # un-adapted: mean/variance live in weights
    x = layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2)(x)
    x = layers.ReLU(6.0)(x)
    x = layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2)(x)
    squeeze = layers.GlobalAveragePooling2D(keepdims=True)(x)
    squeeze = layers.Conv2D(8, 1, activation="sigmoid")(squeeze)
    x = layers.Multiply()([x, squeeze])  # broadcasts (1, 1, C) over (H, W, C)
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = layers.SpatialDropout2D(0.2)(x)
    x = layers.Cropping2D(((1, 1), (2, 0)))(x)
    x = layers.UpSampling2D((2, 1), interpolation="bilinear")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.AveragePooling2D(2, strides=1, padding="same")(x)
    pooled = layers.GlobalMaxPooling2D()(x)
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Reshape((-1, 6))(x)
    x = layers.Flatten()(x)
    x = layers.Concatenate()([x, pooled])
    outputs = layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="conv2d_graph")


def conv1d_graph():
    inputs = keras.Input((20, 4))
    x = layers.Conv1D(6, 3, padding="causal", dilation_rate=2)(inputs)
    x = layers.SpatialDropout1D(0.1)(x)
    x = layers.ZeroPadding1D((2, 1))(x)
    x = layers.MaxPooling1D(2)(x)
    x = layers.Cropping1D((1, 2))(x)
    x = layers.UpSampling1D(3)(x)
    x = layers.AveragePooling1D(3, padding="same")(x)
    x = layers.SeparableConv1D(4, 3)(x)
    x = layers.DepthwiseConv1D(3)(x)
    x = layers.Conv1DTranspose(5, 3, strides=2)(x)
    a = layers.GlobalMaxPooling1D()(x)
    b = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(2)(layers.Add()([a, b]))
    return keras.Model(inputs, outputs, name="conv1d_graph")


def conv3d_graph():
    inputs = keras.Input((8, 8, 8, 2))
    x = layers.Conv3D(4, 3, padding="same", activation="elu")(inputs)
    x = layers.SpatialDropout3D(0.1)(x)
    x = layers.ZeroPadding3D(1)(x)
    x = layers.MaxPooling3D(2)(x)
    x = layers.Cropping3D(((1, 0), (0, 1), (1, 1)))(x)
    x = layers.UpSampling3D(2)(x)
    x = layers.AveragePooling3D(2)(x)
    x = layers.Conv3DTranspose(3, 2, strides=2)(x)
    a = layers.GlobalMaxPooling3D()(x)
    b = layers.GlobalAveragePooling3D()(x)
    outputs = layers.Dense(2)(layers.Concatenate()([a, b]))
    return keras.Model(inputs, outputs, name="conv3d_graph")


def merge_graph():
    """Two inputs, a dict of three outputs, a layer shared between both branches."""
    left = keras.Input((8,), name="left")
    right = keras.Input((8,), name="right")
    shared = layers.Dense(8, activation="relu", name="shared")
    a, b = shared(left), shared(right)
    merged = [
        layers.Add()([a, b]),
        layers.Subtract()([a, b]),
        layers.Multiply()([a, b]),
        layers.Average()([a, b]),
        layers.Maximum()([a, b]),
        layers.Minimum()([a, b]),
        layers.Dot(axes=1, normalize=True)([a, b]),
    ]
    concat = layers.Concatenate(axis=-1)(merged)
    outputs = {
        "score": layers.Dense(1, activation="sigmoid", name="score")(concat),
        "logits": layers.Dense(3, name="logits")(concat),
        "again": shared(layers.Dense(8)(concat)),
    }
    return keras.Model({"left": left, "right": right}, outputs, name="merge_graph")


def sequence_graph():
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    series = keras.Input((12, 3), name="series")
    x = layers.Embedding(30, 8, mask_zero=True)(tokens)
    x = layers.LSTM(6, return_sequences=True, recurrent_activation="sigmoid")(x)
    x = layers.GRU(5, return_sequences=True, reset_after=True)(x)
    x = layers.GRU(5, return_sequences=True, reset_after=False)(x)
    x = layers.SimpleRNN(5, return_sequences=True, activation="relu")(x)
    x = layers.Bidirectional(layers.SimpleRNN(4), merge_mode="concat")(x)
    y = layers.Masking(mask_value=0.0)(series)
    y, state_h, state_c = layers.LSTM(4, return_state=True, go_backwards=True)(y)
    z = layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="sum")(series)
    z = layers.TimeDistributed(layers.Dense(2))(z)
    z = layers.Flatten()(z)
    repeated = layers.RepeatVector(2)(state_h)
    repeated = layers.Flatten()(repeated)
    out = layers.Concatenate()([x, y, state_c, z, repeated])
    out = layers.UnitNormalization()(out)
    out = layers.GaussianNoise(0.1)(out)
    out = layers.GaussianDropout(0.1)(out)
    out = layers.ActivityRegularization(l1=0.01)(out)
    return keras.Model([tokens, series], layers.Dense(2)(out), name="sequence_graph")


def nested_graph():
    """A Sequential and a Functional model used as layers; the Functional one twice."""
    block = keras.Sequential(
        [keras.Input((6,)), layers.Dense(6, activation="relu"), layers.BatchNormalization()],
        name="seq_block",
    )
    inner_in = keras.Input((6,))
    inner_hidden = layers.Dense(6, activation="tanh")(inner_in)
    inner = keras.Model(inner_in, layers.Add()([inner_in, inner_hidden]), name="residual")
    unbuilt = keras.Sequential([layers.Dense(4, activation="relu")], name="built_by_call")
    inputs = keras.Input((6,))
    x = block(inputs)
    x = inner(x)
    x = inner(x)
    return keras.Model(inputs, layers.Dense(2)(unbuilt(x)), name="nested_graph")


def activations_graph():
    """Every activation the bridge calls shared, side by side, after a Dense layer."""
    from workbench.compression.layer_translation import SHARED_ACTIVATIONS

    inputs = keras.Input((8,))
    x = layers.Dense(8)(inputs)
    branches = [
        layers.Activation(name, name=f"act_{name}")(x) for name in sorted(SHARED_ACTIVATIONS)
    ]
    return keras.Model(inputs, layers.Concatenate()(branches), name="activations_graph")


def _sequence_inputs():
    tokens = np.random.default_rng(2).integers(0, 30, (4, 12)).astype("int32")
    tokens[:, -3:] = 0  # padding the mask must hide
    series = _rand(4, 12, 3)
    series[:, :2] = 0.0
    return [tokens, series]


ZOO = {
    "dense_stack": (dense_stack, lambda: _rand(4, 8)),
    "activations_graph": (activations_graph, lambda: 3 * _rand(4, 8)),
    "conv2d_graph": (conv2d_graph, lambda: _rand(2, 16, 16, 3)),
    "conv1d_graph": (conv1d_graph, lambda: _rand(3, 20, 4)),
    "conv3d_graph": (conv3d_graph, lambda: _rand(2, 8, 8, 8, 2)),
    "merge_graph": (merge_graph, lambda: {"left": _rand(4, 8), "right": _rand(4, 8, seed=2)}),
    "sequence_graph": (sequence_graph, _sequence_inputs),
    "nested_graph": (nested_graph, lambda: _rand(4, 6)),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_round_trip(name):
    build, make_inputs = ZOO[name]
    _assert_round_trip(build(), make_inputs())


def test_zoo_covers_every_supported_layer():
    covered = set()
    for build, _ in ZOO.values():
        covered |= _classes(build())
    covered.add("InputLayer")
    assert SUPPORTED_LAYERS - covered == set()


def _calls_of(tf_keras_model, layer_name):
    layer = tf_keras_model.get_layer(layer_name)
    return sum(
        node.layer is layer for nodes in tf_keras_model._nodes_by_depth.values() for node in nodes
    )


def test_shared_and_nested_structure_survives():
    model = nested_graph()
    twin = to_tf_keras(model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    assert _calls_of(twin, "residual") == 2

    sequence = sequence_graph()

    def halves(model):
        wrappers = sorted(
            (layer for layer in model.layers if type(layer).__name__ == "Bidirectional"),
            key=lambda layer: layer.name,
        )
        return [(w.name, w.forward_layer.name, w.backward_layer.name) for w in wrappers]

    assert halves(to_tf_keras(sequence)) == halves(sequence)
    assert all(forward.startswith("forward_") for _, forward, _ in halves(sequence))

    unused = keras.Input((2,), name="unused")
    used = keras.Input((3,), name="used")
    twin = to_tf_keras(keras.Model([used, unused], layers.Dense(1)(used)))
    assert [t.name for t in twin.inputs] == ["used", "unused"]

    merged = to_tf_keras(merge_graph())
    assert _calls_of(merged, "shared") == 3
    outputs = merged({"left": _rand(2, 8), "right": _rand(2, 8)})
    assert isinstance(outputs, dict) and sorted(outputs) == ["again", "logits", "score"]


def test_initializers_regularizers_and_constraints_carry_over():
    model = dense_stack()
    twin = to_tf_keras(model)
    back = from_tf_keras(twin)
    for candidate in (twin, back):
        dense = candidate.layers[0]
        assert type(dense.kernel_initializer).__name__ == "HeNormal"
        assert dense.kernel_initializer.get_config()["seed"] == 3
        assert dense.kernel_regularizer.get_config() == pytest.approx({"l2": 0.01})
        assert dense.bias_regularizer.get_config() == pytest.approx({"l1": 0.001, "l2": 0.002})
        assert dense.kernel_constraint.get_config() == {"max_value": 2.0, "axis": 0}
        assert type(candidate.get_layer("head").bias_constraint).__name__ == "NonNeg"
    x = _rand(4, 8)
    model(x), twin(x), back(x)
    expected = float(sum(np.asarray(v) for v in model.losses))
    assert expected > 0
    for candidate in (twin, back):
        assert float(sum(np.asarray(v) for v in candidate.losses)) == pytest.approx(
            expected, rel=1e-5
        )


def test_leaky_relu_slope_is_renamed_not_dropped():
    model = keras.Sequential([keras.Input((3,)), layers.LeakyReLU(negative_slope=0.01)])
    twin = to_tf_keras(model)
    assert twin.layers[0].get_config()["alpha"] == pytest.approx(0.01)
    assert from_tf_keras(twin).layers[0].negative_slope == pytest.approx(0.01)


def test_trainable_flags_carry_over():
    model = dense_stack()
    model.layers[1].trainable = False
    twin = to_tf_keras(model)
    assert twin.layers[1].trainable is False and twin.layers[0].trainable is True
    assert len(twin.trainable_weights) == len(model.trainable_weights)


def test_training_phase_is_not_frozen_into_the_twin():
    """Batch statistics and dropout must follow `training=` at call time, as in Keras 3."""
    inputs = keras.Input((6,))
    x = layers.Dense(8)(inputs)
    normalized = layers.BatchNormalization()(x)
    dropped = layers.Dropout(0.5)(normalized)
    model = keras.Model(inputs, [normalized, dropped])
    _randomize_weights(model)
    x = _rand(16, 6)
    twin = to_tf_keras(model)
    back = from_tf_keras(twin)
    for candidate in (twin, back):
        trained_normalized, trained_dropped = candidate(x, training=True)
        np.testing.assert_allclose(
            np.asarray(trained_normalized), np.asarray(model(x, training=True)[0]), atol=ATOL
        )
        assert (np.asarray(trained_dropped) == 0).mean() > 0.2


def test_mixed_precision_policy_carries_over():
    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(3, dtype="mixed_float16"), layers.Dense(2)]
    )
    twin = to_tf_keras(model)
    back = from_tf_keras(twin)
    for candidate in (twin, back):
        assert candidate.layers[0].compute_dtype == "float16"
        assert candidate.layers[0].variable_dtype == "float32"
        assert candidate.layers[1].compute_dtype == "float32"
    x = _rand(2, 4)
    np.testing.assert_allclose(np.asarray(twin(x)), np.asarray(model(x)), atol=1e-5)


def test_copy_weights_brings_changed_weights_home():
    model = conv1d_graph()
    _randomize_weights(model)
    twin = to_tf_keras(model)
    for layer in twin.layers:
        if layer.weights:  # what pruning does: zero part of each kernel
            values = layer.get_weights()
            values[0] = np.where(np.abs(values[0]) < 0.25, 0.0, values[0])
            layer.set_weights(values)
    x = _rand(3, 20, 4)
    expected = np.asarray(twin(x))
    assert not np.allclose(expected, np.asarray(model(x)), atol=ATOL)
    copy_weights(twin, model)
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=ATOL)
    kernel = model.get_layer(twin.layers[1].name).get_weights()[0]
    assert (kernel == 0).mean() > 0.3
    with pytest.raises(ValueError, match="same weight-carrying layers"):
        copy_weights(twin, dense_stack())


@pytest.mark.slow
def test_mobilenet_v2_round_trip():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )
    _assert_round_trip(model, _rand(2, 32, 32, 3))


@pytest.mark.slow
def test_efficientnet_b0_round_trip():
    """Rescaling, Normalization, swish, squeeze-and-excite Multiply with broadcasting."""
    model = keras.applications.EfficientNetB0(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None
    )
    assert {"Rescaling", "Normalization", "Multiply", "DepthwiseConv2D"} <= _classes(model)
    _assert_round_trip(model, _rand(2, 32, 32, 3) * 127 + 127)


# Logits, not probabilities: a saturated softmax would hide small differences.
APPLICATION_ARGS = {
    "input_shape": (64, 64, 3),
    "weights": None,
    "classes": 10,
    "classifier_activation": None,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.applications.ResNet50V2(**APPLICATION_ARGS),
        lambda: keras.applications.EfficientNetB0(**APPLICATION_ARGS),
        lambda: keras.applications.MobileNetV2(**APPLICATION_ARGS),
        lambda: keras.applications.ResNet50(**APPLICATION_ARGS),
        lambda: keras.applications.DenseNet121(**APPLICATION_ARGS),
        lambda: keras.applications.EfficientNetV2B0(**APPLICATION_ARGS),
        lambda: keras.applications.NASNetMobile(**APPLICATION_ARGS),
        lambda: keras.applications.Xception(**{**APPLICATION_ARGS, "input_shape": (71, 71, 3)}),
    ],
    ids=[
        "ResNet50V2",
        "EfficientNetB0",
        "MobileNetV2",
        "ResNet50",
        "DenseNet121",
        "EfficientNetV2B0",
        "NASNetMobile",
        "Xception",
    ],
)
def test_application_round_trip(build):
    model = build()
    _assert_round_trip(model, _rand(2, *model.input_shape[1:]) * 127 + 127)


# --- what the bridge refuses ---------------------------------------------------------------


class Scale(layers.Layer):
    def call(self, x):
        return x * 2.0


class WideDense(layers.Dense):
    pass


@keras.saving.register_keras_serializable(package="test_bridge")
class Smoothness(keras.regularizers.Regularizer):
    def __call__(self, x):
        return keras.ops.sum(keras.ops.abs(x[1:] - x[:-1]))

    def get_config(self):
        return {}


def test_untranslatable_layers_are_all_named_before_anything_is_built():
    inputs = keras.Input((4,))
    x = Scale(name="my_scale")(inputs)
    x = WideDense(3, name="my_dense")(x)
    model = keras.Model(inputs, layers.Dense(1)(x))
    with pytest.raises(UntranslatableLayerError) as caught:
        to_tf_keras(model)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.layer_name, error.layer_class) == ("my_scale", f"{__name__}.Scale")
    assert [p[0] for p in error.problems] == ["my_scale", "my_dense"]
    message = str(error)
    for fragment in ("'my_scale'", "Scale", "'my_dense'", "WideDense", "SUPPORTED_LAYERS"):
        assert fragment in message


@pytest.mark.parametrize(
    "make_layer, fragment",
    [
        (lambda: layers.LayerNormalization(rms_scaling=True), "rms_scaling"),
        (lambda: layers.Activation("hard_sigmoid"), "hard_sigmoid"),
        (lambda: layers.ZeroPadding1D(1, data_format="channels_first"), "data_format"),
        (lambda: layers.Dense(2, dtype="int8_from_float32"), "dtype"),
    ],
    ids=["rms_scaling", "hard_sigmoid", "zero_padding_1d_nchw", "int8"],
)
@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
def test_arguments_without_equivalent_are_refused(make_layer, fragment):
    layer = make_layer()
    model = keras.Sequential([keras.Input((4, 4)), layer])
    with pytest.raises(UntranslatableLayerError, match=fragment) as caught:
        to_tf_keras(model)
    assert caught.value.layer_name == layer.name


class Unregistered(keras.regularizers.Regularizer):
    def __call__(self, x):
        return keras.ops.sum(x)


def test_custom_regularizers_are_carried_to_the_twin_and_back():
    from workbench.regularizers import GroupLasso

    model = keras.Sequential([keras.Input((6,)),
                              layers.Dense(5, kernel_regularizer=Smoothness(), name="smooth"),
                              layers.Dense(3, kernel_regularizer=GroupLasso(0.1), name="groups")])
    twin = to_tf_keras(model)
    np.testing.assert_allclose(sorted(float(v) for v in twin.losses),
                               sorted(float(v) for v in model.losses), rtol=1e-6)
    back = from_tf_keras(twin)
    assert isinstance(back.get_layer("groups").kernel_regularizer, GroupLasso)
    assert isinstance(back.get_layer("smooth").kernel_regularizer, Smoothness)
    np.testing.assert_allclose(sorted(float(v) for v in back.losses),
                               sorted(float(v) for v in model.losses), rtol=1e-6)
    with legacy_keras_environment() as tfmot:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(
            to_tf_keras(model), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    assert len(stripped.losses) == 2


def test_an_unregistered_custom_regularizer_is_refused():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2, kernel_regularizer=Unregistered(),
                                                              name="plain")])
    with pytest.raises(UntranslatableLayerError, match="Unregistered") as caught:
        to_tf_keras(model)
    assert caught.value.layer_name == "plain"


def test_raw_ops_in_the_graph_are_refused():
    inputs = keras.Input((4,))
    outputs = layers.Dense(2)(inputs + 1.0)
    with pytest.raises(UntranslatableLayerError, match="raw operation"):
        to_tf_keras(keras.Model(inputs, outputs))


def test_subclassed_and_unbuilt_models_are_refused():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UntranslatableLayerError, match="subclassed"):
        to_tf_keras(Net(name="net"))
    with pytest.raises(UntranslatableLayerError, match="not built"):
        to_tf_keras(keras.Sequential([layers.Dense(2)]))


def test_a_model_built_in_tf_keras_comes_over():
    """tf_keras' own config quirks: `input_shape=` on a layer, list-valued BatchNorm axis."""
    import tf_keras

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Dense(4, input_shape=(3,), kernel_regularizer="l2"),
            tf_keras.layers.BatchNormalization(),
            tf_keras.layers.LeakyReLU(alpha=0.2),
            tf_keras.layers.Reshape((2, 2, 1)),
            tf_keras.layers.SpatialDropout2D(0.5, data_format="channels_first"),
            tf_keras.layers.Flatten(),
        ]
    )
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in model.get_weights()])
    x = _rand(3, 3)
    back = from_tf_keras(model)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(model(x)), atol=ATOL)
    assert back.layers[2].negative_slope == pytest.approx(0.2)
    assert back.layers[4].data_format == "channels_first"


def test_error_lists_at_most_ten_layers():
    inputs = x = keras.Input((4,))
    for i in range(12):
        x = Scale(name=f"scale_{i}")(x)
    with pytest.raises(UntranslatableLayerError) as caught:
        to_tf_keras(keras.Model(inputs, x))
    assert len(caught.value.problems) == 12
    message = str(caught.value)
    assert "'scale_0'" in message.splitlines()[0] and "11 more" in message.splitlines()[0]
    assert "'scale_9'" in message and "'scale_10'" not in message and "2 more" in message


def test_tf_keras_lambda_is_refused_on_the_way_back():
    import tf_keras

    inputs = tf_keras.Input((3,))
    outputs = tf_keras.layers.Lambda(lambda t: t * 2, name="doubler")(inputs)
    with pytest.raises(UntranslatableLayerError, match="doubler"):
        from_tf_keras(tf_keras.Model(inputs, outputs))


# --- the environment TF-MOT runs in ----------------------------------------------------------


@pytest.mark.slow
def test_legacy_keras_environment_leaves_keras_3_in_a_fresh_process():
    script = textwrap.dedent(
        """
        import json, os
        import tensorflow as tf
        import keras
        from workbench.compression import legacy_keras_environment

        from workbench.compression import from_tf_keras, to_tf_keras

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        from_tf_keras(to_tf_keras(model))
        report = {"after_bridge": os.environ.get("TF_USE_LEGACY_KERAS")}
        with legacy_keras_environment() as tfmot:
            report["inside"] = os.environ.get("TF_USE_LEGACY_KERAS")
            report["has_sparsity"] = hasattr(tfmot.sparsity.keras, "prune_low_magnitude")
        report["after"] = os.environ.get("TF_USE_LEGACY_KERAS")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        report["is_keras_model"] = isinstance(model, keras.Model)
        report["model_module"] = type(model).__module__
        report["tf_keras_attribute"] = tf.keras.layers.Dense.__module__
        print(json.dumps(report))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["after_bridge"] is None
    assert report["inside"] == "1"  # TF-MOT did set it, so restoring it below means something
    assert report["has_sparsity"]
    assert report["after"] is None
    assert report["is_keras_model"]
    assert report["model_module"].startswith("keras.src")
    assert report["tf_keras_attribute"].startswith("keras.src")


def test_legacy_keras_environment_restores_a_preset_value(monkeypatch):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    with legacy_keras_environment():
        os.environ["TF_USE_LEGACY_KERAS"] = "1"  # what TF-MOT's first import does
    assert os.environ["TF_USE_LEGACY_KERAS"] == "0"
    assert type(keras.Sequential([keras.Input((3,))])).__module__.startswith("keras.src")


def _small_conv_model(sequential):
    stack = [
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(3),
    ]
    if sequential:
        return keras.Sequential([keras.Input((8, 8, 1))] + stack)
    inputs = x = keras.Input((8, 8, 1))
    for layer in stack:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("sequential", [True, False], ids=["sequential", "functional"])
def test_tfmot_accepts_the_twin(sequential):
    model = _small_conv_model(sequential)
    _randomize_weights(model)
    x = _rand(2, 8, 8, 1)
    expected = np.asarray(model(x))
    twin = to_tf_keras(model)
    with legacy_keras_environment() as tfmot:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(twin)
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        quantized = tfmot.quantization.keras.quantize_model(twin)
    # Before any pruning step the masks are all ones: the wrapped twin is still the same function.
    np.testing.assert_allclose(np.asarray(pruned(x)), expected, atol=ATOL)
    # The way home: what strip_pruning returns is an ordinary tf_keras model again.
    np.testing.assert_allclose(np.asarray(from_tf_keras(stripped)(x)), expected, atol=ATOL)
    fake_quantized = np.asarray(quantized(x))
    assert fake_quantized.shape == (2, 3) and np.isfinite(fake_quantized).all()
