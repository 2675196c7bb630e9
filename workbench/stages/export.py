"""Export the model to TFLite: one `.tflite` file per format in `recipe.export.formats`."""

from workbench import deploy
from workbench.data import representative_inputs


def export(ctx):
    if ctx.data is not None and ctx.data.info.task == "language_model":
        from workbench.lm.compress_stages import export as export_language_model

        return export_language_model(ctx)
    model = ctx.require_model("export")
    settings = ctx.recipe.export
    representative = None
    if "int8" in settings.formats:
        data = ctx.require_data("export")
        representative = representative_inputs(data, settings.representative_examples,
                                               seed=ctx.recipe.seed)
    for fmt in settings.formats:
        name = f"model_{fmt}.tflite"
        with ctx.run_dir.atomic(name) as temp:
            deploy.export_tflite(model, temp, fmt, representative)
        path = ctx.run_dir / name
        ctx.exports[fmt] = {"path": str(path), "size_bytes": path.stat().st_size}
        ctx.say(f"  {name}: {path.stat().st_size / 1024:.1f} KiB")
    ctx.results["export"] = {fmt: dict(info) for fmt, info in ctx.exports.items()}
    return ctx
