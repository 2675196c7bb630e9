"""Prune the run's model with TF-MOT (magnitude pruning, fine-tuned with the recipe's optimizer).

The pruned Keras 3 model becomes the run's model (`model_pruned.keras`) and is exported as
`pruned_<format>` for every `export.formats` entry. Settings: `prune.*`.
"""

from workbench.compression.pruning import prune as prune_model
from workbench.compression.stage_outputs import adopt_model, export_variants
from workbench.compression.training import FineTuning


def prune(ctx):
    if ctx.data is not None and ctx.data.info.task == "language_model":
        from workbench.lm.compress_stages import prune as prune_language_model

        return prune_language_model(ctx)
    model = ctx.require_model("prune")
    data = ctx.require_data("prune")
    settings = ctx.recipe.prune
    result = prune_model(
        model, data, None, target_sparsity=settings.target_sparsity,
        initial_sparsity=settings.initial_sparsity, schedule=settings.schedule,
        structure=settings.structure, layers=settings.layers, epochs=settings.epochs,
        frequency=settings.frequency,
        fine_tuning=FineTuning.from_recipe(ctx.recipe, settings.learning_rate_factor))
    for name, fraction in result.layer_sparsity.items():
        ctx.say(f"  {name}: {fraction:.1%} zeros")
    for name, why in result.skipped_layers.items():
        ctx.say(f"  {name}: left dense (it {why})")
    metrics = adopt_model(ctx, result.model, "pruned")
    ctx.say(f"  pruned model: test accuracy {metrics.get('test_accuracy', float('nan')):.4f}")
    variants = export_variants(ctx, result.model, "pruned")
    ctx.results["prune"] = {**metrics, "layer_sparsity": result.layer_sparsity,
                            "skipped_layers": result.skipped_layers,
                            "fine_tuning_losses": result.losses, "exports": variants}
    return ctx
