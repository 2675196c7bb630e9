"""Measuring training throughput: the train stage against a plain `model.fit` of the same model on
the same batches, an equivalent PyTorch nanoGPT step when PyTorch is installed, and the machine's
peak matmul FLOP/s (benchmarks/lm.py parts a and d).

Tokens/s counts training tokens (`batch x context` per micro-step) over steady-state time: the
first call into the compiled function (tracing and XLA compilation) is left out everywhere.
Measurements are interleaved in rounds (plain, stage, reference, plain, ...) and the median of
rounds is reported, so a machine shared with other work slows every contender alike.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time

import keras
import numpy as np

from workbench.lm.corpus import random_batches
from workbench.lm.model import build_gpt, flops_per_token


def _compiled_gpt(recipe, settings, seed=0):
    from workbench.lm.training import compile_language_model, effective_steps_per_execution

    keras.utils.set_random_seed(seed)
    model = build_gpt(context=settings.context)
    return compile_language_model(model, recipe, settings,
                                  steps_per_execution=effective_steps_per_execution(settings))


class _Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.first_end = None
        self.last_end = None
        self.steps = 0
        self.first_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.first_end is None:
            self.first_end, self.first_steps = now, batch + 1
        self.last_end, self.steps = now, batch + 1


def plain_fit_round(model, tokens, recipe, settings, steps, first_step):
    """Tokens/s of `model.fit` over `steps` random batches (after its first execution)."""
    clock = _Clock()
    batches = random_batches(tokens, settings.context, recipe.batch_size, recipe.seed, first_step)
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[clock])
    counted = clock.steps - clock.first_steps
    return counted * recipe.batch_size * settings.context / (clock.last_end - clock.first_end)


def stage_round(model, train_tokens, val_tokens, recipe, settings, steps):
    """Tokens/s of the train stage's loop (validation and checkpoints on, as configured)."""
    from workbench.context import RunDir
    from workbench.lm.training import train_language_model

    run_settings = dataclasses.replace(settings, steps=steps,
                                       eval_interval=min(settings.eval_interval, steps))
    with tempfile.TemporaryDirectory() as folder:
        state, _ = train_language_model(model, train_tokens, val_tokens, recipe, run_settings,
                                        run_dir=RunDir(folder), say=lambda *a: None)
    return state.measured_tokens / state.measured_seconds


def torch_reference_round(steps, batch=12, context=64, layers=4, heads=4, width=128,
                          vocabulary=256, state=None):
    """nanoGPT's `model.py` GPT (bias=False, tied embeddings, `scaled_dot_product_attention`) and
    its `train.py` step (AdamW betas (0.9, 0.99), weight decay 0.1 on rank >= 2, clipping at 1.0),
    in PyTorch on the CPU; `None` without PyTorch. `state` keeps the model between rounds."""
    try:
        import torch
    except ImportError:
        return None
    if state is None or "model" not in state:
        state = state if state is not None else {}
        state.update(_torch_gpt(torch, batch, context, layers, heads, width, vocabulary))
    model, optimizer, data = state["model"], state["optimizer"], state["data"]

    def step():
        starts = torch.randint(len(data) - context - 1, (batch,))
        x = torch.stack([data[i:i + context] for i in starts])
        y = torch.stack([data[i + 1:i + 1 + context] for i in starts])
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * context / (time.perf_counter() - started)


def _torch_gpt(torch, batch, context, layers, heads, width, vocabulary):
    nn, functional = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(width, bias=False)
            self.c_attn = nn.Linear(width, 3 * width, bias=False)
            self.c_proj = nn.Linear(width, width, bias=False)
            self.ln_2 = nn.LayerNorm(width, bias=False)
            self.c_fc = nn.Linear(width, 4 * width, bias=False)
            self.mlp_proj = nn.Linear(4 * width, width, bias=False)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(width, dim=2)
            q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))
            y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
            return x + self.mlp_proj(functional.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocabulary, width)
            self.wpe = nn.Embedding(context, width)
            self.h = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(width, bias=False)
            self.lm_head = nn.Linear(width, vocabulary, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return functional.cross_entropy(logits.view(-1, vocabulary), targets.view(-1))

    torch.manual_seed(0)
    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99))
    data = torch.randint(0, vocabulary, (1_000_000,))
    return {"model": model, "optimizer": optimizer, "data": data}


def compare_training_throughput(recipe, settings, train_tokens, val_tokens, steps=200, rounds=3,
                                torch_reference=True, log=print):
    """Median tokens/s over `rounds` interleaved rounds: plain fit, the train stage, PyTorch."""
    plain_model = _compiled_gpt(recipe, settings)
    stage_model = _compiled_gpt(recipe, settings)
    plain_fit_round(plain_model, train_tokens, recipe, settings,
                    2 * settings.steps_per_execution, 0)  # compile before timing
    results = {"plain_fit": [], "train_stage": [], "pytorch_nanogpt": []}
    torch_state = {}
    for index in range(rounds):
        results["plain_fit"].append(plain_fit_round(
            plain_model, train_tokens, recipe, settings, steps, (index + 1) * steps))
        results["train_stage"].append(stage_round(
            stage_model, train_tokens, val_tokens, recipe, settings, steps))
        if torch_reference:
            speed = torch_reference_round(steps, batch=recipe.batch_size,
                                          context=settings.context, state=torch_state)
            if speed is not None:
                results["pytorch_nanogpt"].append(speed)
        log(f"  round {index + 1}: " + "  ".join(
            f"{name} {values[-1]:,.0f}" for name, values in results.items() if values))
    medians = {name: statistics.median(values) for name, values in results.items() if values}
    return {"rounds": results, "median_tokens_per_second": medians,
            "flops_per_token": flops_per_token(plain_model, training=True)}


def peak_matmul_flops(size=1024, seconds=3.0, dtype="float32"):
    """The machine's sustained matmul FLOP/s: a compiled `size x size` float32 matmul repeated
    for about `seconds` (2 size^3 FLOPs each)."""
    from workbench.lm.evaluate import compiled

    a = keras.random.normal((size, size), dtype=dtype, seed=1)
    b = keras.random.normal((size, size), dtype=dtype, seed=2)
    product = compiled(lambda x, y: keras.ops.sum(keras.ops.matmul(x, y)))
    float(product(a, b))
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        float(product(a, b))
        count += 1
    return 2 * size ** 3 * count / (time.perf_counter() - started)


def default_settings():
    """The `gpt` recipe's recipe and LM settings."""
    from workbench.recipe import load_recipe

    recipe = load_recipe("gpt")
    return recipe, recipe.lm


__all__ = ["compare_training_throughput", "peak_matmul_flops", "default_settings",
           "torch_reference_round", "np"]
