"""Rematerialization (gradient checkpointing; Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost"): `--set remat=true` builds the model inside Keras' `RematScope`, so each Transformer
block (`transformer_layer_0`, `transformer_layer_1`, ... in KerasHub's backbones and the
workbench's GPT) keeps only its input for the backward pass and recomputes what lies inside it.
Activation memory drops from every block's intermediates to one block's, for about one more
forward pass of compute.

Keras runs it on JAX (`jax.checkpoint`). On TensorFlow, Keras implements it with
`tf.custom_gradient`, which fails inside the compiled `fit` step ("The custom_gradient decorator
currently supports keywords arguments only when eager execution is enabled."), so there
`remat=true` is refused before any work.
"""

from __future__ import annotations

import contextlib

from workbench.errors import WorkbenchError

TENSORFLOW_ERROR = ("The custom_gradient decorator currently supports keywords arguments only "
                    "when eager execution is enabled.")
# Enough names for any depth: a name that matches no layer costs nothing.
BLOCK_NAMES = [f"transformer_layer_{index}" for index in range(1024)]


def check_remat():
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        raise WorkbenchError(
            "remat=true does not run on the TensorFlow backend: Keras' RematScope uses "
            f"tf.custom_gradient, which fails in the compiled fit step ('{TENSORFLOW_ERROR}'); "
            "run with KERAS_BACKEND=jax, or drop remat")


@contextlib.contextmanager
def remat_scope(enabled):
    """Layers built inside rematerialize their blocks when `enabled`."""
    if not enabled:
        yield
        return
    import keras

    with keras.RematScope(mode="list_of_layers", layer_names=BLOCK_NAMES):
        yield
