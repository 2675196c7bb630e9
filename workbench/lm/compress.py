"""Quantization of a language model with Keras' own `model.quantize`, and the measurements that
compare the results: weight bytes, validation loss and perplexity on fixed windows, greedy
generation tokens/s.

Modes (`QUANTIZE_MODES`):
- `int8`: per-channel int8 weights of every Dense, EinsumDense and Embedding layer (the tied token
  embedding included), float activations quantized on the fly;
- `int4`: int4 weights in groups of `group_size` input channels, same layers;
- `gptq`: GPTQ (Frantar et al. 2022) 4-bit weights of the Transformer blocks' Dense/EinsumDense
  layers, block after block on calibration windows from the training split; the token embedding
  (which GPTQ does not handle) is then quantized to int8;
- `awq`: AWQ (Lin et al. 2023) 4-bit weights with activation-aware scales, same layers and
  embedding treatment as `gptq`.

The model is never changed: each mode quantizes a copy. GPTQ and AWQ need the model's Transformer
blocks in call order and their input; both are found generically (the blocks by class, their
input by running the model up to the first block), so any KerasHub-built decoder works.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

from workbench.errors import WorkbenchError
from workbench.settings.lm import LM_QUANTIZE_MODES

QUANTIZE_MODES = LM_QUANTIZE_MODES
DEFAULT_PROMPTS = ("def main(", "import os\n", "class Base:\n    def __init__(self")


@contextlib.contextmanager
def _quiet_quantize():
    # Keras warns once per layer without weights to quantize (norms, dropout): noise, not news.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method.*")
        warnings.filterwarnings("ignore", message=".*Invalid quantization mode.*")
        yield


def copy_model(model):
    """A new model with the same architecture and weights (quantization works in place)."""
    from workbench.components import OPTIMIZERS

    OPTIMIZERS.table  # registers the workbench's classes a config may name
    # from_config keeps shared layers shared (clone_model would untie tied embeddings).
    with warnings.catch_warnings():
        # A KerasHub task model inside compiles itself; the copy is never trained.
        warnings.filterwarnings("ignore", message=".*`compile\(\)` was not called.*")
        clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def context_length(model, context=None):
    """The fixed number of tokens the model reads, from its input shape (or `context`)."""
    length = context or (model.inputs[0].shape[1] if getattr(model, "inputs", None) else None)
    if not length:
        raise WorkbenchError(
            f"model '{model.name}' has no fixed context length (input shape "
            f"{getattr(model, 'input_shape', None)}); build it with a fixed context or pass one")
    return int(length)


def _decoder_blocks(model):
    import keras_hub

    for layer in model._flatten_layers():
        blocks = getattr(layer, "transformer_layers", None)
        if blocks:
            return list(blocks)
    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras_hub.layers.TransformerDecoder)]


class _StopForward(Exception):
    pass


@contextlib.contextmanager
def _wrapped_call(layer, wrapper):
    """Temporarily route `layer.call` through `wrapper(original, *args, **kwargs)`."""
    original = layer.call
    layer.call = lambda *args, **kwargs: wrapper(original, *args, **kwargs)
    try:
        yield
    finally:
        del layer.__dict__["call"]


def transformer_blocks(model, context=None):
    """The model's Transformer blocks in the order a forward pass calls them."""
    blocks = _decoder_blocks(model)
    if not blocks:
        raise WorkbenchError(
            f"model '{model.name}' has no Transformer decoder blocks (a KerasHub backbone's "
            "`transformer_layers` or `keras_hub.layers.TransformerDecoder`); GPTQ and AWQ "
            "quantize block by block, so use the int8 or int4 mode for this model")
    order = []

    def record(block):
        def wrapper(original, *args, **kwargs):
            if block not in order:
                order.append(block)
            return original(*args, **kwargs)
        return wrapper

    with contextlib.ExitStack() as stack:
        for block in blocks:
            stack.enter_context(_wrapped_call(block, record(block)))
        model(np.zeros((1, context_length(model, context)), dtype="int32"))
    return order


class InputsOfBlock:
    """`token ids -> what the model feeds `block``: runs the model until the block is called.
    Serves as GPTQ/AWQ's `pre_block_layers` whatever the layers before the first block are."""

    def __init__(self, model, block):
        self.model, self.block = model, block

    def __call__(self, token_ids):
        captured = {}

        def capture(original, inputs, *args, **kwargs):
            captured["inputs"] = inputs
            raise _StopForward()

        with _wrapped_call(self.block, capture):
            try:
                self.model(token_ids)
            except _StopForward:
                pass
        return captured["inputs"]


