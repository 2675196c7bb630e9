"""Training throughput: 1 vs N replicas and float32 vs mixed precision, side by side.

Each configuration runs in its own process (device layout and precision are fixed when TensorFlow
starts) through the workbench's own pieces: `workbench.distribute.resolve_strategy`, the replica
batch/learning-rate rule and `set_precision`. With GPUs present it uses them (N = all GPUs,
mixed_float16); without, it splits the CPU into N logical devices (N = 2) and compares
mixed_bfloat16, so the same command measures whatever machine it runs on. The model is
MobileNetV2 (alpha 0.35, 32x32x3, random weights) on synthetic data: the point is steps, not
accuracy.

    python benchmarks/scale.py [--steps 30] [--batch 64]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(replicas, precision, steps, batch):
    """Runs inside the child process: examples/second of `fit` after one warm-up epoch."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO))
    from workbench import distribute

    distribute.configure_cpu_devices()
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = distribute.resolve_strategy("mirrored" if replicas > 1 else "default")
    distribute.set_precision(precision)
    global_batch = batch * strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)
    x = rng.normal(size=(global_batch * steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=len(x)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).cache().prefetch(2)
    with strategy.scope():
        model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                               weights=None, classes=10)
        model.compile(keras.optimizers.SGD(distribute.scaled_learning_rate(
            0.01, strategy.num_replicas_in_sync, "linear"), momentum=0.9),
            "sparse_categorical_crossentropy")
    model.fit(data, epochs=1, verbose=0)  # tracing and warm-up
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return {"replicas": strategy.num_replicas_in_sync, "precision": precision,
            "global_batch": global_batch, "examples_per_second": len(x) / seconds,
            "device": "gpu" if tf.config.list_physical_devices("GPU") else "cpu"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="per-replica batch size")
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    parser.add_argument("--child", nargs=2, metavar=("REPLICAS", "PRECISION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1], args.steps, args.batch)))
        return

    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    replicas = gpus if gpus > 1 else 2
    mixed = "mixed_float16" if gpus else "mixed_bfloat16"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if not gpus:
        env["WORKBENCH_CPU_DEVICES"] = str(replicas)
    rows = []
    for count, precision in [(1, "float32"), (replicas, "float32"), (1, mixed),
                             (replicas, mixed)]:
        if gpus == 1 and count > 1:
            continue  # one GPU: nothing to mirror over
        result = subprocess.run([sys.executable, __file__, "--child", str(count), precision,
                                 "--steps", str(args.steps), "--batch", str(args.batch)],
                                env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"measured {rows[-1]['replicas']} replica(s), {precision}: "
              f"{rows[-1]['examples_per_second']:.0f} examples/s", flush=True)

    base = rows[0]["examples_per_second"]
    where = (f"{gpus} GPU(s)" if gpus else
             f"CPU, {os.cpu_count()} cores split into {replicas} logical devices")
    print(f"\nMobileNetV2 (alpha 0.35, 32x32x3), per-replica batch {args.batch}, "
          f"{args.steps} steps, on {where} ({platform.machine()})")
    print(f"{'replicas':>8s} {'precision':>15s} {'global batch':>12s} {'examples/s':>11s} "
          f"{'vs 1x float32':>13s}")
    for row in rows:
        print(f"{row['replicas']:8d} {row['precision']:>15s} {row['global_batch']:12d} "
              f"{row['examples_per_second']:11.0f} {row['examples_per_second'] / base:13.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"where": where, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
