"""Settings of the language-model task (`--set lm.KEY=...`) and of the `generate` stage
(`--set generate.KEY=...`). How language models are exported, verified, quantized and distilled
lives in the generic sections (`export.*`, `verify.*`, `quantize.*`, `distill.*`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

TOKENIZERS = ("byte", "bpe")
SAMPLERS = ("greedy", "top_k", "top_p", "random")
# Keras `model.quantize` modes compared for language models (workbench.lm.compress).
LM_QUANTIZE_MODES = ("int8", "int4", "gptq", "awq")


@dataclass
class LanguageModelSettings:
    """How a language model's data is cut and how it trains (the model itself is the recipe's
    builder). Training counts optimizer steps, not epochs: nanoGPT's `get_batch` draws `batch_size`
    windows at random offsets of the training split for every micro-step.

    Args:
        tokenizer: `byte` (token id = byte value, vocabulary 256) or `bpe` (byte-level BPE learned
            on the training split; ids 0-255 stay the bytes, merges take the ids above).
        bpe_vocabulary_size: vocabulary of the `bpe` tokenizer (256 + merges).
        context: tokens the model reads; training windows hold `context + 1` tokens. (The last
            `data_options.val_fraction` of the corpus validates, 0.1 unless set.)
        steps: optimizer steps.
        warmup_steps: linear warm-up from 0 to the recipe's learning rate, then cosine decay to
            `min_learning_rate` at `steps` (nanoGPT's schedule).
        min_learning_rate: the cosine's floor.
        accumulation: micro-batches whose gradients are summed into one step.
        eval_interval: validation loss every this many steps, on `eval_windows` fixed windows.
        eval_windows: validation windows (evenly spaced over the validation split).
        eval_batch_size: windows per batch when evaluating.
        steps_per_execution: training steps run per call into the compiled function.
        checkpoint_steps, checkpoint_seconds: save the training state (Keras' BackupAndRestore)
            every `checkpoint_steps` steps, or, with that 0, at the first epoch end after
            `checkpoint_seconds` (both 0: no backups); `--resume` continues from it.
        max_eval_windows: cap on the evaluate stage's windows (`None`: the whole validation split).
    """

    tokenizer: str = "byte"
    bpe_vocabulary_size: int = 512
    context: int = 64
    steps: int = 2000
    warmup_steps: int = 100
    min_learning_rate: float = 1e-4
    accumulation: int = 1
    eval_interval: int = 250
    eval_windows: int = 200
    eval_batch_size: int = 256
    steps_per_execution: int = 10
    checkpoint_steps: int = 0
    checkpoint_seconds: float = 30.0
    max_eval_windows: Optional[int] = None

    def problems(self):
        """Values out of range, as messages (empty when all is well)."""
        checks = [
            (self.tokenizer in TOKENIZERS, None),
            (256 < self.bpe_vocabulary_size <= 65536,
             f"lm.bpe_vocabulary_size must be in (256, 65536], got {self.bpe_vocabulary_size}"),
            (self.context >= 2, f"lm.context must be at least 2, got {self.context}"),
            (self.steps >= 1, "lm.steps must be at least 1"),
            (0 <= self.warmup_steps < max(self.steps, 1) or self.warmup_steps == 0,
             f"lm.warmup_steps must be below lm.steps ({self.steps}), got {self.warmup_steps}"),
            (self.min_learning_rate >= 0, "lm.min_learning_rate must be >= 0"),
            (self.accumulation >= 1, "lm.accumulation must be at least 1"),
            (self.eval_interval >= 1, "lm.eval_interval must be at least 1"),
            (self.eval_windows >= 1, "lm.eval_windows must be at least 1"),
            (self.eval_batch_size >= 1, "lm.eval_batch_size must be at least 1"),
            (self.steps_per_execution >= 1, "lm.steps_per_execution must be at least 1"),
            (self.checkpoint_steps >= 0, "lm.checkpoint_steps must be >= 0 (0: off)"),
            (self.checkpoint_seconds >= 0, "lm.checkpoint_seconds must be >= 0 (0: off)"),
            (self.max_eval_windows is None or self.max_eval_windows >= 1,
             "lm.max_eval_windows must be at least 1 (or none for the whole validation split)"),
        ]
        return [message for ok, message in checks if not ok and message]


@dataclass
class GenerateSettings:
    """The `generate` stage: continue each prompt with one of KerasHub's samplers.

    Args:
        prompt: one prompt; `prompts` adds more (all are continued).
        max_tokens: new tokens per prompt.
        sampler: `greedy`, `top_k`, `top_p` or `random` (KerasHub's GreedySampler, TopKSampler,
            TopPSampler, RandomSampler).
        k: candidates kept by `top_k`; p: probability mass kept by `top_p`.
        temperature: logits are divided by it before sampling (not used by `greedy`).
        seed: seed of the random samplers.
    """

    prompt: str = "def main("
    prompts: tuple[str, ...] = ("import os\n", "class Base:\n    def __init__(self")
    max_tokens: int = 200
    sampler: str = "top_k"
    k: int = 10
    p: float = 0.9
    temperature: float = 0.8
    seed: int = 0

    def problems(self):
        checks = [
            (self.max_tokens >= 1, "generate.max_tokens must be at least 1"),
            (self.k >= 1, "generate.k must be at least 1"),
            (0 < self.p <= 1, f"generate.p must be in (0, 1], got {self.p}"),
            (self.temperature > 0, f"generate.temperature must be positive, got {self.temperature}"),
        ]
        return [message for ok, message in checks if not ok]
