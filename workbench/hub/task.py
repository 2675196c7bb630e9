"""The pretrained causal-LM family (`task="causal_lm"`): a KerasHub `CausalLM` from a preset on
disk, fine-tuned on the user's text, then shipped like the workbench's own GPT.

It is the language-model family with three differences: the model and the tokenizer come from
`model_options.preset` (the corpus is tokenized with the preset's tokenizer; `lm.context` cuts
its windows), training is fine-tuning (`finetune.mode`: LoRA, QLoRA, full, frozen embeddings;
workbench.hub.finetune) with the validation loss measured before and after, and the train stage
also writes the LoRA adapter. Evaluation, generation, Keras quantization, LiteRT export and
verification are the language-model family's own.

Conversation data (JSONL, CSV, a folder of them, or a `module:function` of records;
workbench.hub.chats) makes the run instruction tuning (`sft.*`, workbench.hub.sft): the
conversations rendered with the chat template, the loss over the assistant's tokens only, packed
windows, and evaluation and generation through the same template.
"""

from __future__ import annotations

from workbench.errors import WorkbenchError, suggest
from workbench.lm.task import LanguageModelTask



class CausalLMTask(LanguageModelTask):
    NAMES = ("causal_lm",)
    STAGES = frozenset({"train", "evaluate", "generate", "export", "verify", "quantize"})
    READS = (LanguageModelTask.READS - {key for key in LanguageModelTask.READS
                                        if key.startswith(("search.", "distill."))}) | {
        "finetune", "sft", "data_options.format", "data_options.columns"}
    INSTEAD = {
        **LanguageModelTask.INSTEAD,
        "search": "a pretrained model is fine-tuned, not searched; set finetune.mode, "
                  "finetune.rank and learning_rate",
        "distill": "distillation builds a smaller workbench GPT from the teacher's sizes, which a "
                   "KerasHub preset does not have; shrink the fine-tuned model with 'quantize'",
    }

    # ---- before any work -----------------------------------------------------------------

    def preset_info(self, recipe):
        from workbench.hub.presets import check_preset
        from workbench.hub.presets import own_preset_dir

        preset = recipe.model_options.get("preset")
        if preset is None:
            preset = own_preset_dir()
            if not (preset / "config.json").is_file():
                return None  # built by load_data, before any other work
        return check_preset(preset)

    def check_settings(self, recipe):
        super().check_settings(recipe)
        from workbench.hub.presets import check_context
        from workbench.settings.lm import LanguageModelSettings

        defaults = LanguageModelSettings()
        for key in ("tokenizer", "bpe_vocabulary_size"):
            if getattr(recipe.lm, key) != getattr(defaults, key):
                raise WorkbenchError(
                    f"setting 'lm.{key}' does not apply to task 'causal_lm': the preset brings "
                    "its own tokenizer; drop it")
        info = self.preset_info(recipe)
        if info is not None:
            check_context(info, recipe.lm.context)
        from workbench.settings.hub import CHAT_FORMATS

        fmt = recipe.data_options.get("format", "auto")
        if fmt not in CHAT_FORMATS:
            raise WorkbenchError(f"unknown data_options.format {fmt!r}: "
                                 f"{suggest(str(fmt), CHAT_FORMATS)}")

    def load_data(self, recipe):
        from workbench.hub.chats import is_conversation_source
        from workbench.hub.presets import PresetTokens, load_tokenizer
        from workbench.hub.pretrain import ensure_own_preset
        from workbench.lm.pipeline import load_language_data

        conversations = is_conversation_source(recipe.data,
                                               recipe.data_options.get("format", "auto"))
        if not conversations:
            from workbench.tasks.base import changed_settings

            for key in changed_settings(recipe):
                if key.split(".")[0] == "sft" or key == "data_options.columns":
                    raise WorkbenchError(
                        f"setting '{key}' applies to conversation data, and data "
                        f"'{recipe.data}' is read as text; give a .jsonl or .csv file of "
                        "conversations (or set data_options.format), or drop it")
        if recipe.model_options.get("preset") is None:
            ensure_own_preset(say=lambda line: print(line, flush=True))
        import dataclasses

        info = self.preset_info(recipe)
        tokens = PresetTokens(load_tokenizer(info), preset=info.path)
        if conversations:
            from workbench.hub.sft import load_conversation_data

            return load_conversation_data(recipe, tokens, info)
        data = load_language_data(recipe, tokens)
        data.info = dataclasses.replace(data.info, task=self.name)
        return data

    def preflight(self, recipe, data, stages, has_model):
        """The preset's model, built from its config without its weights: LoRA's targets and
        rank must fit it."""
        if "train" not in stages or recipe.finetune.mode not in ("lora", "qlora"):
            return
        import keras

        from workbench.hub.finetune import check_targets
        from workbench.hub.presets import load_causal_lm

        causal_lm = load_causal_lm(self.preset_info(recipe), load_weights=False)
        check_targets(causal_lm.backbone, recipe.finetune)
        keras.utils.set_random_seed(recipe.seed)  # building drew from the same RNG

    # ---- training ------------------------------------------------------------------------

    def fit(self, ctx):
        from workbench.hub.training import finetune

        return finetune(ctx, self.preset_info(ctx.recipe))

    def search_budget(self, recipe):
        return None, {}

    # ---- conversations: scored and answered through the chat template ---------------------

    @staticmethod
    def _conversations(ctx):
        from workbench.hub.sft import ConversationData

        return isinstance(ctx.data, ConversationData)

    def evaluate(self, ctx, model):
        if self._conversations(ctx):
            from workbench.hub.sft import score

            return score(ctx, model)
        return super().evaluate(ctx, model)

    def describe_evaluation(self, metrics):
        line = super().describe_evaluation(metrics)
        if metrics.get("train_on") == "assistant":
            line = line.replace(" tokens (", " response tokens (", 1)
        return line

    def generate(self, ctx):
        if self._conversations(ctx):
            from workbench.hub.sft import generate

            return generate(ctx)
        return super().generate(ctx)
