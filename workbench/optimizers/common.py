"""Helpers shared by the optimizers."""

import keras
from keras import ops


def constant(value, dtype):
    """`value` as a tensor of `dtype`.

    Python numbers are converted straight to `dtype`: `ops.cast(0.9,
    "float64")` goes through float32 and returns 0.89999997, which is enough
    to make a float64 run disagree with its reference in the sixth digit.
    """
    if isinstance(value, (int, float)):
        return ops.convert_to_tensor(value, dtype=dtype)
    return ops.cast(value, dtype)


def num_replicas_in_sync():
    """Number of replicas whose gradients are summed into one update."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    return 1
