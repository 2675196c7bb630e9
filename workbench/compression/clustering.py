"""Weight clustering of a Keras 3 model with TF-MOT, through its tf_keras twin.

Each chosen layer's weights are replaced by `clusters` shared values (Han et al., 2016, "Deep
Compression", arXiv:1510.00149): `tfmot.clustering.keras.cluster_weights` wraps the layers, the
centroids are fine-tuned with a Keras 3 optimizer (`training.fine_tune`), `strip_clustering`
leaves plain layers whose kernels hold at most `clusters` distinct values, and the weights come
home as a Keras 3 model. Few distinct values compress well (gzip), and survive int8 quantization.

With `preserve_sparsity` (on by default) a zero weight stays zero, one of the centroids being
pinned at 0, so clustering a pruned model keeps its sparsity.

Example:

```python
result = cluster(model, x_train, y_train, clusters=16, epochs=2)
result.unique_values        # {"dense": 16, ...}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from workbench.compression.environment import legacy_keras_environment
from workbench.compression.training import (
    FineTuning, check_training_data, choose_layers, clone_wrapping, fine_tune, leaf_layers,
    tf_keras_twin)
from workbench.errors import WorkbenchError, suggest
from workbench.settings import CLUSTER_INITS


@dataclass
class Clustered:
    """What `cluster` returns.

    Attributes:
        model: the clustered Keras 3 model (uncompiled).
        unique_values: layer name -> the most distinct values in any of its clustered kernels.
        skipped_layers: layer name -> why it was left unclustered (only when no layers were
            named).
        losses: mean fine-tuning loss of every epoch.
    """

    model: Any
    unique_values: dict
    skipped_layers: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)


def check_cluster_arguments(clusters, init, epochs, preserve_sparsity):
    """Raise a `WorkbenchError` for a clustering setting out of range or not a known choice."""
    smallest = 3 if preserve_sparsity else 2
    if not isinstance(clusters, int) or clusters < smallest:
        raise WorkbenchError(
            f"clustering needs at least {smallest} clusters"
            f"{' when it preserves sparsity (one is pinned at zero)' if preserve_sparsity else ''}"
            f", got {clusters!r}")
    if init not in CLUSTER_INITS:
        raise WorkbenchError(f"unknown centroid initialization '{init}': "
                             f"{suggest(init, CLUSTER_INITS)}")
    if epochs < 1:
        raise WorkbenchError(f"clustering needs epochs >= 1, got {epochs}")


def cluster(model, x, y, *, clusters: int = 16, init: str = "kmeans_plus_plus", layers=(),
            preserve_sparsity: bool = True, epochs: int = 2,
            fine_tuning: Optional[FineTuning] = None):
    """Cluster a Keras 3 model's weights with TF-MOT and fine-tune the centroids.

    Args:
        model: a built Keras 3 Sequential or Functional model (left unchanged).
        x, y: training examples for the fine-tuning.
        clusters: distinct values per clustered weight tensor.
        init: centroid initialization: `kmeans_plus_plus`, `linear`, `random`, `density_based`.
        layers: names of the layers to cluster; empty clusters every layer TF-MOT can.
        preserve_sparsity: keep zero weights at zero (for pruned models).
        epochs: fine-tuning epochs.
        fine_tuning: loss, batch size and Keras 3 optimizer; `FineTuning()` when not given.

    Raises:
        WorkbenchError: a setting out of range, an unknown or unclusterable layer name, a layer
            the bridge cannot translate, or no training data.
    """
    check_cluster_arguments(clusters, init, epochs, preserve_sparsity)
    check_training_data(x, y, "clustering")
    with legacy_keras_environment() as tfmot:
        from workbench.compression.bridge import from_tf_keras

        api = tfmot.clustering.keras
        twin = tf_keras_twin(model)
        chosen = choose_layers(twin, tuple(layers), "cluster")

        def make_wrapper(layer):
            return api.cluster_weights(
                layer, number_of_clusters=clusters,
                cluster_centroids_init=getattr(api.CentroidInitialization, init.upper()),
                preserve_sparsity=preserve_sparsity)

        too_small = {name: why for name, layer in leaf_layers(twin).items()
                     if name in chosen and (why := _too_few_weights(layer, clusters,
                                                                    preserve_sparsity))}
        wrapped, wrappers, refused = clone_wrapping(twin, chosen - set(too_small), make_wrapper)
        refused.update(too_small)
        if refused and layers:
            name, why = next(iter(refused.items()))
            raise WorkbenchError(f"cannot cluster layer '{name}': it {why}; leave it out of "
                                 "the clustered layers")
        if not wrappers:
            raise WorkbenchError("the model has no layer TF-MOT can cluster; cluster a model "
                                 "with Dense or Conv layers")
        losses = fine_tune(wrapped, x, y, epochs=epochs, fine_tuning=fine_tuning)
        stripped = api.strip_clustering(wrapped)
        names = {wrapper.layer.name for wrapper in wrappers}
        unique_values = {
            name: max((len(np.unique(np.asarray(w))) for w in layer.weights if len(w.shape) >= 2),
                      default=0)
            for name, layer in leaf_layers(stripped).items() if name in names}
        clustered = from_tf_keras(stripped)
    return Clustered(model=clustered, unique_values=unique_values, skipped_layers=refused,
                     losses=losses)


def _too_few_weights(layer, clusters, preserve_sparsity):
    """Why a layer's kernels are too small to cluster, or None.

    k-means++ needs more points than centroids, and with `preserve_sparsity` TF-MOT splits the
    non-zero centroids between negative and positive weights in proportion; twice as many
    (non-zero) weights as clusters keeps both sides feasible.
    """
    for weight in layer.weights:
        if len(weight.shape) < 2:
            continue
        values = np.asarray(weight)
        count = int(np.count_nonzero(values)) if preserve_sparsity else values.size
        if count < 2 * clusters:
            kind = "non-zero " if preserve_sparsity else ""
            return (f"has {count} {kind}weights in '{weight.name}', fewer than twice the "
                    f"{clusters} clusters")
    return None
