"""Settings of fine-tuning a pretrained causal LM (`--set finetune.KEY=...`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# How much of the pretrained model trains (workbench.hub.finetune).
FINETUNE_MODES = ("lora", "qlora", "full", "frozen_embeddings")
# Keras `quantize` modes a QLoRA base can take (LoRA is not supported on GPTQ/AWQ layers).
QLORA_BASES = ("int8", "int4")


@dataclass
class FinetuneSettings:
    """How a pretrained causal LM is fine-tuned.

    Args:
        mode: `lora` (low-rank adapters on the target layers, everything else frozen; Hu et al.
            2021, "LoRA: Low-Rank Adaptation of Large Language Models"), `qlora` (the same on a
            base whose weights Keras has quantized to `base_quantization`; Dettmers et al. 2023),
            `full` (every weight trains) or `frozen_embeddings` (all but the token and position
            embeddings train).
        rank: the adapters' rank r (each target kernel W gains W + (alpha / r) A B).
        alpha: the adapters' scale numerator (`None`: the rank, a scale of 1, KerasHub's default).
        target_layers: names of the layers that get adapters (`None`: the backbone's own
            `default_lora_layer_names()`, the attention query and value projections).
        base_quantization: the QLoRA base's Keras quantization mode, `int8` or `int4`.
    """

    mode: str = "lora"
    rank: int = 8
    alpha: Optional[float] = None
    target_layers: Optional[tuple[str, ...]] = None
    base_quantization: str = "int8"

    def problems(self):
        checks = [
            (self.rank >= 1, f"finetune.rank must be at least 1, got {self.rank}"),
            (self.alpha is None or self.alpha > 0,
             f"finetune.alpha must be positive, got {self.alpha}"),
            (self.target_layers is None or len(self.target_layers) > 0,
             "finetune.target_layers is empty; name at least one layer (or leave it unset for "
             "the backbone's defaults)"),
        ]
        return [message for ok, message in checks if not ok]


# Chat templates by name (workbench.hub.chat_template); `auto` is the checkpoint's own, else
# `plain`.
SFT_TEMPLATES = ("auto", "chatml", "llama3", "gemma", "plain")
SFT_TRAIN_ON = ("assistant", "all")
SFT_OVERLONG = ("truncate", "drop")
# What `data_options.format` can force for the causal-LM family's data (workbench.hub.chats).
CHAT_FORMATS = ("auto", "text", "messages", "prompt_completion", "alpaca", "csv")


@dataclass
class SftSettings:
    """How a causal LM is instruction-tuned on conversations (supervised fine-tuning, as Hugging
    Face TRL's `SFTTrainer` names it). Read when the data is conversations: JSONL of `messages`,
    `prompt`/`completion`, `prompt`/`response` or Alpaca records, a two-column CSV
    (`data_options.format` forces one; `text` reads the file as plain text).

    Args:
        template: the chat template that renders each conversation: `auto` (the checkpoint's
            own `chat_template`, from `chat_template.jinja` or `tokenizer_config.json`, else
            `plain`), or a named one, `chatml`, `llama3`, `gemma`, `plain`. It also wraps
            `generate.prompt` as a user turn, and generation stops at its end-of-turn token.
        train_on: `assistant` (the loss is over the assistant's tokens only, every other token
            weighs 0) or `all` (every token of the conversation).
        packing: pack conversations into windows of `lm.context` tokens (best-fit decreasing,
            separated by the end-of-sequence token) rather than one conversation per window.
        overlong: a conversation longer than `lm.context` is cut to fit (`truncate`: its
            response kept where it fits) or left out (`drop`).
    """

    template: str = "auto"
    train_on: str = "assistant"
    packing: bool = True
    overlong: str = "truncate"

    def names(self):
        return [("sft.template", self.template, SFT_TEMPLATES),
                ("sft.train_on", self.train_on, SFT_TRAIN_ON),
                ("sft.overlong", self.overlong, SFT_OVERLONG)]
