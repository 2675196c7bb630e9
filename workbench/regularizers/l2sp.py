import contextlib

import keras
import numpy as np
from keras import ops


def _outside_any_graph():
    """A context in which a variable can be read as a concrete value.

    Keras first evaluates regularizers while tracing the train step, where
    variables are symbolic. TensorFlow's `init_scope` steps out to eager
    execution for the duration of the read; other backends evaluate
    eagerly at that point already.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    return contextlib.nullcontext()


@keras.saving.register_keras_serializable(package="workbench")
class L2SP(keras.regularizers.Regularizer):
    """L2-SP: an L2 pull toward the starting point of fine-tuning.

    Plain weight decay pulls a pretrained network toward zero, i.e. away
    from what it learned. L2-SP pulls each weight toward its value before
    fine-tuning instead (Li, Grandvalet & Davoine, 2018, "Explicit Inductive
    Bias for Transfer Learning with Convolutional Networks",
    https://arxiv.org/abs/1802.01483):

    ```python
    penalty = strength * sum((w - w_reference) ** 2)
    ```

    Like Keras' `L2`, there is no factor 1/2 (the paper's `alpha / 2` is
    `strength` here). The paper adds plain L2 on new layers (the fresh
    classifier head); use `keras.regularizers.L2` there.

    Where the reference comes from:

    - `reference=None` (the default): the weights' value the first time the
      penalty is computed, which is when training starts (Keras evaluates
      weight regularizers when it builds the train step, not when the
      layer is built or called). Load the pretrained weights before the
      first `fit`. The value is copied once and then fixed.
    - `reference=array`: that value, for when the anchor is known up front.

    One instance anchors one weight. `layer.kernel_regularizer` is
    instantiated per layer when a model is built from a config, but the
    same Python object passed to two weights would be asked to anchor both;
    that is refused with an error rather than silently mixing anchors.

    Serialization: once captured, the reference is part of `get_config()`
    (as nested lists), so a model saved mid-fine-tuning and loaded again
    keeps pulling toward the *original* pretrained weights, not toward the
    weights at the time it was loaded. The cost is a `config.json` that
    grows with the size of the regularized weights; for models large
    enough for that to matter, pass the anchor from the pretrained
    checkpoint explicitly when rebuilding. The reference enters the traced
    train step as a constant.

    Example:

    >>> regularizer = L2SP(0.5, reference=[[1.0, 2.0]])
    >>> float(regularizer(keras.ops.convert_to_tensor([[2.0, 0.0]])))  # 0.5*5
    2.5
    >>> pretrained = keras.layers.Dense(4, kernel_regularizer=L2SP(1e-2))

    Args:
        strength: Non-negative Python float, the penalty's coefficient.
        reference: `None`, or an array-like with the weight's shape: the
            values to pull toward.
    """

    def __init__(self, strength=0.01, reference=None):
        if strength < 0:
            raise ValueError(
                f"Argument `strength` must be >= 0. Received: strength={strength}"
            )
        self.strength = float(strength)
        self.reference = None if reference is None else np.asarray(reference)
        self._anchored_path = None

    def _check_target(self, x):
        path = getattr(x, "path", None)
        if path is not None:
            if self._anchored_path is None:
                self._anchored_path = path
            elif path != self._anchored_path:
                raise ValueError(
                    f"This L2SP instance already anchors '{self._anchored_path}'"
                    f" and was asked to regularize '{path}' as well. Give each "
                    "weight its own L2SP instance."
                )
        if self.reference is not None and tuple(x.shape) != self.reference.shape:
            raise ValueError(
                f"L2SP reference has shape {self.reference.shape} but the "
                f"weight it regularizes has shape {tuple(x.shape)}. Give each "
                "weight its own L2SP instance, with a reference of its shape."
            )

    def _capture_reference(self, x):
        try:
            with _outside_any_graph():
                # `.numpy()` first: NumPy 2 warns when it converts a Keras
                # variable through `__array__`.
                value = x.numpy() if hasattr(x, "numpy") else x
                self.reference = np.array(ops.convert_to_numpy(value))
        except Exception as error:
            raise ValueError(
                "L2SP(reference=None) takes its reference from the first "
                "value it sees, which must be a weight variable or a concrete "
                f"array; got a symbolic tensor {x!r}. Pass `reference=` "
                "explicitly."
            ) from error

    def __call__(self, x):
        self._check_target(x)
        if self.reference is None:
            self._capture_reference(x)
        x = ops.convert_to_tensor(x)
        reference = ops.convert_to_tensor(self.reference, dtype=x.dtype)
        return self.strength * ops.sum(ops.square(x - reference))

    def get_config(self):
        reference = None if self.reference is None else self.reference.tolist()
        return {"strength": self.strength, "reference": reference}
