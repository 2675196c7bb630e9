"""Rematerialization (gradient checkpointing; Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost"): `--set remat=true` wraps each Transformer block (`transformer_layer_0`,
`transformer_layer_1`, ... in KerasHub's backbones and the workbench's GPT) in Keras' `keras.remat`,
so the backward pass keeps only each block's input and recomputes what lies inside it. Activation
memory drops from every block's intermediates to one block's, for about one more forward pass of
compute.

Only the tensors go through the checkpoint; the call's other arguments (`training`, masks given as
`None`, flags) are bound outside it. Keras' `RematScope` passes them all through `jax.checkpoint`,
which turns the `training` flag into a traced value that KerasHub's dropout layers cannot branch
on ("Attempted boolean conversion of traced array").

The block's tensors are passed to the checkpointed function positionally: TensorFlow's
`tf.custom_gradient`, which `keras.remat` uses there, takes no keyword arguments in a compiled
function ("The custom_gradient decorator currently supports keywords arguments only when eager
execution is enabled.", which is what `RematScope` runs into on TensorFlow). So it works in the
compiled `fit` step on TensorFlow and on JAX (`jax.checkpoint`).
"""

from __future__ import annotations

BLOCK_PREFIX = "transformer_layer_"


def _is_tensor(value):
    import keras

    return keras.ops.is_tensor(value) or hasattr(value, "shape") and hasattr(value, "dtype")


def rematerialize_blocks(model):
    """Wrap every Transformer block's `call` of `model` in `keras.remat`; the number wrapped."""
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False):
        if not layer.name.startswith(BLOCK_PREFIX) or getattr(layer, "_workbench_remat", False):
            continue
        original = layer.call

        def call(*args, _original=original, **kwargs):
            static = {k: v for k, v in kwargs.items() if not _is_tensor(v)}
            names = [k for k, v in kwargs.items() if _is_tensor(v)]
            count = len(args)

            def block(*tensors):
                return _original(*tensors[:count], **dict(zip(names, tensors[count:])),
                                 **static)

            # Positional only: TensorFlow's custom_gradient takes no keyword arguments in a graph.
            return keras.remat(block)(*args, *(kwargs[k] for k in names))

        layer.call = call
        layer._workbench_remat = True
        count += 1
    return count
