"""The language-model family: next-token prediction on a text corpus, trained by steps.

Data is a tokenized corpus cut into windows of `lm.context + 1` tokens (workbench.lm.pipeline);
the model is the recipe's builder (the gpt recipe's GPT from KerasHub pieces); training counts
optimizer steps the way nanoGPT does (workbench.lm.training); evaluation is loss, perplexity and
bits per byte; it offers `generate`, LiteRT export and verification with greedy-token parity,
Keras `model.quantize` modes and distillation into a smaller GPT. TF-MOT's pruning and clustering
and the learning-rate range test (which sweeps epochs) are not offered.
"""

from __future__ import annotations

from workbench.errors import WorkbenchError, suggest
from workbench.lm import model as _model  # noqa: F401  (registers GPT and DecoderBlock)
from workbench.tasks.base import Task


class LanguageModelTask(Task):
    NAMES = ("language_model",)
    STAGES = frozenset({"search", "train", "evaluate", "generate", "export", "verify",
                        "quantize", "distill"})
    READS = frozenset({
        "lm", "generate", "remat", "data_options.val_fraction", "export.formats",
        "export.representative_examples", "verify.max_examples", "verify.generate_tokens",
        "quantize.keras_modes", "quantize.group_size", "quantize.export_quantized",
        "distill.alpha", "distill.temperature", "distill.steps", "distill.learning_rate",
        "distill.student_layers", "distill.student_width", "distill.student_heads",
        "search.tuner", "search.max_trials", "search.objective", "search.executions_per_trial",
        "search.optimizers", "search.learning_rate_min", "search.learning_rate_max",
        "search.schedules", "search.batch_sizes", "search.weight_decays",
        "search.warmup_steps", "search.steps"})
    INSTEAD = {
        "prune": "TF-MOT cannot reach a GPT's Keras 3-only layers (the tied "
                 "ReversibleEmbedding, KerasHub's Transformer blocks); shrink it with 'quantize' "
                 "(int8, int4, gptq, awq) or 'distill' instead",
        "cluster": "TF-MOT cannot reach a GPT's Keras 3-only layers; shrink it with 'quantize' "
                   "(int8, int4, gptq, awq) or 'distill' instead",
        "lr_find": "the range test sweeps epochs, and a language model trains by steps; search "
                   "the rate with --stages search,train and search.learning_rate_min/max",
    }
    HEADLINE = ("val_loss", "val_loss")

    # ---- before any work -----------------------------------------------------------------

    def check_settings(self, recipe):
        super().check_settings(recipe)
        from workbench.lm.export import LM_EXPORT_FORMATS
        from workbench.lm.shipping import export_formats

        for fmt in export_formats(recipe):
            if fmt not in LM_EXPORT_FORMATS:
                raise WorkbenchError(
                    f"unknown language-model export format '{fmt}' in export.formats: "
                    f"{suggest(fmt, LM_EXPORT_FORMATS)} (full-integer int8 needs integer "
                    "activations, which token logits do not calibrate to)")
        fraction = recipe.data_options.get("val_fraction")
        if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
            raise WorkbenchError(f"data_options.val_fraction must be in (0, 1), got {fraction!r}")
        if "search" in recipe.stages:
            from workbench.lm.search import check_language_model_search

            check_language_model_search(recipe)

    def load_data(self, recipe):
        from workbench.lm.pipeline import load_language_data

        return load_language_data(recipe)

    def output_units(self, info):
        return info.vocabulary_size

    def preflight(self, recipe, data, stages, has_model):
        """One build of the recipe's model (with the search's choices declared when searching):
        its context must be `lm.context`."""
        if "train" not in stages and "search" not in stages:
            return
        import keras
        import keras_tuner

        from workbench.builders import build_model
        from workbench.lm.search import search_recipe
        from workbench.lm.training import check_context

        hp = keras_tuner.HyperParameters()
        built = search_recipe(recipe, hp) if "search" in stages else recipe
        check_context(build_model(built, hp, data.info), recipe.lm.context)
        keras.utils.set_random_seed(recipe.seed)  # building drew from the same RNG

    # ---- training, evaluation, generation ------------------------------------------------

    def compile_args(self, recipe):
        import keras

        return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "metrics": []}

    def fit(self, ctx):
        from workbench.lm.pipeline import fit

        return fit(ctx)

    def evaluate(self, ctx, model):
        from workbench.lm.pipeline import evaluate

        return evaluate(ctx, model)

    def describe_evaluation(self, metrics):
        from workbench.lm.pipeline import describe_evaluation

        return describe_evaluation(metrics)

    def generate(self, ctx):
        from workbench.lm.pipeline import generate

        return generate(ctx)

    # ---- search --------------------------------------------------------------------------

    def hypermodel(self, ctx):
        from workbench.lm.search import language_model_hypermodel

        return language_model_hypermodel(ctx)

    def search_objective(self, recipe):
        import keras_tuner

        name = recipe.search.objective or "val_loss"
        return keras_tuner.Objective(name, "min" if "loss" in name else "max")

    def search_recipe(self, recipe, hp):
        from workbench.lm.search import search_recipe

        return search_recipe(recipe, hp)

    def search_budget(self, recipe):
        from workbench.lm.search import describe_budget, search_steps

        return describe_budget(recipe), {"steps_per_trial": search_steps(recipe)}

    # ---- shipping ------------------------------------------------------------------------

    def export_formats(self, recipe):
        from workbench.lm.shipping import export_formats

        return export_formats(recipe)

    def export(self, ctx, model):
        from workbench.lm.shipping import export

        return export(ctx, model)

    def verify(self, ctx):
        from workbench.lm.shipping import verify

        return verify(ctx)

    def quantize(self, ctx):
        from workbench.lm.shipping import quantize

        return quantize(ctx)

    def distill(self, ctx):
        from workbench.lm.shipping import distill

        return distill(ctx)
