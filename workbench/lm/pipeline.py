"""What the language-model family computes for `train`, `evaluate` and `generate`, and how it
loads its corpus (`LanguageModelTask` in workbench.lm.task calls these; the stages record the
results)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.data.core import Data, DataInfo
from workbench.lm.corpus import load_corpus, window_starts, windows_dataset


DEFAULT_VAL_FRACTION = 0.1


@dataclass
class LanguageData(Data):
    """`Data` whose splits are non-overlapping windows `(x, y)` of `context + 1` tokens, plus the
    tokenized corpus they come from (training samples random windows from it directly)."""

    corpus: Any = None

    def training_splits(self):
        """What training reads: the training and validation token arrays (random windows are cut
        from them), or `PackedWindows` with a weight per token (workbench.lm.packing)."""
        return self.corpus.train, self.corpus.val


def load_language_data(recipe, tokenizer=None) -> LanguageData:
    """The recipe's corpus as `LanguageData` (`test` is the validation split), tokenized by
    `lm.tokenizer`, or by `tokenizer` when one is given."""
    settings = recipe.lm
    corpus = load_corpus(recipe.data, tokenizer or settings.tokenizer,
                         recipe.data_options.get("val_fraction", DEFAULT_VAL_FRACTION),
                         settings.context, settings.bpe_vocabulary_size)
    context = settings.context
    train_starts = window_starts(len(corpus.train), context)
    val_starts = window_starts(len(corpus.val), context)
    info = DataInfo(
        name=recipe.data, task="language_model", input_shape=(context,), input_dtype="int32",
        vocabulary_size=corpus.tokenizer.vocabulary_size,
        sizes={"train": len(train_starts), "val": len(val_starts), "test": len(val_starts)},
        fingerprint=corpus.fingerprint, source=recipe.data)
    val = windows_dataset(corpus.val, context, val_starts)
    return LanguageData(train=windows_dataset(corpus.train, context, train_starts), val=val,
                        test=val, info=info, corpus=corpus)


def _corpus_summary(data):
    corpus = data.corpus
    return {"corpus": corpus.source, "corpus_bytes": corpus.num_bytes,
            "fingerprint": corpus.fingerprint, "tokenizer": corpus.tokenizer.describe(),
            "vocabulary_size": corpus.tokenizer.vocabulary_size,
            "train_tokens": int(len(corpus.train)), "val_tokens": int(len(corpus.val))}


def fit(ctx):
    """Build the recipe's model under the run's strategy and train it for `lm.steps` steps."""
    from workbench.builders import build_model, hyperparameters

    with ctx.strategy.scope():
        model = build_model(ctx.recipe, hyperparameters(ctx), ctx.require_data("train").info)
    return train_built(ctx, model)


def train_built(ctx, model):
    """Compile `model` (built under the run's strategy) and train it for `lm.steps` steps: the
    `Trained` model, curves, learning rates and results."""
    import keras

    from workbench.lm.model import flops_per_token
    from workbench.lm.packing import PackedWindows
    from workbench.lm.training import (
        check_context, compile_language_model, effective_steps_per_execution,
        learning_rate_schedule, learning_rates, train_language_model)
    from workbench.tasks import Trained

    recipe, settings = ctx.recipe, ctx.recipe.lm
    data = ctx.require_data("train")
    replicas = ctx.strategy.num_replicas_in_sync
    # Keras 3.15's multi-step loop fails under MirroredStrategy (a while-loop placeholder without
    # a value): one step per execution there.
    spe = effective_steps_per_execution(settings) if replicas == 1 else 1
    check_context(model, settings.context)
    train, val = data.training_splits()
    if recipe.remat:
        from workbench.lm.remat import rematerialize_blocks

        ctx.say(f"  rematerializing {rematerialize_blocks(model)} Transformer blocks")
    with ctx.strategy.scope():
        compile_language_model(model, recipe, settings, replicas, spe,
                               weighted=isinstance(train, PackedWindows))
    parameters = int(model.count_params())
    ctx.say(f"  {model.name}: {parameters:,} parameters, context {settings.context}, "
            f"{settings.steps} steps of {recipe.batch_size * replicas * settings.accumulation} "
            f"windows ({replicas} replica{'s' if replicas > 1 else ''}, accumulation "
            f"{settings.accumulation}, jit_compile={recipe.jit_compile}, {spe} steps/execution, "
            f"{keras.backend.backend()})")
    state, stop_reason = train_language_model(
        model, train, val, recipe, settings, strategy=ctx.strategy,
        run_dir=ctx.run_dir, resume=ctx.resuming, say=ctx.say)
    schedule = learning_rate_schedule(recipe, settings, replicas)
    tokens_per_second = (state.measured_tokens / state.measured_seconds
                         if state.measured_seconds else None)
    training_flops = flops_per_token(model, training=True)
    steps_done = state.micro_step // settings.accumulation
    results = {
        **_corpus_summary(data), "steps": steps_done, "eval_steps": state.eval_steps,
        "replicas": replicas, "global_batch_size": recipe.batch_size * replicas,
        "accumulation": settings.accumulation, "tokens_per_step":
            recipe.batch_size * replicas * settings.accumulation * settings.context,
        "backend": keras.backend.backend(),
        "steps_per_execution": spe, "jit_compile": recipe.jit_compile,
        "precision": recipe.precision, "parameters": parameters,
        "tokens_per_second": tokens_per_second,
        "tokens_per_second_overall": (state.micro_step * recipe.batch_size * replicas
                                      * settings.context / state.train_seconds
                                      if state.train_seconds else None),
        "training_seconds": state.train_seconds, "eval_train_seconds": state.eval_train_seconds,
        "validation_seconds": state.validation_seconds,
        "flops_per_token": training_flops,
        "achieved_flops_per_second": (training_flops * tokens_per_second
                                      if tokens_per_second else None),
        "final_loss": state.train_loss[-1] if state.train_loss else None,
        "final_val_loss": state.val_loss[-1] if state.val_loss else None,
        "best_val_loss": min(state.val_loss) if state.val_loss else None,
    }
    if stop_reason:
        results["stop_reason"] = stop_reason
    if tokens_per_second:
        ctx.say(f"  {tokens_per_second:,.0f} training tokens/s, "
                f"{training_flops * tokens_per_second / 1e9:.1f} GFLOP/s achieved "
                f"({training_flops / 1e6:.2f} MFLOP/token)")
    return Trained(model=model, history={"loss": state.train_loss, "val_loss": state.val_loss},
                   learning_rates=learning_rates(schedule, settings.steps, settings.accumulation),
                   results=results)


def evaluate(ctx, model):
    """Loss, perplexity and bits per byte over the whole validation split."""
    from workbench.lm.evaluate import evaluate_split
    from workbench.lm.generate import check_language_model
    from workbench.lm.training import check_context

    data = ctx.require_data("evaluate")
    check_language_model(model, "evaluate")
    settings = ctx.recipe.lm
    check_context(model, settings.context)
    tokenizer = data.corpus.tokenizer
    token_bytes = getattr(tokenizer, "token_bytes", lambda: None)()
    return evaluate_split(model, data.corpus.val, settings.context,
                          batch_size=settings.eval_batch_size,
                          max_windows=settings.max_eval_windows, token_bytes=token_bytes)


def describe_evaluation(metrics):
    speed = metrics["tokens_per_second"]
    return (f"val_loss {metrics['val_loss']:.4f} nats/token  perplexity "
            f"{metrics['perplexity']:.3f}  {metrics['bits_per_byte']:.4f} bits/byte  over "
            f"{metrics['tokens']:,} tokens ({metrics['windows']:,} windows)"
            + (f"  {speed:,.0f} tokens/s" if speed else ""))


def generate(ctx):
    """Continue `generate.prompt` and `generate.prompts`: `(samples, settings)`."""
    from workbench.lm.generate import generate_prompts, generate_text

    model = ctx.require_model("generate")
    data = ctx.require_data("generate")
    settings = ctx.recipe.generate
    prompts = generate_prompts(settings)
    tokenizer = data.corpus.tokenizer if getattr(data, "corpus", None) else None
    if tokenizer is None:
        from workbench.lm.tokenizers import ByteTokens

        tokenizer = ByteTokens()
    samples = generate_text(model, tokenizer, prompts, max_tokens=settings.max_tokens,
                            sampler=settings.sampler, k=settings.k, p=settings.p,
                            temperature=settings.temperature, seed=settings.seed)
    return samples, settings
