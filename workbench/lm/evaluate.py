"""Scoring a language model on a whole split.

The split is cut into windows of `context + 1` tokens every `context` tokens, so every token after
the first is predicted exactly once (non-overlapping targets), each from at most `context - 1`
tokens before it in its window. With `n` targets and natural-log likelihoods:

    loss        = -(1/n) sum_i log p(t_i | t_<i)        nats per token
    perplexity  = exp(loss)
    bits/byte   = loss * n / (ln 2 * bytes covered)     (= loss / ln 2 for byte tokens)
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from workbench.lm.corpus import window_starts, windows_dataset
from workbench.lm.model import flops_per_token


def compiled(function):
    """`function` compiled by the backend (XLA through `tf.function` or `jax.jit`)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function


def token_nll_sum(model):
    """`(x, y) -> sum of -log p(y | x)` over a batch, in float32."""

    def total(x, y):
        logits = keras.ops.cast(model(x, training=False), "float32")
        losses = keras.ops.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return keras.ops.sum(losses)

    return compiled(total)


def evaluate_split(model, tokens, context, batch_size=256, max_windows=None, token_bytes=None):
    """Loss, perplexity, bits per byte, tokens/s and achieved FLOP/s over `tokens`.
    `token_bytes[id]` is the number of bytes token `id` stands for (1 for every byte token)."""
    starts = window_starts(len(tokens), context)
    if max_windows is not None and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(np.int64)]
    dataset = windows_dataset(tokens, context, starts).batch(batch_size).prefetch(2)
    if keras.backend.backend() != "tensorflow":  # jax.jit and torch take arrays, not tf tensors
        dataset = dataset.as_numpy_iterator()
    total_fn = token_nll_sum(model)
    total, count, covered, first_count = 0.0, 0, 0, None
    started = time.perf_counter()
    for x, y in dataset:
        total += float(total_fn(x, y))
        count += int(np.prod(y.shape))
        covered += int(token_bytes[np.asarray(y)].sum()) if token_bytes is not None else 0
        if first_count is None:  # compiling is not scoring: time from the second batch on
            started, first_count = time.perf_counter(), count
    seconds = time.perf_counter() - started
    loss = total / count
    timed = count - first_count
    bits_per_byte = total / math.log(2) / (covered if token_bytes is not None else count)
    speed = timed / seconds if timed and seconds > 0 else None
    forward = flops_per_token(model, training=False)
    return {"val_loss": loss, "perplexity": math.exp(loss), "bits_per_byte": bits_per_byte,
            "tokens": count, "windows": int(len(starts)),
            "tokens_per_second": speed, "flops_per_token": forward,
            "achieved_flops_per_second": forward * speed if speed else None}


def weighted_nll_sum(model):
    """`(x, y, w) -> sum of w * -log p(y | x)` over a batch, in float32."""

    def total(x, y, w):
        logits = keras.ops.cast(model(x, training=False), "float32")
        losses = keras.ops.sparse_categorical_crossentropy(y, logits, from_logits=True)
        return keras.ops.sum(losses * keras.ops.cast(w, "float32"))

    return compiled(total)


def evaluate_windows(model, windows, batch_size=256, max_windows=None, token_bytes=None):
    """`evaluate_split`'s measures over `PackedWindows` (workbench.lm.packing), each token weighed
    by its weight: the loss over the trained tokens only, `n` their total weight."""
    from workbench.lm.packing import evenly_spaced_rows, packed_windows_dataset

    rows = evenly_spaced_rows(len(windows), max_windows)
    dataset = packed_windows_dataset(windows, rows, batch_size).prefetch(2)
    if keras.backend.backend() != "tensorflow":
        dataset = dataset.as_numpy_iterator()
    total_fn = weighted_nll_sum(model)
    total, count, covered, positions, first = 0.0, 0.0, 0.0, 0, None
    started = time.perf_counter()
    for x, y, w in dataset:
        total += float(total_fn(x, y, w))
        weights = np.asarray(w, dtype=np.float64)
        count += float(weights.sum())
        if token_bytes is not None:
            covered += float((token_bytes[np.asarray(y)] * weights).sum())
        positions += int(np.prod(y.shape))
        if first is None:  # compiling is not scoring: time from the second batch on
            started, first = time.perf_counter(), positions
    seconds = time.perf_counter() - started
    loss = total / count if count else float("nan")
    timed = positions - first if first is not None else 0
    speed = timed / seconds if timed and seconds > 0 else None
    forward = flops_per_token(model, training=False)
    return {"val_loss": loss, "perplexity": math.exp(loss) if count else float("nan"),
            "bits_per_byte": total / math.log(2) / (covered if token_bytes is not None
                                                    else max(count, 1.0)),
            "tokens": int(round(count)), "positions": positions, "windows": int(len(rows)),
            "tokens_per_second": speed, "flops_per_token": forward,
            "achieved_flops_per_second": forward * speed if speed else None}
