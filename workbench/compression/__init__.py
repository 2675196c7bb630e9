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
from workbench.compression.clustering import Clustered, cluster
from workbench.compression.distillation import Distilled, distill
from workbench.compression.pruning import Pruned, kernel_sparsity, prune
from workbench.compression.quantization import (
    QuantizedAware,
    quantize_aware,
    quantize_post_training,
)
from workbench.compression.training import FineTuning

__all__ = [
    "SUPPORTED_LAYERS",
    "UntranslatableLayerError",
    "copy_weights",
    "from_tf_keras",
    "legacy_keras_environment",
    "to_tf_keras",
    "Clustered",
    "Distilled",
    "FineTuning",
    "Pruned",
    "QuantizedAware",
    "cluster",
    "distill",
    "kernel_sparsity",
    "prune",
    "quantize_aware",
    "quantize_post_training",
]
