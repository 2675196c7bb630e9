"""A tiny GPT for the language-model compression and export tests: KerasHub's GPT-2 backbone,
byte-level vocabulary, tied input/output embeddings, a fixed context; trained for a few steps on a
repetitive byte text so that its predictions are far from uniform (quantization errors show)."""

import functools

import keras
import numpy as np

CONTEXT = 16
VOCABULARY = 260
TEXT = (b"def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x):\n"
        b"        self.x = x\n\nimport os\nprint(os.getcwd())\n") * 40


def build_tiny_gpt(seed=0, layers=2, width=32, heads=2, context=CONTEXT):
    """KerasHub's decoder blocks between one token embedding used twice (input, and reversed
    for the logits), so the tie survives a config round trip and a `.keras` save."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    ids = keras.Input((context,), dtype="int32", name="token_ids")
    # Keras' own ReversibleEmbedding: KerasHub's subclass of it does not implement `quantize`.
    embedding = keras.layers.ReversibleEmbedding(VOCABULARY, width, name="token_embedding")
    x = embedding(ids)
    x = x + keras_hub.layers.PositionEmbedding(context, name="position_embedding")(x)
    for i in range(layers):
        x = keras_hub.layers.TransformerDecoder(
            4 * width, heads, dropout=0.0, normalize_first=True, name=f"block_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    return keras.Model(ids, embedding(x, reverse=True), name="tiny_gpt")


def windows(count, context=CONTEXT, offset=0):
    tokens = np.frombuffer(TEXT, dtype=np.uint8).astype("int32")
    starts = (offset + np.arange(count) * 7) % (len(tokens) - context - 1)
    return np.stack([tokens[s:s + context + 1] for s in starts])


def build_workbench_gpt(seed=0, layers=1, width=16, heads=2, context=CONTEXT):
    """The recipe's GPT (`workbench.lm.model.build_gpt`), tiny, byte vocabulary."""
    from workbench.lm.model import build_gpt

    keras.utils.set_random_seed(seed)
    return build_gpt(vocabulary_size=256, context=context, layers=layers, heads=heads,
                     width=width)


BUILDERS = {"keras_hub": build_tiny_gpt, "workbench": build_workbench_gpt}


@functools.cache
def trained_weights(steps=300, builder="keras_hub", **options):
    model = BUILDERS[builder](**options)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = windows(steps * 8, offset=3)
    model.fit(data[:, :-1], data[:, 1:], batch_size=8, epochs=1, verbose=0, shuffle=False)
    return tuple(model.get_weights())


def trained_tiny_gpt(builder="keras_hub", **options):
    model = BUILDERS[builder](**options)
    model.set_weights(trained_weights(builder=builder, **options))
    return model
