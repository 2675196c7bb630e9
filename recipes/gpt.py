"""A GPT language model on Python source: nanoGPT's CPU "baby GPT", built from KerasHub pieces.

Data: the `stdlib` corpus (every `.py` file of the standard library, 12.1 MB on Python 3.11.7; the
first 90% trains, the last 10% validates) as bytes, or any text file, folder or `module:function`
with `--set data=...`. Model: 4 layers, 4 heads, width 128, context 64, no biases, tied
embeddings (workbench.lm.model).

Training, chosen by measured time to nanoGPT's final validation loss (README, "GPT speedrun"):
300 steps of 48 random windows with Keras' Muon (rate 0.012 on the matrices, its AdamW path with
beta_2 0.99 on embeddings and norms; weight decay 0.1 on matrices), 20 warm-up steps then cosine
to 1e-4, clipping at 1.0, XLA. `--set optimizer=adamw` brings nanoGPT's own settings back: 2000
steps of 12 windows, AdamW at 1e-3 (beta_2 0.99, weight decay 0.1), 100 warm-up steps.
"""

from workbench.lm.model import build_gpt
from workbench.settings.lm import LanguageModelSettings
from workbench.recipe import Recipe
from workbench.settings import ExportSettings


def build_model(hp, data_info):
    """The GPT for `data_info`'s vocabulary and context; sizes are `hp` choices for search."""
    width = hp.Choice("width", [64, 128, 192, 256], default=128)
    return build_gpt(vocabulary_size=data_info.vocabulary_size,
                     context=data_info.input_shape[0],
                     layers=hp.Int("layers", 2, 8, default=4),
                     heads=hp.Choice("heads", [2, 4, 8], default=4),
                     width=width,
                     dropout=hp.Float("dropout", 0.0, 0.2, step=0.1, default=0.0))


# nanoGPT's `train.py` settings for its CPU baby GPT.
NANOGPT_ADAMW = {"optimizer_config": {"beta_1": 0.9, "beta_2": 0.99, "weight_decay": 0.1,
                                      "global_clipnorm": 1.0},
                 "learning_rate": 1e-3, "batch_size": 12, "lm.steps": 2000,
                 "lm.warmup_steps": 100, "lm.eval_interval": 250}

RECIPE = Recipe(
    name="gpt",
    description="GPT language model (nanoGPT's CPU config, KerasHub pieces) on the standard "
                "library's Python source, byte tokens.",
    model=build_model,
    data="stdlib",
    task="language_model",
    optimizer="muon",
    optimizer_config={"adam_beta_2": 0.99, "weight_decay": 0.1, "adam_weight_decay": 0.1,
                      "global_clipnorm": 1.0},
    learning_rate=0.012,
    batch_size=48,
    lm=LanguageModelSettings(steps=300, warmup_steps=20, eval_interval=50),
    optimizer_presets={"adamw": NANOGPT_ADAMW},
    jit_compile=True,
    # GPTQ / AWQ calibrate on 128 training windows (the supervised default is 256 examples).
    export=ExportSettings(representative_examples=128),
    stages=("train", "evaluate", "generate", "export", "verify"),
    fast={"batch_size": 12, "lm.steps": 60, "lm.warmup_steps": 10, "lm.eval_interval": 30,
          "lm.eval_windows": 48, "lm.max_eval_windows": 512, "generate.max_tokens": 48,
          "generate.prompts": (), "verify.max_examples": 128},
)
