"""Throughput of the workbench's train stage versus a plain `model.fit`, side by side.

All train the digits recipe's CNN on the same split, batch size and number of epochs:
- plain `model.fit` on the workbench's `tf.data` pipeline (shuffled, batched, prefetched): the
  headline comparison, same model, same input, no callbacks;
- the same, with the variables created before `fit` as the train stage does: what the train
  stage's callbacks alone cost;
- plain `model.fit(x, y, validation_data=...)` on NumPy arrays, as a user writes it by hand;
- `workbench.training.fit`, with everything the train stage adds: backups for `--resume`,
  early stopping with best-weight tracking and NaN detection, learning rate on plateau,
  TensorBoard logging, the learning-rate log and the per-epoch CSV history.
Early stopping's patience is set to the epoch count so every run trains every epoch. Runs
alternate so drifts in machine load hit all sides alike; the medians are compared. The headline
ratio isolates what the train stage costs on the same input; the NumPy comparison mostly
measures the input pipeline. The train stage creates the model's, metrics' and optimizer's
variables before its first step (plain `fit` creates them while tracing it), so the first epoch
favours it; the steady-state ratio (epochs 2 and later, from epoch-end timestamps) shows the
per-step cost of its callbacks alone.

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
from workbench.components import build_before_fit  # noqa: E402
from workbench.context import RunContext, RunDir  # noqa: E402
from workbench.tasks import task_of  # noqa: E402
from workbench.data.arrays import load_digits  # noqa: E402
from workbench.recipe import apply_overrides  # noqa: E402
from workbench.builders import build_model  # noqa: E402
from workbench.training import fit  # noqa: E402
from workbench.supervised import compile_args  # noqa: E402


class EpochClock(keras.callbacks.Callback):
    """Wall-clock time at the end of every epoch (steady state: epoch 1's end to the last's)."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())

    def steady_seconds(self):
        return self.ends[-1] - self.ends[0]


def arrays(dataset):
    x, y = zip(*dataset.as_numpy_iterator())
    return np.stack(x), np.stack(y)


def compiled_model(recipe, data):
    import keras_tuner

    keras.utils.set_random_seed(recipe.seed)
    model = build_model(recipe, keras_tuner.HyperParameters(), data.info)
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate),
                  **compile_args(recipe))
    return model


def plain_fit(recipe, data):
    model = compiled_model(recipe, data)
    (x, y), validation = arrays(data.train), arrays(data.val)
    clock = EpochClock()
    start = time.perf_counter()
    model.fit(x, y, batch_size=recipe.batch_size, epochs=recipe.epochs,
              validation_data=validation, verbose=0, callbacks=[clock])
    return time.perf_counter() - start, clock.steady_seconds()


def plain_fit_on_dataset(recipe, data, build_first=False):
    """The same plain fit fed by the workbench's tf.data pipeline: isolates what the
    workbench's callbacks cost from what its input pipeline saves. With `build_first`, the
    variables are created before `fit` as the train stage does (`build_before_fit`)."""
    model = compiled_model(recipe, data)
    train = data.batches("train", recipe.batch_size, shuffle=True, seed=recipe.seed)
    val = data.batches("val", recipe.batch_size)
    if build_first:
        build_before_fit(model, train)
    clock = EpochClock()
    start = time.perf_counter()
    model.fit(train, epochs=recipe.epochs, validation_data=val, verbose=0, shuffle=False,
              callbacks=[clock])
    return time.perf_counter() - start, clock.steady_seconds()


def workbench_fit(recipe, data):
    keras.utils.set_random_seed(recipe.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(recipe=recipe, run_dir=RunDir(tmp), verbose=0, data=data,
                         strategy=tf.distribute.get_strategy(), task=task_of(data))
        clock = EpochClock()
        start = time.perf_counter()
        fit(ctx, extra_callbacks=[clock], backup=True)
        return time.perf_counter() - start, clock.steady_seconds()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/overhead.json")
    args = parser.parse_args()

    recipe = apply_overrides(RECIPE, [f"epochs={args.epochs}",
                                      f"early_stopping.patience={args.epochs}",
                                      "task=multiclass"])
    data = load_digits(seed=recipe.seed)
    steps = math.ceil(data.info.sizes["train"] / recipe.batch_size) * recipe.epochs
    contenders = {"plain fit on tf.data": plain_fit_on_dataset,
                  "  the same, variables built first": lambda r, d: plain_fit_on_dataset(
                      r, d, build_first=True),
                  "plain model.fit": plain_fit, "workbench train stage": workbench_fit}
    times = {name: [] for name in contenders}
    steady = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        for name, run in contenders.items():
            whole, later_epochs = run(recipe, data)
            times[name].append(whole)
            steady[name].append(later_epochs)
        print(f"repeat {repeat + 1}/{args.repeats}: "
              + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in times.items()),
              flush=True)

    rates = {name: steps / float(np.median(values)) for name, values in times.items()}
    steady_rates = {name: steps * (recipe.epochs - 1) / recipe.epochs / float(np.median(values))
                    for name, values in steady.items()}
    ratio = rates["workbench train stage"] / rates["plain model.fit"]
    same_input = rates["workbench train stage"] / rates["plain fit on tf.data"]
    steady_same_input = (steady_rates["workbench train stage"]
                         / steady_rates["plain fit on tf.data"])
    built_first = "  the same, variables built first"
    same_input_built = rates["workbench train stage"] / rates[built_first]
    steady_built = steady_rates["workbench train stage"] / steady_rates[built_first]
    print(f"\ndigits CNN, {recipe.epochs} epochs x {steps // recipe.epochs} steps, batch "
          f"{recipe.batch_size}, median of {args.repeats} alternating runs, "
          f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})")
    print(f"{'':36s} {'median s':>9s} {'steps/s':>9s} {'epochs 2+ s':>12s} {'steps/s':>9s}")
    for name, values in times.items():
        print(f"{name:36s} {np.median(values):9.2f} {rates[name]:9.1f} "
              f"{np.median(steady[name]):12.2f} {steady_rates[name]:9.1f}")
    print(f"{'ratio workbench / plain fit on tf.data':40s} {same_input:6.3f}  (headline: same input)")
    print(f"{'  the same, epochs 2+ only':40s} {steady_same_input:6.3f}  (steady state: without "
          f"the first epoch's tracing)")
    print(f"{'ratio workbench / plain fit, built first':40s} {same_input_built:6.3f}  (callbacks "
          f"alone; epochs 2+: {steady_built:.3f})")
    print(f"{'ratio workbench / plain fit on NumPy':40s} {ratio:6.3f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epochs": recipe.epochs, "steps": steps, "seconds": times,
                               "steps_per_second": rates, "ratio": ratio,
                               "ratio_same_input": same_input,
                               "steady_seconds": steady, "steady_steps_per_second": steady_rates,
                               "ratio_same_input_steady": steady_same_input,
                               "ratio_built_first": same_input_built,
                               "ratio_built_first_steady": steady_built,
                               "cpu_count": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
