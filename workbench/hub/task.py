"""The pretrained causal-LM family (`task="causal_lm"`): a KerasHub `CausalLM` from a preset on
disk, fine-tuned on the user's text, then shipped like the workbench's own GPT.

It is the language-model family with three differences: the model and the tokenizer come from
`model_options.preset` (the corpus is tokenized with the preset's tokenizer; `lm.context` cuts
its windows), training is fine-tuning (`finetune.mode`: LoRA, QLoRA, full, frozen embeddings;
workbench.hub.finetune) with the validation loss measured before and after, and the train stage
also writes the LoRA adapter. Evaluation, generation, Keras quantization, LiteRT export and
verification are the language-model family's own.
"""

from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.lm.task import LanguageModelTask

from workbench.hub import model as _model  # noqa: F401  (registers FullPaddingMask)


class CausalLMTask(LanguageModelTask):
    NAMES = ("causal_lm",)
    STAGES = frozenset({"train", "evaluate", "generate", "export", "verify", "quantize"})
    READS = (LanguageModelTask.READS - {key for key in LanguageModelTask.READS
                                        if key.startswith(("search.", "distill."))}) | {
        "finetune"}
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

    def load_data(self, recipe):
        from workbench.hub.presets import PresetTokens, load_tokenizer
        from workbench.hub.pretrain import ensure_own_preset
        from workbench.lm.pipeline import load_language_data

        if recipe.model_options.get("preset") is None:
            ensure_own_preset(say=lambda line: print(line, flush=True))
        import dataclasses

        info = self.preset_info(recipe)
        data = load_language_data(recipe, PresetTokens(load_tokenizer(info), preset=info.path))
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