def quantization_structure(model, context=None):
    """The `quantization_layer_structure` GPTQ and AWQ take: blocks and how to reach the first."""
    blocks = transformer_blocks(model, context)
    return {"pre_block_layers": [InputsOfBlock(model, blocks[0])], "sequential_blocks": blocks}


@contextlib.contextmanager
def _calibration_reaches_hooks(model):
    """Keras 3.15 runs a quantized layer through `quantized_call`, but GPTQ's and AWQ's statistics
    hooks patch `call`: without this, calibration inputs never reach them, the statistics stay
    zero and both modes reduce to plain rounding whatever the calibration data. Until a layer is
    calibrated, its `quantized_call` goes through `call` (the float forward, which is also what
    an uncalibrated layer's quantized call computes)."""
    import keras

    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))]

    def routed(layer):
        quantized_call = type(layer).quantized_call

        def call(*args, **kwargs):
            calibrated = (getattr(layer, "is_gptq_calibrated", False)
                          or getattr(layer, "is_awq_calibrated", False))
            if layer.quantization_mode in ("gptq", "awq") and not calibrated:
                return layer.call(*args, **kwargs)
            return quantized_call(layer, *args, **kwargs)

        return call

    for layer in layers:
        layer.quantized_call = routed(layer)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("quantized_call", None)


class _TokenIds:
    """GPTQ/AWQ want a tokenizer for text calibration data; ours is already token ids."""

    def tokenize(self, text):
        raise WorkbenchError("calibration data must be token ids, not text")


def quantize_model(model, mode, calibration=None, *, group_size=128, num_samples=128,
                   context=None):
    """A copy of `model` quantized with `mode` (see the module docstring).

    Args:
        calibration: int token windows `(n, >= context)` from the training split (GPTQ, AWQ).
        group_size: input channels sharing one scale (int4, GPTQ, AWQ); -1 for per channel.
        num_samples: calibration windows GPTQ and AWQ use.
    """
    import keras

    if mode not in QUANTIZE_MODES:
        from workbench.errors import suggest

        raise WorkbenchError(f"unknown language-model quantize mode '{mode}': "
                             f"{suggest(mode, QUANTIZE_MODES)}")
    context = context_length(model, context)
    quantized = copy_model(model)
    with _quiet_quantize():
        if mode == "int8":
            quantized.quantize("int8")
        elif mode == "int4":
            quantized.quantize(config=keras.quantizers.Int4QuantizationConfig(
                block_size=group_size))
        else:
            if calibration is None or len(calibration) == 0:
                raise WorkbenchError(f"quantize mode '{mode}' needs calibration windows from "
                                     "the training split")
            windows = np.asarray(calibration, dtype="int32")[:, :context]
            config_class = (keras.quantizers.GPTQConfig if mode == "gptq"
                            else keras.quantizers.AWQConfig)
            options = {"activation_order": True} if mode == "gptq" else {}
            config = config_class(
                dataset=windows, tokenizer=_TokenIds(), weight_bits=4,
                num_samples=min(num_samples, len(windows)), sequence_length=context,
                group_size=group_size,
                quantization_layer_structure=quantization_structure(quantized, context),
                **options)
            with _calibration_reaches_hooks(quantized):
                quantized.quantize(mode, config=config)
            embeddings = [layer.path for layer in quantized._flatten_layers()
                          if isinstance(layer, keras.layers.Embedding)
                          and getattr(layer, "quantization_mode", None) is None]
            if embeddings:
                quantized.quantize("int8", filters=lambda layer: layer.path in embeddings)
    return quantized


def weight_bytes(model):
    """Bytes of the model's variables as stored (int4 packs two values per byte)."""
    seen, total = set(), 0
    for variable in model.weights:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        total += int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
    return total


