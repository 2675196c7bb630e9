"""Import TF-MOT without letting it change which Keras the rest of the process gets."""

import contextlib
import os

_FLAG = "TF_USE_LEGACY_KERAS"


@contextlib.contextmanager
def legacy_keras_environment():
    """Imports `tensorflow_model_optimization` and yields it, leaving `os.environ` as it was.

    Importing TF-MOT sets `TF_USE_LEGACY_KERAS=1` for the whole process and then resolves
    `tf.keras`; whatever `tf.keras` resolves to first is what it stays. So before the import,
    `tf.keras` is resolved under the caller's own environment (Keras 3 unless the caller chose
    otherwise), and afterwards the variable is restored (or removed, if it was unset). `keras`
    itself is Keras 3 throughout; TF-MOT keeps using `tf_keras` internally either way.

    Example:

    ```python
    with legacy_keras_environment() as tfmot:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(to_tf_keras(model))
    ```
    """
    import tensorflow as tf

    before = os.environ.get(_FLAG)
    # Touching the lazy loader is the only way to pin it; nothing here builds with it.
    getattr(tf.keras, "__version__", None)
    try:
        import tensorflow_model_optimization as tfmot

        yield tfmot
    finally:
        if before is None:
            os.environ.pop(_FLAG, None)
        else:
            os.environ[_FLAG] = before
