"""The JAX side of tests/test_sharding.py: `python tests/sharding_checks.py CHECK` runs one check
on the JAX backend over the CPU's logical devices (the test sets `KERAS_BACKEND=jax` and
`JAX_NUM_CPU_DEVICES=8`) and prints one line `RESULT <json>` for the test to judge.

- `gpt`: the workbench GPT trained 20 steps on one device, under `model_parallel` (the rules, no
  model in advance) and under `data_parallel`: the held-out losses, how much of each variable and
  of each batch every device holds; the layouts of `model_parallel_for` (from `layout_map`),
  dimensions that do not divide, one device, and a model the layouts do not know.
- `keras_hub`: the loss and shards for KerasHub's GPT-2 (inside a functional wrapper around its
  CausalLM), and the shards of a Qwen backbone laid out by its class's `get_layout_map`.
"""

import contextlib
import json
import sys

import keras
import numpy as np

STEPS, BATCH, CONTEXT, VOCABULARY = 20, 8, 16, 64


def token_batches(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCABULARY, (STEPS * BATCH + BATCH, CONTEXT + 1)).astype("int32")
    train, held = tokens[:-BATCH], tokens[-BATCH:]
    return (train[:, :-1], train[:, 1:]), (held[:, :-1], held[:, 1:])


def shards(variables):
    """`{path: [fraction of the variable each device holds, number of devices holding it]}`."""
    out = {}
    for variable in variables:
        value = variable.value
        shape = tuple(variable.shape)
        size = max(1, int(np.prod(shape)))
        pieces = value.addressable_shards
        fractions = {int(np.prod(piece.data.shape)) / size for piece in pieces}
        assert fractions == {int(np.prod(value.sharding.shard_shape(shape))) / size}
        out[variable.path] = [max(fractions), len({piece.device for piece in pieces})]
    return out


def train(build, distribution=None):
    """Build, compile and fit `build()` (inside `distribution`'s scope when given); return the
    held-out loss after STEPS steps and the model."""
    (x, y), (held_x, held_y) = token_batches()
    keras.utils.set_random_seed(0)
    with distribution.scope() if distribution is not None else contextlib.nullcontext():
        model = build()
        model.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        loss = float(model.evaluate(held_x, held_y, batch_size=BATCH, verbose=0))
    return loss, model


class BatchProbe(keras.layers.Layer):
    """Passes its input through and records, as `fit` traces the step, how much of the batch each
    device gets (JAX's view of the input's sharding inside the compiled step)."""

    seen = []

    def call(self, x):
        import jax

        shape = tuple(x.shape)
        jax.debug.inspect_array_sharding(
            x, callback=lambda sharding: BatchProbe.seen.append(
                list(sharding.shard_shape(shape))))
        return x


def probed(build):
    def build_probed():
        model = build()
        token_ids = keras.Input((CONTEXT,), dtype="int32")
        return keras.Model(token_ids, model(BatchProbe()(token_ids)))

    return build_probed


def optimizer_shards(model):
    return shards([v for v in model.optimizer.variables if len(v.shape) >= 2])


def check_gpt():
    from workbench import sharding
    from workbench.errors import WorkbenchError
    from workbench.lm.model import build_gpt

    def build():
        return build_gpt(vocabulary_size=VOCABULARY, context=CONTEXT, layers=2, heads=4, width=64)

    single, _ = train(build)
    rules_strategy = sharding.DistributionStrategy("model_parallel")
    with rules_strategy.scope():
        pass  # an empty scope creates nothing and is no error
    model_parallel, model = train(probed(build), rules_strategy)
    model_parallel_batches = list(BatchProbe.seen)
    BatchProbe.seen.clear()
    data_parallel, replicated = train(probed(build), sharding.make_distribution("data_parallel"))
    data_parallel_batches = list(BatchProbe.seen)
    with sharding.model_parallel_for(build).scope():
        mapped = build()
    # Dimensions that do not divide by 8: vocabulary 60 splits the width instead, an MLP of 100
    # stays whole; one device is the unsharded model.
    (x, _), _ = token_batches()
    with rules_strategy.scope():
        uneven = build_gpt(vocabulary_size=60, context=CONTEXT, layers=1, heads=4, width=64,
                           intermediate_dim=100)
        uneven_logits = uneven.predict(x[:BATCH] % 60, verbose=0)
    one_device = sharding.make_distribution(
        "model_parallel", devices=keras.distribution.list_devices()[:1])
    with one_device.scope():
        alone = build()
        alone_logits = alone.predict(x[:BATCH], verbose=0)
    refused = None
    try:
        with rules_strategy.scope():
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="head")])
    except WorkbenchError as error:
        refused = str(error)
    return {"devices": len(keras.distribution.list_devices()),
            "losses": {"single": single, "model_parallel": model_parallel,
                       "data_parallel": data_parallel},
            "shards": shards(model.weights), "map_shards": shards(mapped.weights),
            "data_parallel_shards": shards(replicated.weights),
            "optimizer_shards": optimizer_shards(model), "refused": refused,
            "uneven_shards": shards(uneven.weights),
            "uneven_axes": dict(rules_strategy.distribution.sharded[-5:]),
            "uneven_finite": bool(np.isfinite(uneven_logits).all()),
            "one_device_shards": shards(alone.weights),
            "one_device_finite": bool(np.isfinite(alone_logits).all()),
            "data_parallel_batches": data_parallel_batches,
            "model_parallel_batches": model_parallel_batches,
            "replicas": rules_strategy.num_replicas_in_sync}


def check_keras_hub():
    import keras_hub

    from workbench import sharding

    def build_gpt2():
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=VOCABULARY, num_layers=2, num_heads=8, hidden_dim=64,
            intermediate_dim=128, max_sequence_length=32, dropout=0.0)
        causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        token_ids = keras.Input((CONTEXT,), dtype="int32", name="token_ids")
        logits = causal_lm({"token_ids": token_ids,
                            "padding_mask": keras.ops.ones_like(token_ids, dtype="bool")})
        return keras.Model(token_ids, logits, name="gpt2_wrapper")

    def build_qwen():
        return keras_hub.models.QwenBackbone(
            vocabulary_size=VOCABULARY, num_layers=2, num_query_heads=8, num_key_value_heads=8,
            hidden_dim=64, intermediate_dim=128)

    single, _ = train(build_gpt2)
    model_parallel, gpt2 = train(build_gpt2, sharding.DistributionStrategy("model_parallel"))
    with sharding.model_parallel_for(build_gpt2).scope():
        gpt2_mapped = build_gpt2()
    qwen_distribution = sharding.model_parallel_for(build_qwen)
    with qwen_distribution.scope():
        qwen = build_qwen()
    with sharding.DistributionStrategy("model_parallel").scope():
        qwen_rules = build_qwen()
    return {"devices": len(keras.distribution.list_devices()),
            "losses": {"single": single, "model_parallel": model_parallel},
            "gpt2_shards": shards(gpt2.weights), "gpt2_map_shards": shards(gpt2_mapped.weights),
            "qwen_shards": shards(qwen.weights),
            "qwen_layouts": {path: list(layout.axes) for path, layout
                             in qwen_distribution._layout_map.items()},
            "qwen_rule_shards": shards(qwen_rules.weights)}


CHECKS = {"gpt": check_gpt, "keras_hub": check_keras_hub}

if __name__ == "__main__":
    print("RESULT " + json.dumps(CHECKS[sys.argv[1]]()), flush=True)
