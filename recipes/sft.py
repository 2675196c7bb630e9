"""Instruction-tune a pretrained KerasHub causal LM on conversations (supervised fine-tuning, as
TRL's `SFTTrainer` does it): LoRA, the chat template, the loss on the assistant's tokens only,
packed windows; then evaluate, answer prompts through the template, export to LiteRT and verify.

Model: the preset directory of `--set model_options.preset=DIR` (a KerasHub preset or a Hugging
Face checkpoint directory; nothing is downloaded), or, when unset, the workbench's own GPT-2
preset, pretrained once on the standard library's source (workbench.hub.pretrain). Data: any
conversation source (`--set data=FILE.jsonl|FILE.csv|DIR`; workbench.hub.chats), by default
questions about 1,236 standard-library functions, classes and methods answered by their
docstrings (workbench.hub.stdlib_chats), a tenth of them held out for validation. The template is
the checkpoint's own, else `plain` (`sft.template`). Training: 300 AdamW steps of 16 packed
windows of 256 tokens at 5e-3, LoRA rank 8 on the attention's query, key and value projections and
both feed-forward layers (what QLoRA's authors found to matter: adapters on every linear layer;
KerasHub's default is query and value only).
"""

from workbench.hub.model import build_preset_model
from workbench.recipe import Recipe
from workbench.settings import ExportSettings
from workbench.settings.hub import FinetuneSettings
from workbench.settings.lm import GenerateSettings, LanguageModelSettings

RECIPE = Recipe(
    name="sft",
    description="Instruction-tune a pretrained causal LM (LoRA) on conversations with its chat "
                "template: response-only loss, packing; then evaluate, generate, export, verify.",
    model=build_preset_model,
    data="workbench.hub.stdlib_chats:stdlib_conversations",
    data_options={"val_fraction": 0.1},
    task="causal_lm",
    optimizer="adamw",
    optimizer_config={"beta_1": 0.9, "beta_2": 0.99, "weight_decay": 0.0,
                      "global_clipnorm": 1.0},
    learning_rate=5e-3,
    batch_size=16,
    jit_compile=True,
    finetune=FinetuneSettings(mode="lora", rank=8, target_layers=(
        "query", "key", "value", "feedforward_intermediate_dense", "feedforward_output_dense")),
    lm=LanguageModelSettings(context=256, steps=300, warmup_steps=30, eval_interval=100,
                             eval_windows=64, min_learning_rate=1e-4, max_eval_windows=256),
    generate=GenerateSettings(prompt="What does `textwrap.dedent` do?",
                              prompts=("What is `heapq.heappush` for?",), max_tokens=80,
                              sampler="greedy"),
    export=ExportSettings(formats=("float32",), representative_examples=16),
    stages=("train", "evaluate", "generate", "export", "verify"),
    fast={"lm.steps": 12, "lm.warmup_steps": 2, "lm.eval_interval": 6, "lm.eval_windows": 8,
          "lm.max_eval_windows": 16, "lm.eval_batch_size": 16, "generate.max_tokens": 12,
          "generate.prompts": (), "verify.max_examples": 8, "verify.generate_tokens": 4},
)
