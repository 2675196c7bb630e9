"""Export the run's model to TFLite: one `model_<format>.tflite` per format of the task's
`export.formats` (the family's default when the recipe sets none)."""


def export(ctx):
    model = ctx.require_model("export")
    for fmt, path in ctx.task.export(ctx, model).items():
        ctx.exports[fmt] = {"path": str(path), "size_bytes": path.stat().st_size}
        ctx.say(f"  {path.name}: {path.stat().st_size / 1024:.1f} KiB")
    ctx.results["export"] = {fmt: dict(info) for fmt, info in ctx.exports.items()}
    return ctx
