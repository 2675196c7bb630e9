"""The recipe of the workbench's own pretrained preset (`gpt2_stdlib`), read by
workbench.hub.pretrain: a KerasHub GPT-2 (4 layers, 4 heads, width 128, 512 positions) with a
512-token byte-level BPE vocabulary learned on the standard library's source, trained by the
language-model family's step-based loop with AdamW and nanoGPT's warm-up + cosine.

The architecture and vocabulary are `model_options`; the training is the usual recipe settings, so
`--set`-style overrides (`apply_overrides(RECIPE, ["lm.steps=150"])`) change it the same way.
"""

from workbench.recipe import Recipe
from workbench.settings.lm import LanguageModelSettings

STEPS = 600

RECIPE = Recipe(
    name="gpt2_stdlib",
    description="the workbench's own GPT-2 preset, pretrained on the standard library's source",
    model=None,  # built by workbench.hub.pretrain from model_options
    task="causal_lm",
    data="workbench.hub.corpora:stdlib_code",
    data_options={"val_fraction": 0.02},
    model_options={"vocabulary_size": 512, "layers": 4, "heads": 4, "width": 128,
                   "max_sequence_length": 512},
    optimizer="adamw",
    optimizer_config={"beta_2": 0.99, "weight_decay": 0.1, "global_clipnorm": 1.0},
    learning_rate=2e-3,
    batch_size=16,
    seed=0,
    jit_compile=True,
    lm=LanguageModelSettings(context=128, steps=STEPS, warmup_steps=100,
                             eval_interval=STEPS // 4, eval_windows=64, checkpoint_seconds=0),
)
