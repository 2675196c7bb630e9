"""How small the digits CNN gets, and what it costs: every compression variant side by side.

One run trains the `digits_compress` recipe's CNN with the workbench's train stage, then makes:
the float32 TFLite baseline; post-training int8; pruned 80% + int8; pruned 80% + pruning-preserving
QAT int8; clustered (16 values) + int8; the distilled student (float32 and int8); and two
combinations that go further: pruned 90% + clustered 16 + int8, and the distilled student pruned
80% + int8. Each `.tflite` is run with the LiteRT interpreter on the test split: accuracy,
gzip size (how the file travels), the ratio to the float32 baseline's gzip size, median batch-1
latency, and the weight sparsity stored in the flatbuffer. Every setting is the recipe's (and its
optimizer's), with the overrides shown in the variant table below.

    python benchmarks/model_compression.py [--out benchmarks/results/compression.json]
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.digits_compress import RECIPE  # noqa: E402
from workbench import deploy  # noqa: E402
from workbench.compression import (  # noqa: E402
    FineTuning, cluster, distill, prune, quantize_aware)
import workbench.supervised  # noqa: E402,F401  (registers the family)
from workbench.context import RunContext, RunDir  # noqa: E402
from workbench.tasks import task_of  # noqa: E402
from workbench.data import load_digits  # noqa: E402
from workbench.recipe import apply_overrides  # noqa: E402
from workbench.builders import build_student  # noqa: E402
from workbench.supervised import compile_args  # noqa: E402


def family_loss(recipe):
    """The supervised family's loss for the recipe's task (what the compression stages hand
    the fine-tuning)."""
    return compile_args(recipe)["loss"]

from workbench.stages.train import train  # noqa: E402

TARGET_RATIO = 10.0
TARGET_ACCURACY_LOSS = 0.01

# The combinations beyond the recipe's defaults: the recipe with these overrides. The first
# convolution (9 weights per filter) and the 10-way head are left dense; they are a small share.
FURTHER = ["prune.target_sparsity=0.9", "prune.layers=conv2d_1,dense", "prune.epochs=6"]
FURTHER_STUDENT = ["prune.target_sparsity=0.8", "prune.layers=student_conv_2,student_dense"]


def prune_with(recipe, model, data):
    settings = recipe.prune
    keras.utils.set_random_seed(recipe.seed)
    return prune(model, data.x_train, data.y_train, target_sparsity=settings.target_sparsity,
                 schedule=settings.schedule, structure=settings.structure, layers=settings.layers,
                 epochs=settings.epochs, frequency=settings.frequency,
                 fine_tuning=FineTuning.from_recipe(recipe, family_loss(recipe), settings.learning_rate_factor)).model


def cluster_with(recipe, model, data):
    settings = recipe.cluster
    keras.utils.set_random_seed(recipe.seed)
    return cluster(model, data.x_train, data.y_train, clusters=settings.clusters,
                   init=settings.init, layers=settings.layers,
                   preserve_sparsity=settings.preserve_sparsity, epochs=settings.epochs,
                   fine_tuning=FineTuning.from_recipe(recipe, family_loss(recipe), settings.learning_rate_factor)).model


def pqat_with(recipe, model, data, path):
    settings = recipe.quantize
    keras.utils.set_random_seed(recipe.seed)
    quantize_aware(model, data.x_train, data.y_train, path, preserve_sparsity=True,
                   epochs=settings.epochs,
                   fine_tuning=FineTuning.from_recipe(recipe, family_loss(recipe), settings.learning_rate_factor))
    return path


def distill_with(recipe, teacher, data):
    keras.utils.set_random_seed(recipe.seed)
    student = build_student(recipe, data.info)
    settings = recipe.distill
    distill(teacher, student, data.x_train, data.y_train, alpha=settings.alpha,
            temperature=settings.temperature, epochs=settings.epochs,
            fine_tuning=FineTuning.from_recipe(recipe, family_loss(recipe)), metrics=recipe.metrics,
            validation_data=(data.x_val, data.y_val))
    return student


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/compression.json")
    args = parser.parse_args()

    started = time.perf_counter()
    recipe = RECIPE
    further = apply_overrides(recipe, FURTHER)
    further_student = apply_overrides(recipe, FURTHER_STUDENT)
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    data = load_digits(seed=recipe.seed)
    representative = deploy.representative_sample(
        data.x_train, recipe.export.representative_examples, recipe.seed)
    tmp = Path(tempfile.mkdtemp(prefix="compression-benchmark-"))
    seconds = {}

    def timed(name, make):
        start = time.perf_counter()
        result = make()
        seconds[name] = time.perf_counter() - start
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)
        return result

    ctx = RunContext(recipe=recipe, run_dir=RunDir(tmp), verbose=0, data=data,
                     strategy=tf.distribute.get_strategy(), task=task_of(data))
    model = timed("train", lambda: train(ctx).model)
    pruned = timed("prune 80%", lambda: prune_with(recipe, model, data))
    clustered = timed("cluster 16", lambda: cluster_with(recipe, model, data))
    pruned_further = timed("prune 90% (conv2d_1, dense)", lambda: prune_with(further, model, data))
    pruned_clustered = timed("cluster 16 after prune 90%",
                             lambda: cluster_with(further, pruned_further, data))
    student = timed("distill", lambda: distill_with(recipe, model, data))
    pruned_student = timed("prune student 80%",
                            lambda: prune_with(further_student, student, data))

    def export(name, keras_model, fmt):
        path = tmp / f"{name}.tflite"
        timed(f"export {name}",
              lambda: deploy.export_tflite(keras_model, path, fmt, representative))
        return path

    files = {
        "float32 (baseline)": export("float32", model, "float32"),
        "PTQ int8": export("ptq_int8", model, "int8"),
        "pruned 80% + int8": export("pruned_int8", pruned, "int8"),
        "pruned 80% + PQAT int8": timed("PQAT", lambda: pqat_with(recipe, pruned, data,
                                                                   tmp / "pqat_int8.tflite")),
        "clustered 16 + int8": export("clustered_int8", clustered, "int8"),
        "distilled student float32": export("student_float32", student, "float32"),
        "distilled student int8": export("student_int8", student, "int8"),
        "pruned 90% + clustered 16 + int8": export("pruned_clustered_int8", pruned_clustered,
                                                   "int8"),
        "distilled student, pruned 80% + int8": export("student_pruned_int8", pruned_student,
                                                       "int8"),
    }

    rows = []
    for name, path in files.items():
        metrics = deploy.verify_tflite(path, data.x_test, data.y_test)
        metrics["weight_sparsity"] = deploy.weight_sparsity(path)["weight_sparsity"]
        rows.append({"variant": name, **metrics})
    baseline = rows[0]
    for row in rows:
        row["ratio_gzip_vs_float32"] = baseline["gzip_bytes"] / row["gzip_bytes"]
        row["accuracy_change_points"] = 100 * (row["accuracy"] - baseline["accuracy"])
        row["meets_target"] = (row["ratio_gzip_vs_float32"] >= TARGET_RATIO
                               and row["accuracy"] >= baseline["accuracy"] - TARGET_ACCURACY_LOSS)
    total = time.perf_counter() - started

    print(f"\ndigits CNN ({model.count_params()} parameters; student "
          f"{student.count_params()}), {len(data.x_test)} test images, {os.cpu_count()} CPU "
          f"cores, {total:.0f} s in all")
    header = (f"{'variant':44s} {'accuracy':>8s} {'change':>7s} {'size':>10s} {'gzip':>10s} "
              f"{'smaller':>8s} {'latency':>9s} {'sparsity':>8s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['variant']:44s} {row['accuracy']:8.4f} {row['accuracy_change_points']:+7.2f} "
              f"{row['size_bytes'] / 1024:6.1f} KiB {row['gzip_bytes'] / 1024:6.1f} KiB "
              f"{row['ratio_gzip_vs_float32']:7.1f}x {row['median_latency_ms']:6.3f} ms "
              f"{row['weight_sparsity']:8.1%}")
    winners = [row for row in rows if row["meets_target"]]
    best = max(winners, key=lambda row: row["ratio_gzip_vs_float32"], default=None)
    print(f"\ntarget: >= {TARGET_RATIO:.0f}x smaller (gzip) than float32 with <= "
          f"{100 * TARGET_ACCURACY_LOSS:.0f} point accuracy loss: "
          + (f"{len(winners)} variants meet it; smallest: {best['variant']}, "
             f"{best['ratio_gzip_vs_float32']:.1f}x, {best['accuracy_change_points']:+.2f} points"
             if best else "no variant meets it"))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "recipe": recipe.name, "overrides_for_further_variants": FURTHER,
        "overrides_for_the_pruned_student": FURTHER_STUDENT,
        "parameters": {"model": int(model.count_params()),
                       "student": int(student.count_params())},
        "test_examples": len(data.x_test), "rows": rows, "stage_seconds": seconds,
        "total_seconds": total, "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "keras": keras.__version__,
        "tensorflow": tf.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
