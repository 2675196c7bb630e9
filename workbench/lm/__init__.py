"""The language-model family: its corpus, GPT model, step-based training, evaluation,
generation, search, compression and LiteRT export. Importing this package registers the family
(`workbench.lm.task.LanguageModelTask`, task `language_model`); `pipeline` and `shipping` hold what
it computes for each stage."""

from workbench.lm.task import LanguageModelTask

__all__ = ["LanguageModelTask"]
