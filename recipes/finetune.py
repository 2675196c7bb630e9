"""Fine-tune a pretrained KerasHub causal LM on your text: LoRA by default, then quantize, export
to LiteRT and verify.

Model: the KerasHub preset directory of `--set model_options.preset=DIR` (any `CausalLM`: GPT-2,
Llama, Gemma, Mistral, Qwen, ...; nothing is downloaded), or, when unset, the workbench's own
GPT-2 preset, pretrained once on the standard library's source (workbench.hub.pretrain). Data:
any language-model source (`--set data=FILE|DIR|module:function|stdlib`), by default the Python
reference manual's prose (`pydoc_data.topics`), which the own preset never saw; it is tokenized
with the preset's tokenizer into windows of `lm.context` tokens. Training: 200 AdamW steps of 16
windows, LoRA rank 8 on the attention query and value projections (`finetune.mode=lora|qlora|
full|frozen_embeddings`).
"""

from workbench.hub.model import build_preset_model
from workbench.recipe import Recipe
from workbench.settings.lm import GenerateSettings, LanguageModelSettings
from workbench.settings import ExportSettings

RECIPE = Recipe(
    name="finetune",
    description="Fine-tune a pretrained KerasHub causal LM (a preset directory; LoRA/QLoRA/full) "
                "on your text, then quantize, export to LiteRT and verify.",
    model=build_preset_model,
    data="workbench.hub.corpora:python_docs",
    task="causal_lm",
    optimizer="adamw",
    optimizer_config={"beta_1": 0.9, "beta_2": 0.99, "weight_decay": 0.0,
                      "global_clipnorm": 1.0},
    learning_rate=2e-3,
    batch_size=16,
    jit_compile=True,
    lm=LanguageModelSettings(context=128, steps=200, warmup_steps=20, eval_interval=50,
                             eval_windows=64, min_learning_rate=1e-4, max_eval_windows=256),
    generate=GenerateSettings(prompt="The with statement", prompts=("A class definition",),
                              max_tokens=80),
    export=ExportSettings(representative_examples=32),
    stages=("train", "evaluate", "generate", "quantize", "export", "verify"),
    fast={"lm.steps": 20, "lm.warmup_steps": 4, "lm.eval_interval": 10, "lm.eval_windows": 16,
          "lm.max_eval_windows": 32, "generate.max_tokens": 16, "generate.prompts": (),
          "verify.max_examples": 32, "verify.generate_tokens": 8,
          "quantize.keras_modes": ("int8", "int4"), "export.representative_examples": 16},
)
