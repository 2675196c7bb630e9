"""The train stage of the `causal_lm` family: load the preset, score it, make the chosen weights
trainable, train by steps with the language-model family's loop, score it again, and write the
adapter and the merged model."""

from __future__ import annotations

# How many validation windows the merged model and the adapter are compared on.
PARITY_WINDOWS = 4


def sft_results(stats, results, width):
    """The instruction-tuning numbers of the report: the data's, and what the measured rate of
    window positions (`tokens_per_second`) gives in conversation tokens (less the layout's
    padding) and in trained tokens (the weighted ones) per second."""
    padding = stats["padding_packed"] if stats["packing"] else stats["padding_unpacked"]
    speed = results.get("tokens_per_second")
    trained = stats["trained_tokens"] / (stats["train_windows"] * width)
    return {**stats, "conversation_tokens_per_second": speed * (1 - padding) if speed else None,
            "trained_tokens_per_second": speed * trained if speed else None}


def finetune(ctx, info):
    from workbench.builders import build_model, hyperparameters
    from workbench.hub import finetune as ft
    from workbench.hub.model import backbone_of, wrap_causal_lm
    from workbench.lm.pipeline import train_built
    from workbench.lm.shipping import _windows

    recipe, settings = ctx.recipe, ctx.recipe.finetune
    data = ctx.require_data("train")
    # The family's own scoring: on conversations, the response-only loss (workbench.hub.sft).
    evaluate = ctx.task.evaluate
    stats = getattr(data, "stats", None)
    if stats:
        from workbench.hub.sft import describe

        for line in describe(stats):
            ctx.say(line)
    with ctx.strategy.scope():
        # One scope for the preset's weights and the adapters: a sharding strategy checks that
        # what a scope creates is split, and the adapters alone are too small to be.
        model = build_model(recipe, hyperparameters(ctx), data.info)
        before = evaluate(ctx, model)
        ft.apply_mode(model, settings)
    ctx.say(f"  {info.family} preset {info.path}: val loss {before['val_loss']:.4f} before "
            f"fine-tuning ({before['windows']:,} windows"
            + (", response tokens only" if stats and stats["train_on"] == "assistant" else "")
            + ")")
    trainable, total = ft.trainable_parameters(model), ft.total_parameters(model)
    mode = settings.mode + (f" ({settings.base_quantization} base)"
                            if settings.mode == "qlora" else "")
    adapters = (f", rank {settings.rank}, alpha {settings.alpha or settings.rank} on "
                f"{', '.join(ft.adapted_layer_names(backbone_of(model)))}"
                if settings.mode in ("lora", "qlora") else "")
    ctx.say(f"  {mode}: {trainable:,} of {total:,} weights train ({trainable / total:.2%})"
            f"{adapters}")
    trained = train_built(ctx, model)
    after = evaluate(ctx, model)
    results = trained.results
    results.update({
        "preset": str(info.path), "family": info.family, "mode": settings.mode,
        "rank": settings.rank if settings.mode in ("lora", "qlora") else None,
        "alpha": settings.alpha if settings.mode in ("lora", "qlora") else None,
        "base_quantization": settings.base_quantization if settings.mode == "qlora" else None,
        "trainable_parameters": trainable, "total_parameters": total,
        "trainable_fraction": trainable / total,
        "optimizer_state_bytes": ft.optimizer_state_bytes(model.optimizer),
        "peak_rss_bytes": ft.peak_rss_bytes(), "remat": recipe.remat,
        "val_loss_before": before["val_loss"], "val_loss_after": after["val_loss"],
        "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
        "eval_windows": after["windows"]})
    if stats:
        results["sft"] = sft_results(stats, results, recipe.lm.context + 1)
        if results["sft"]["conversation_tokens_per_second"]:
            ctx.say(f"  {results['sft']['conversation_tokens_per_second']:,.0f} conversation "
                    f"tokens/s, {results['sft']['trained_tokens_per_second']:,.0f} of them "
                    "trained on")
    windows = _windows(data.corpus.val, recipe.lm.context, PARITY_WINDOWS)[:, :-1]
    merged = ft.merged_copy(model)
    results["merged_max_logit_difference"] = ft.max_logit_difference(model, merged, windows)
    if settings.mode in ("lora", "qlora"):
        results["adapter_path"] = ft.save_adapter(model, ctx.run_dir, settings, info.path)
        adapted = wrap_causal_lm(ft.load_adapter(results["adapter_path"], info.path),
                                 recipe.lm.context)
        results["adapter_max_logit_difference"] = ft.max_logit_difference(
            model, adapted, windows)
    ctx.say(f"  val loss {before['val_loss']:.4f} -> {after['val_loss']:.4f}; "
            f"optimizer state {results['optimizer_state_bytes'] / 2**20:.2f} MiB, peak RSS "
            f"{results['peak_rss_bytes'] / 2**30:.2f} GiB; merged model differs by "
            f"{results['merged_max_logit_difference']:.2e}"
            + (f", adapter on the preset by {results['adapter_max_logit_difference']:.2e}"
               if "adapter_max_logit_difference" in results else "") + " (max |logit|)")
    try:
        results["preset_path"] = ft.save_preset(merged, ctx.run_dir, info)
    except (ValueError, TypeError) as error:
        # KerasHub 0.32 cannot write a preset of a Keras-quantized backbone (the QLoRA base):
        # "Invalid dtype: object" while it sizes the weights. model.keras has the merged model.
        results["preset_refused"] = f"{type(error).__name__}: {error}"
        ctx.say(f"  no preset/ written: KerasHub's save_to_preset refused the model "
                f"({results['preset_refused'][:120]}); model.keras holds it")
    # A QLoRA model stays as trained (int8/int4 base + float adapters): Keras 3.15 saves it,
    # merging on the way, but cannot save the merged copy loaded back ("Invalid dtype: object").
    trained.model = model if settings.mode == "qlora" else merged
    return trained
