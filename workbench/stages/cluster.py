"""Cluster the run's model's weights with TF-MOT (`cluster.clusters` shared values per kernel).

The clustered Keras 3 model becomes the run's model (`model_clustered.keras`) and is exported as
`clustered_<format>` for every `export.formats` entry. Settings: `cluster.*`.
"""

from workbench.compression.clustering import cluster as cluster_model
from workbench.compression.stage_outputs import adopt_model, export_variants
from workbench.compression.training import FineTuning


def cluster(ctx):
    if ctx.data is not None and ctx.data.info.task == "language_model":
        from workbench.errors import WorkbenchError

        raise WorkbenchError("stage 'cluster' does not apply to language models; use "
                             "'quantize' (int8, int4, gptq, awq) or 'prune'")
    model = ctx.require_model("cluster")
    data = ctx.require_data("cluster")
    settings = ctx.recipe.cluster
    result = cluster_model(
        model, data, None, clusters=settings.clusters, init=settings.init,
        layers=settings.layers, preserve_sparsity=settings.preserve_sparsity,
        epochs=settings.epochs,
        fine_tuning=FineTuning.from_recipe(ctx.recipe, settings.learning_rate_factor))
    for name, count in result.unique_values.items():
        ctx.say(f"  {name}: {count} distinct weight values")
    for name, why in result.skipped_layers.items():
        ctx.say(f"  {name}: left unclustered (it {why})")
    metrics = adopt_model(ctx, result.model, "clustered")
    ctx.say(f"  clustered model: test accuracy {metrics.get('test_accuracy', float('nan')):.4f}")
    variants = export_variants(ctx, result.model, "clustered")
    ctx.results["cluster"] = {**metrics, "unique_values": result.unique_values,
                              "skipped_layers": result.skipped_layers,
                              "fine_tuning_losses": result.losses, "exports": variants}
    return ctx
