"""Export the model to TFLite: one `.tflite` file per format in `recipe.export.formats`."""

import numpy as np

from workbench import deploy


def export(ctx):
    model = ctx.require_model("export")
    settings = ctx.recipe.export
    representative = None
    if "int8" in settings.formats:
        data = ctx.require_data("export")
        # A fixed, seeded sample of the training split calibrates the int8 ranges.
        rng = np.random.default_rng(ctx.recipe.seed)
        count = min(settings.representative_examples, len(data.x_train))
        representative = data.x_train[rng.choice(len(data.x_train), count, replace=False)]
    for fmt in settings.formats:
        name = f"model_{fmt}.tflite"
        with ctx.run_dir.atomic(name) as temp:
            deploy.export_tflite(model, temp, fmt, representative)
        path = ctx.run_dir / name
        ctx.exports[fmt] = {"path": str(path), "size_bytes": path.stat().st_size}
        ctx.say(f"  {name}: {path.stat().st_size / 1024:.1f} KiB")
    ctx.results["export"] = {fmt: dict(info) for fmt, info in ctx.exports.items()}
    return ctx
