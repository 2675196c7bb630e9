"""Custom Keras 3 regularizers (the workbench's GroupLasso and L2SP, or a user's) in a tf_keras twin.

A regularizer is only a function of a weight, and Keras 3's ops run on TensorFlow tensors under the
TensorFlow backend, so the twin keeps the very same Keras 3 object behind a small tf_keras
adapter: the penalty stays exactly the one the model was trained with (GroupLasso keeps pushing
whole filters to zero while TF-MOT prunes), and the way back unwraps the original.
"""

import functools

ADAPTER_NAME = "Keras3Regularizer"


@functools.cache
def _adapter_class():
    import keras
    import tf_keras

    @tf_keras.utils.register_keras_serializable(package="workbench_bridge")
    class Keras3Regularizer(tf_keras.regularizers.Regularizer):
        """A tf_keras regularizer that applies a Keras 3 one."""

        def __init__(self, keras3):
            if isinstance(keras3, dict):
                keras3 = keras.saving.deserialize_keras_object(keras3)
            self.keras3 = keras3

        def __call__(self, x):
            return self.keras3(x)

        def get_config(self):
            return {"keras3": keras.saving.serialize_keras_object(self.keras3)}

    return Keras3Regularizer


def is_adapter(value):
    return value.get("class_name") == ADAPTER_NAME or str(
        value.get("registered_name", "")).endswith(f">{ADAPTER_NAME}")


def translate(value, to_tf_keras):
    """A custom regularizer's serialized form -> the object for the other side, or None when
    this is not a regularizer the adapter can carry (the caller then refuses it)."""
    import keras

    if to_tf_keras:
        try:
            regularizer = keras.saving.deserialize_keras_object(value)
        except (TypeError, ValueError):
            return None  # not registered with Keras 3: nothing to carry over
        return _adapter_class()(regularizer) if isinstance(
            regularizer, keras.regularizers.Regularizer) else None
    if is_adapter(value):
        return keras.saving.deserialize_keras_object(value["config"]["keras3"])
    return None
