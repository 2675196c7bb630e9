"""Continuing prompts with a language model and one of KerasHub's samplers.

The model reads a fixed context of `T` tokens and has no key/value cache, so each new token costs
one forward pass over the last `T` tokens (a sliding window once the text is longer than `T`):
for position `i` the window is `tokens[max(0, i - T) : max(0, i - T) + T]` and the next token is
drawn from the logits at `i - 1`. Later positions in the window do not matter (the model is
causal), so the buffer may hold padding there. The sampler (`keras_hub.samplers`: greedy, top-k
(Fan et al. 2018), top-p/nucleus (Holtzman et al. 2020), plain random) turns logits / temperature
into the next token.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from workbench.errors import WorkbenchError, suggest
from workbench.lm.model import model_context
from workbench.settings.lm import SAMPLERS


def generate_prompts(settings):
    """`generate.prompt` and `generate.prompts`, the empty ones left out; none is bad input."""
    prompts = [p for p in (settings.prompt, *settings.prompts) if p]
    if not prompts:
        raise WorkbenchError("generate: no prompt; set --set generate.prompt=TEXT")
    return prompts


def make_sampler(name="greedy", k=10, p=0.9, temperature=1.0, seed=0):
    import keras_hub

    samplers = keras_hub.samplers
    if name == "greedy":
        return samplers.GreedySampler()
    if name == "top_k":
        return samplers.TopKSampler(k=k, seed=seed, temperature=temperature)
    if name == "top_p":
        return samplers.TopPSampler(p=p, seed=seed, temperature=temperature)
    if name == "random":
        return samplers.RandomSampler(seed=seed, temperature=temperature)
    raise WorkbenchError(f"unknown sampler '{name}': {suggest(name, SAMPLERS)}")


def check_language_model(model, stage="generate"):
    """A model that does not map token ids to per-position logits cannot continue text."""
    shape = getattr(model, "output_shape", None)
    inputs = getattr(model, "inputs", None) or []
    dtype = str(inputs[0].dtype) if inputs else ""
    if not (isinstance(shape, tuple) and len(shape) == 3 and "int" in dtype
            and model_context(model)):
        raise WorkbenchError(
            f"stage '{stage}' needs a language model (token ids (batch, context) -> logits "
            f"(batch, context, vocabulary)), but model '{model.name}' takes "
            f"{getattr(model, 'input_shape', '?')} {dtype or ''} and gives {shape}; train one "
            "with a language_model recipe such as 'gpt'")


def continue_ids(model, prompts_ids, max_tokens, sampler, stop_token_ids=None):
    """Each prompt (a list of ints) followed by `max_tokens` sampled ids, all prompts in one
    batch: sampling starts after the shortest prompt, and the sampler's mask keeps every longer
    prompt's own tokens where they are. With `stop_token_ids`, sampling ends early once every
    prompt has produced one of them (what follows it is not generated text)."""
    context = model_context(model)
    lengths = [len(ids) for ids in prompts_ids]
    if not all(lengths):
        raise WorkbenchError("generate: a prompt is empty; give at least one character")
    size = max(max(lengths) + max_tokens, context)
    buffer = np.zeros((len(prompts_ids), size), dtype="int32")
    mask = np.zeros((len(prompts_ids), size), dtype=bool)
    for row, ids in enumerate(prompts_ids):
        buffer[row, :len(ids)] = ids
        mask[row, :len(ids)] = True

    def next_logits(tokens, cache, index):
        start = ops.maximum(index - context, 0)
        window = ops.slice(tokens, ops.stack([0, start]), (len(prompts_ids), context))
        logits = model(window, training=False)
        logits = ops.take(logits, index - 1 - start, axis=1)
        return ops.cast(logits, "float32"), None, cache

    # The sampler looks for stop ids in the whole unfilled buffer, which holds zeros.
    stops = tuple(stop_token_ids or ()) if 0 not in (stop_token_ids or ()) else None

    def run(tokens, mask):
        return sampler(next_logits, tokens, index=min(lengths), mask=mask,
                       stop_token_ids=stops or None)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        run = tf.function(run)
    out = ops.convert_to_numpy(run(ops.convert_to_tensor(buffer), ops.convert_to_tensor(mask)))
    return [[int(i) for i in out[row, :length + max_tokens]]
            for row, length in enumerate(lengths)]


def generate_text(model, tokenizer, prompts, max_tokens=200, sampler="greedy", k=10, p=0.9,
                  temperature=1.0, seed=0):
    """Each prompt continued by `max_tokens` tokens: a list of `{prompt, continuation}`."""
    check_language_model(model)
    sampler_object = make_sampler(sampler, k=k, p=p, temperature=temperature, seed=seed)
    encoded = [[int(i) for i in tokenizer.encode(prompt)] for prompt in prompts]
    vocabulary = model.output_shape[-1]
    for prompt, ids in zip(prompts, encoded):
        if ids and max(ids) >= vocabulary:
            raise WorkbenchError(f"generate: the prompt {prompt!r} has token ids up to "
                                 f"{max(ids)}, beyond the model's vocabulary of {vocabulary}")
    outputs = continue_ids(model, encoded, max_tokens, sampler_object)
    return [{"prompt": prompt, "continuation": tokenizer.decode(out[len(ids):])}
            for prompt, ids, out in zip(prompts, encoded, outputs)]
