"""A tiny GPT recipe and corpus for the language-model tests: 2 layers, width 32, context 16,
a few steps on a generated, repetitive Python-like text (so losses fall fast)."""

import dataclasses
import random

from workbench.lm.model import build_gpt
from workbench.recipe import Recipe

CONTEXT = 16


def tiny_text(lines=400, seed=0):
    rng = random.Random(seed)
    names = ["alpha", "beta", "gamma", "delta", "value", "item", "total"]
    out = []
    for _ in range(lines):
        a, b = rng.choice(names), rng.choice(names)
        out.append(rng.choice([f"def {a}({b}):\n    return {b} + 1\n",
                               f"{a} = {b} * 2\n", f"for {a} in {b}:\n    print({a})\n",
                               f"class {a.title()}:\n    pass\n"]))
    return "".join(out)


def write_corpus(folder, lines=400):
    path = folder / "corpus.txt"
    path.write_text(tiny_text(lines))
    return path


def build_tiny(hp, data_info):
    return build_gpt(vocabulary_size=data_info.vocabulary_size, context=data_info.input_shape[0],
                     layers=2, heads=2, width=hp.Choice("width", [16, 32], default=32))


def tiny_recipe(data, **changes):
    recipe = Recipe(
        name="tiny_gpt", model=build_tiny, data=str(data), task="language_model",
        optimizer="adamw", optimizer_config={"beta_2": 0.99, "weight_decay": 0.1,
                                             "global_clipnorm": 1.0},
        learning_rate=3e-3, batch_size=8, jit_compile=False,
        stages=("train", "evaluate", "generate"))
    recipe.lm = dataclasses.replace(recipe.lm, context=CONTEXT, steps=40, warmup_steps=4,
                                    eval_interval=20, eval_windows=16, eval_batch_size=64,
                                    steps_per_execution=5, checkpoint_seconds=0.0)
    recipe.generate = dataclasses.replace(recipe.generate, max_tokens=12, prompts=())
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            setattr(recipe, section, dataclasses.replace(getattr(recipe, section), **{name: value}))
        else:
            setattr(recipe, key, value)
    return recipe