def _log_softmax(logits):
    logits = logits.astype("float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_losses(logits_fn, windows, batch_size=64):
    """Sum of next-token negative log-likelihoods (nats) and token count over `windows` (n,
    context + 1), with `logits_fn(ids (b, context)) -> logits (b, context, vocabulary)`."""
    windows = np.asarray(windows, dtype="int32")
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        log_probs = _log_softmax(np.asarray(logits_fn(chunk[:, :-1])))
        targets = chunk[:, 1:]
        total -= float(np.take_along_axis(log_probs, targets[..., None], axis=-1).sum())
        count += targets.size
    return total, count


def keras_logits(model):
    """`ids -> logits` with the model's compiled predict function (float32 out)."""
    return lambda ids: np.asarray(model.predict_on_batch(ids), dtype="float32")


def mean_token_loss(model, windows, batch_size=64):
    total, count = token_losses(keras_logits(model), windows, batch_size)
    return total / count


def encode_prompt(prompt):
    """A prompt's token ids: a string as bytes (token id = byte value), ids as they are."""
    if isinstance(prompt, str):
        return list(prompt.encode("utf-8"))
    return [int(i) for i in prompt]


def greedy_generate(logits_fn, prompts, steps, context):
    """Continue each prompt (a list of token ids) by `steps` greedy tokens.

    The model reads a fixed context: the last `context` tokens, left-aligned and padded at the
    end while shorter (causal attention keeps the padding from reaching the position read).
    All prompts advance together, one batched forward pass per step.
    """
    sequences = [list(p) for p in prompts]
    for _ in range(steps):
        batch = np.zeros((len(sequences), context), dtype="int32")
        positions = []
        for row, tokens in enumerate(sequences):
            window = tokens[-context:]
            batch[row, :len(window)] = window
            positions.append(len(window) - 1)
        logits = np.asarray(logits_fn(batch))
        for row, position in enumerate(positions):
            sequences[row].append(int(np.argmax(logits[row, position])))
    return [s[len(p):] for s, p in zip(sequences, prompts)]


def generation_speed(logits_fn, prompts, steps, context):
    """Generated tokens per second, greedy, all prompts batched; returns (tokens/s, tokens)."""
    greedy_generate(logits_fn, prompts, 1, context)  # build / warm up the forward pass
    start = time.perf_counter()
    tokens = greedy_generate(logits_fn, prompts, steps, context)
    seconds = time.perf_counter() - start
    return len(prompts) * steps / seconds, tokens


def evaluate_language_model(model, windows, prompts=DEFAULT_PROMPTS, generate_steps=32,
                            context=None):
    """Weight bytes, validation loss and perplexity on `windows`, generation tokens/s."""
    context = context_length(model, context)
    logits_fn = keras_logits(model)
    total, count = token_losses(logits_fn, windows)
    loss = total / count
    speed, tokens = generation_speed(logits_fn, [encode_prompt(p) for p in prompts],
                                     generate_steps, context)
    return {"weight_bytes": weight_bytes(model), "val_loss": loss,
            "perplexity": float(np.exp(loss)), "val_tokens": count,
            "generation_tokens_per_second": speed, "greedy_tokens": tokens}


def compare_quantization_modes(model, windows, calibration, modes=QUANTIZE_MODES, *,
                               group_size=128, num_samples=128, prompts=DEFAULT_PROMPTS,
                               generate_steps=32, on_model=None, log=print):
    """Float32 and every quantize mode on the same windows: one row per model. `on_model(mode,
    model)` sees each quantized model (to save or export it) before the next is made."""
    rows = []
    float_row = None
    for mode in ("float32", *modes):
        start = time.perf_counter()
        variant = model if mode == "float32" else quantize_model(
            model, mode, calibration, group_size=group_size, num_samples=num_samples)
        quantize_seconds = time.perf_counter() - start
        row = {"mode": mode, **evaluate_language_model(variant, windows, prompts,
                                                       generate_steps),
               "quantize_seconds": quantize_seconds}
        if on_model is not None and mode != "float32":
            row.update(on_model(mode, variant) or {})
        if float_row is None:
            float_row = row
        row["perplexity_change"] = row["perplexity"] / float_row["perplexity"] - 1
        row["compression"] = float_row["weight_bytes"] / row["weight_bytes"]
        row["same_greedy_tokens"] = row["greedy_tokens"] == float_row["greedy_tokens"]
        rows.append(row)
        if log:
            log(f"  {mode:8s} weights {row['weight_bytes'] / 1024:8.1f} KiB "
                f"({row['compression']:.2f}x)  val loss {row['val_loss']:.4f}  "
                f"perplexity {row['perplexity']:.4f} ({row['perplexity_change']:+.2%})  "
                f"{row['generation_tokens_per_second']:.0f} tokens/s")
    return rows


def format_quantization_table(rows):
    lines = ["| mode | weight bytes | vs float32 | val loss | perplexity | change | "
             "generation tokens/s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['mode']} | {row['weight_bytes']:,} | {row['compression']:.2f}x | "
                     f"{row['val_loss']:.4f} | {row['perplexity']:.4f} | "
                     f"{row['perplexity_change']:+.2%} | "
                     f"{row['generation_tokens_per_second']:.0f} |")
    return "\n".join(lines)
