"""Throughput of the workbench's train stage versus a plain `model.fit`, side by side.

Both train the digits recipe's CNN on the same split, batch size and number of epochs. The plain
run is what a user writes by hand (`model.fit(x, y, validation_data=...)`); the workbench run is
`workbench.stages.train.fit` with everything it adds (tf.data pipeline, per-epoch backups for
`--resume`, early stopping with best-
weight tracking, learning rate on plateau, TensorBoard logging, the learning-rate log). Early
stopping's patience is set to the epoch count so both runs train every epoch. Runs alternate so
drifts in machine load hit both sides alike; the medians are compared.

    python benchmarks/overhead.py [--epochs 20] [--repeats 5]
"""

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.digits import RECIPE  # noqa: E402
from workbench.context import RunContext, RunDir  # noqa: E402
from workbench.data import load_digits  # noqa: E402
from workbench.recipe import apply_overrides  # noqa: E402
from workbench.stages.train import build_model, fit  # noqa: E402


def plain_fit(recipe, data):
    import keras_tuner

    keras.utils.set_random_seed(recipe.seed)
    model = build_model(recipe, keras_tuner.HyperParameters(), data.info)
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss=recipe.loss,
                  metrics=list(recipe.metrics))
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, batch_size=recipe.batch_size, epochs=recipe.epochs,
              validation_data=(data.x_val, data.y_val), verbose=0)
    return time.perf_counter() - start


def workbench_fit(recipe, data):
    keras.utils.set_random_seed(recipe.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(recipe=recipe, run_dir=RunDir(tmp), verbose=0, data=data,
                         strategy=tf.distribute.get_strategy())
        start = time.perf_counter()
        fit(ctx, backup=True)
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/overhead.json")
    args = parser.parse_args()

    recipe = apply_overrides(RECIPE, [f"epochs={args.epochs}",
                                      f"early_stopping.patience={args.epochs}"])
    data = load_digits(seed=recipe.seed)
    steps = math.ceil(len(data.x_train) / recipe.batch_size) * recipe.epochs
    times = {"plain model.fit": [], "workbench train stage": []}
    for repeat in range(args.repeats):
        times["plain model.fit"].append(plain_fit(recipe, data))
        times["workbench train stage"].append(workbench_fit(recipe, data))
        print(f"repeat {repeat + 1}/{args.repeats}: plain {times['plain model.fit'][-1]:.2f} s, "
              f"workbench {times['workbench train stage'][-1]:.2f} s", flush=True)

    rates = {name: steps / float(np.median(values)) for name, values in times.items()}
    ratio = rates["workbench train stage"] / rates["plain model.fit"]
    print(f"\ndigits CNN, {recipe.epochs} epochs x {steps // recipe.epochs} steps, batch "
          f"{recipe.batch_size}, median of {args.repeats} alternating runs, "
          f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})")
    print(f"{'':24s} {'median s':>9s} {'steps/s':>9s}")
    for name, values in times.items():
        print(f"{name:24s} {np.median(values):9.2f} {rates[name]:9.1f}")
    print(f"{'ratio (workbench/plain)':24s} {'':9s} {ratio:9.3f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epochs": recipe.epochs, "steps": steps, "seconds": times,
                               "steps_per_second": rates, "ratio": ratio,
                               "cpu_count": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
