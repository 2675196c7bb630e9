"""What every compression stage does with its result: adopt the model, save it, export variants.

A compression stage hands the run a new Keras 3 model (pruned, clustered, a distilled student).
It becomes `ctx.model`, so the stages after it (another compression, `evaluate`, `export`) work
on it; it is evaluated on the test split, saved as `model_<name>.keras`, and exported as one
`<name>_<format>` TFLite variant per `export.formats` entry, which `verify` then checks.
"""

from __future__ import annotations

from workbench import deploy
from workbench.data import representative_inputs as sample_training_inputs


def representative_inputs(ctx):
    """The seeded training sample that calibrates int8, as the export stage draws it."""
    data = ctx.require_data("export")
    return sample_training_inputs(data, ctx.recipe.export.representative_examples,
                                  ctx.recipe.seed)


def test_metrics(ctx, model):
    """`model` compiled with the task's loss and metrics, evaluated on the test split."""
    model.compile(**ctx.task.compile_args(ctx.recipe))
    values = model.evaluate(ctx.require_data("evaluate").batches("test", ctx.recipe.batch_size),
                            verbose=0, return_dict=True)
    return {f"test_{key}": float(value) for key, value in values.items()}


def adopt_model(ctx, model, name):
    """Make `model` the run's model: compile, evaluate on the test split, save; return metrics."""
    values = {key[len("test_"):]: value for key, value in test_metrics(ctx, model).items()}
    filename = f"model_{name}.keras"
    with ctx.run_dir.atomic(filename) as temp:
        model.save(str(temp))
    ctx.model = model
    return {**{f"test_{key}": float(value) for key, value in values.items()},
            "parameters": int(model.count_params()),
            "model_path": str(ctx.run_dir / filename)}


def add_export(ctx, variant, path):
    """Register a written `.tflite` file so `verify` checks it and the summary shows it."""
    ctx.exports[variant] = {"path": str(path), "size_bytes": path.stat().st_size}
    ctx.say(f"  {path.name}: {path.stat().st_size / 1024:.1f} KiB")


def export_variants(ctx, model, prefix):
    """Export `model` as `<prefix>_<format>` for every `export.formats` entry; return the names."""
    formats = ctx.task.export_formats(ctx.recipe)
    representative = representative_inputs(ctx) if "int8" in formats else None
    names = []
    for fmt in formats:
        variant = f"{prefix}_{fmt}"
        filename = f"model_{variant}.tflite"
        with ctx.run_dir.atomic(filename) as temp:
            deploy.export_tflite(model, temp, fmt, representative)
        add_export(ctx, variant, ctx.run_dir / filename)
        names.append(variant)
    return names
