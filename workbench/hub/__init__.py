"""The pretrained causal-LM family: KerasHub presets and Hugging Face checkpoints on disk,
fine-tuned (LoRA, QLoRA, full) and shipped like the workbench's own GPT. Importing this package
registers the family (`workbench.hub.task.CausalLMTask`, task `causal_lm`)."""

from workbench.hub.task import CausalLMTask

__all__ = ["CausalLMTask"]
