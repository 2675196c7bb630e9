"""A decoder-only Transformer language model (GPT) from KerasHub's pieces.

`build_gpt` returns a `GPT`: token ids `(batch, context)` -> next-token logits
`(batch, context, vocabulary)`. Its defaults are nanoGPT's CPU "baby GPT" (Karpathy,
https://github.com/karpathy/nanoGPT, `config/train_shakespeare_char.py` shrunk for a CPU): 4 layers,
4 heads, width 128, context 64, dropout 0, no biases, tied input/output embeddings.

Architecture (GPT-2, Radford et al. 2019, pre-norm):

    h_0 = E[x] + P                       token embedding E (V x D) + learned positions P (T x D)
    a_l = h_l + W_o Attn(LN(h_l))        causal softmax attention, heads of width D / H
    h_l+1 = a_l + W_2 GELU(W_1 LN(a_l))  W_1: D -> 4D, W_2: 4D -> D
    logits = LN(h_L) E^T                 the same E, reversed (weight tying, Press & Wolf 2017)

The embeddings are KerasHub's `PositionEmbedding` and Keras' `ReversibleEmbedding` (the one
Keras' `model.quantize` handles). Two block implementations:

- `block="fused"` (default): `DecoderBlock`, one Dense for Q, K and V together, no biases,
  LayerNorm without offset, `keras.ops.dot_product_attention(..., is_causal=True)` (a fused kernel
  where the backend has one). keras.ops only, so it trains on every Keras backend.
- `block="keras_hub"`: KerasHub's `TransformerDecoder` (GPT-2's block with biases, separate Q/K/V
  projections, the causal mask built each call); about 10% slower per step on a CPU.

Initialization follows GPT-2/nanoGPT: N(0, 0.02) everywhere, the residual projections scaled by
1/sqrt(2 L).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

BLOCKS = ("fused", "keras_hub")


@keras.saving.register_keras_serializable(package="workbench")
class DecoderBlock(layers.Layer):
    """A pre-norm GPT-2 block without biases: causal self-attention, then a GELU MLP, each added
    to the residual stream.

    Args:
        num_heads: attention heads; `width` (the input's last dimension) must divide by it.
        intermediate_dim: the MLP's hidden width (4 x width in GPT-2).
        dropout: dropout on each branch's output before it joins the residual stream.
        layer_norm_epsilon: LayerNorm's epsilon.
        residual_scale: standard deviation multiplier of the two output projections' init.
        approximate_gelu: GELU's tanh approximation (GPT-2's) instead of the exact erf form
            (nanoGPT's `nn.GELU()`, the default). A saved block without this setting was
            trained with the approximation and loads with it.
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, layer_norm_epsilon=1e-5,
                 residual_scale=1.0, approximate_gelu=False, **kwargs):
        super().__init__(**kwargs)
        self.approximate_gelu = bool(approximate_gelu)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.residual_scale = float(residual_scale)

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} does not divide into {self.num_heads} heads")
        init = keras.initializers.RandomNormal(stddev=0.02)
        out_init = keras.initializers.RandomNormal(stddev=0.02 * self.residual_scale)
        common = {"use_bias": False, "dtype": self.dtype_policy}
        self.attention_norm = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, center=False, dtype=self.dtype_policy,
            name="attention_norm")
        self.qkv = layers.Dense(3 * width, kernel_initializer=init, name="qkv", **common)
        self.attention_output = layers.Dense(width, kernel_initializer=out_init,
                                             name="attention_output", **common)
        self.mlp_norm = layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, center=False, dtype=self.dtype_policy,
            name="mlp_norm")
        self.mlp_in = layers.Dense(self.intermediate_dim, kernel_initializer=init, name="mlp_in",
                                   **common)
        self.mlp_out = layers.Dense(width, kernel_initializer=out_init, name="mlp_out", **common)
        self.attention_norm.build(input_shape)
        self.qkv.build(input_shape)
        self.attention_output.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.dropout_layer = layers.Dropout(self.dropout) if self.dropout else None
        super().build(input_shape)

    def _branch_dropout(self, x, training):
        return self.dropout_layer(x, training=training) if self.dropout_layer else x

    def call(self, x, training=None):
        batch, length, width = ops.shape(x)[0], ops.shape(x)[1], x.shape[-1]
        head = width // self.num_heads
        qkv = ops.reshape(self.qkv(self.attention_norm(x)),
                          (batch, length, 3, self.num_heads, head))
        attended = ops.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                             is_causal=True)
        attended = self.attention_output(ops.reshape(attended, (batch, length, width)))
        x = x + self._branch_dropout(attended, training)
        hidden = ops.gelu(self.mlp_in(self.mlp_norm(x)), approximate=self.approximate_gelu)
        return x + self._branch_dropout(self.mlp_out(hidden), training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "residual_scale": self.residual_scale, "approximate_gelu": self.approximate_gelu}

    @classmethod
    def from_config(cls, config):
        return cls(**{"approximate_gelu": True, **config})


