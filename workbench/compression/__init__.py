"""Compression glue: the Keras 3 <-> tf_keras bridge and the environment TF-MOT runs in.

Nothing here imports tf_keras or TF-MOT at package import; they load on first use.
"""

from workbench.compression.bridge import (
    SUPPORTED_LAYERS,
    UntranslatableLayerError,
    copy_weights,
    from_tf_keras,
    to_tf_keras,
)
from workbench.compression.environment import legacy_keras_environment

__all__ = [
    "SUPPORTED_LAYERS",
    "UntranslatableLayerError",
    "copy_weights",
    "from_tf_keras",
    "legacy_keras_environment",
    "to_tf_keras",
]