@keras.saving.register_keras_serializable(package="workbench")
class GPT(keras.Model):
    """A GPT language model: token ids -> next-token logits (float32 under mixed precision).

    Built as a functional model (the KerasHub backbone pattern), so it saves, reloads, clones,
    quantizes and exports like any functional model; `transformer_layers` lists its blocks in call
    order.

    Args:
        vocabulary_size: tokens (256 for bytes).
        context: tokens the model reads (its input length and number of positions).
        num_layers, num_heads, hidden_dim: depth, heads per block, width.
        intermediate_dim: the MLP's hidden width (`4 * hidden_dim` when `None`).
        dropout: dropout on the embeddings and on each block branch.
        block: `"fused"` (`DecoderBlock`) or `"keras_hub"` (KerasHub's `TransformerDecoder`).
        approximate_gelu: the fused block's GELU as GPT-2's tanh approximation rather than
            the exact form (nanoGPT's, the default); a model saved without this setting was
            trained with the approximation and loads with it.
    """

    def __init__(self, vocabulary_size=256, context=64, num_layers=4, num_heads=4,
                 hidden_dim=128, intermediate_dim=None, dropout=0.0, block="fused",
                 approximate_gelu=False, **kwargs):
        import keras_hub

        if block not in BLOCKS:
            raise ValueError(f"unknown block '{block}' (valid: {', '.join(BLOCKS)})")
        intermediate_dim = intermediate_dim or 4 * hidden_dim
        init = keras.initializers.RandomNormal(stddev=0.02)
        residual_scale = 1.0 / math.sqrt(2 * num_layers)
        token_embedding = layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True, embeddings_initializer=init,
            name="token_embedding")
        position_embedding = keras_hub.layers.PositionEmbedding(
            context, initializer=init, name="position_embedding")
        blocks = []
        for index in range(num_layers):
            if block == "fused":
                blocks.append(DecoderBlock(num_heads, intermediate_dim, dropout=dropout,
                                           residual_scale=residual_scale,
                                           approximate_gelu=approximate_gelu,
                                           name=f"transformer_layer_{index}"))
            else:
                blocks.append(keras_hub.layers.TransformerDecoder(
                    intermediate_dim, num_heads, dropout=dropout, activation="gelu",
                    layer_norm_epsilon=1e-5, kernel_initializer=init, normalize_first=True,
                    name=f"transformer_layer_{index}"))
        final_norm = layers.LayerNormalization(epsilon=1e-5, center=block != "fused",
                                               name="final_norm")

        token_ids = keras.Input((context,), dtype="int32", name="token_ids")
        tokens = token_embedding(token_ids)
        x = tokens + position_embedding(tokens)
        if dropout:
            x = layers.Dropout(dropout, name="embedding_dropout")(x)
        for layer in blocks:
            x = layer(x)
        logits = token_embedding(final_norm(x), reverse=True)
        logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)
        self.transformer_layers = blocks
        self.vocabulary_size = int(vocabulary_size)
        self.context = int(context)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.block = block
        self.approximate_gelu = bool(approximate_gelu)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "vocabulary_size": self.vocabulary_size, "context": self.context,
                "num_layers": self.num_layers, "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim, "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout, "block": self.block,
                "approximate_gelu": self.approximate_gelu}

    @classmethod
    def from_config(cls, config):
        return cls(**{"approximate_gelu": True, **config})


def build_gpt(vocabulary_size=256, context=64, layers=4, heads=4, width=128, dropout=0.0,
              intermediate_dim=None, block="fused", name="gpt"):
    """nanoGPT's CPU GPT by default (see the module docstring); every size can be changed."""
    return GPT(vocabulary_size=vocabulary_size, context=context, num_layers=layers,
               num_heads=heads, hidden_dim=width, intermediate_dim=intermediate_dim,
               dropout=dropout, block=block, name=name)


def model_context(model):
    """The number of tokens `model` reads (its fixed input length), or `None`."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 2 and shape[1]:
        return int(shape[1])
    return None


def flops_per_token(model, training=True):
    """Model FLOPs per token, as nanoGPT's `estimate_mfu` and the PaLM paper (Chowdhery et al.
    2022, appendix B) count them: a forward pass costs `2 N + 4 L T D` per token (`N` parameters
    without the position table, each used in one multiply-add; attention scores and their
    weighted sum over `T` positions in `L` layers of width `D`); training costs three times that
    (`6 N + 12 L T D`: the backward pass is twice the forward)."""
    context = model_context(model) or 0
    blocks = getattr(model, "transformer_layers", None) or [
        layer for layer in model._flatten_layers(include_self=False)
        if type(layer).__name__ in ("DecoderBlock", "TransformerDecoder")]
    embedding = next((layer for layer in model._flatten_layers(include_self=False)
                      if isinstance(layer, layers.Embedding)), None)
    width = embedding.output_dim if embedding is not None else 0
    positions = sum(int(math.prod(w.shape)) for w in model.weights
                    if "position" in w.path and "embedding" in w.path)
    # Every weight multiplies in the forward pass, trainable or frozen (fine-tuning with LoRA);
    # the adapters' own factors are left out.
    parameters = sum(int(math.prod(w.shape)) for w in model.weights
                     if not w.path.endswith(("lora_kernel_a", "lora_kernel_b"))) - positions
    forward = 2 * parameters + 4 * len(blocks) * context * width
    return 3 * forward if training else forward


@keras.saving.register_keras_serializable(package="workbench")
class FullPaddingMask(layers.Layer):
    """The padding mask of windows without padding: ones shaped like the token ids. A KerasHub
    `CausalLM` wrapped as a language model (workbench.hub.model.wrap_causal_lm) reads windows
    that hold no padding; it lives here, with the GPT's layers, so `import workbench` registers it
    without importing the families."""

    def call(self, token_ids):
        return ops.ones_like(token_ids, dtype="int32")

    def compute_output_shape(self, input_shape):
        return input_shape
