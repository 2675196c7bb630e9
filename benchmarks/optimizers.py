"""The workbench optimizers side by side with Keras' Adam and ScheduleFreeAdamW.

(a) Cost: time per training step of each workbench optimizer and of Keras Adam
    on the same model (the digits CNN below, batch 128), with `jit_compile` off
    and on. Each timed sample is a block of 20 steps (two root refreshes for
    Shampoo with `precondition_every=10`, so its amortised cost is included);
    samples of all optimizers are interleaved so that drifts in machine load hit
    them alike, and the median per-step time is reported with its ratio to Adam.
(b) Speed of convergence, median over seeds:
    - steps to reach a validation accuracy on a small CNN on scikit-learn's digits
      (8x8x1 images scaled to [0, 1], 1397 train / 400 validation, batch 32,
      accuracy checked every 10 steps);
    - steps to reach a relative loss on an ill-conditioned least-squares problem
      (min_W ||X W - Y||^2, X of 512 x 32 with singular values spread so that the
      Hessian X^T X / n has condition number 1e4, in a random basis; full batch).
    Contenders: Keras Adam at its default rate, Adam with the rate tuned on a
    small grid, Keras ScheduleFreeAdamW at its default, Shampoo at its default
    and tuned on the same grid, and the best of the workbench candidates
    (`WORKBENCH_CANDIDATES`). Tuning picks the rate with the fewest median steps
    on the reported seeds, so tuned numbers are slightly optimistic for every
    tuned contender alike.

    python benchmarks/optimizers.py [--quick] [--out benchmarks/results/optimizers.json]

(c) Every backend: `--backend jax` (or `torch`, `tensorflow`) times one training step of each
    optimizer and of Keras' AdamW through Keras' own trainer (`train_on_batch`: a jitted step
    on JAX, eager on PyTorch, a `tf.function` on TensorFlow) on that backend alone;
    `--backend all` runs that for each installed backend in its own process and prints the
    ratios to AdamW side by side. `--only soap,shampoo` keeps the optimizers whose names start
    with those words (AdamW, the reference, always runs). SOAP's steps are also timed one by one,
    split into the steps that refresh its eigenbases (one in 10) and the others, to show the
    refresh's cost is paid only on its own steps. (a) and (b) drive TensorFlow directly and
    need it.

    python benchmarks/optimizers.py --backend all [--quick] [--only soap,shampoo]
        [--out .../optimizers_backends.json]

Prints the tables and writes them as JSON. Timings on a shared machine are noisy.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _requested_backend(argv):
    """The `--backend` value, read before Keras is imported (Keras fixes it at import)."""
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return None


BACKENDS = ("tensorflow", "jax", "torch")
_BACKEND = _requested_backend(sys.argv[1:])
if _BACKEND in BACKENDS:
    os.environ["KERAS_BACKEND"] = _BACKEND

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.optimizers import LARS  # noqa: E402
from workbench.optimizers import AdaBelief  # noqa: E402
from workbench.optimizers import GradientNoise  # noqa: E402
from workbench.optimizers import Lookahead  # noqa: E402
from workbench.optimizers import Prodigy  # noqa: E402
from workbench.optimizers import RAdam  # noqa: E402
from workbench.optimizers import SOAP  # noqa: E402
from workbench.optimizers import Shampoo  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "optimizers.json"
TIMED = {
    "Adam (Keras)": lambda: keras.optimizers.Adam(),
    "AdamW (Keras)": lambda: keras.optimizers.AdamW(),
    "AdaBelief": lambda: AdaBelief(),
    "RAdam": lambda: RAdam(),
    "LARS": lambda: LARS(),
    "Prodigy": lambda: Prodigy(),
    "Lookahead(Adam)": lambda: Lookahead(keras.optimizers.Adam()),
    "GradientNoise(Adam)": lambda: GradientNoise(keras.optimizers.Adam(), seed=0),
    "Shampoo (every 10, blocks of 128)": lambda: Shampoo(precondition_every=10),
    "Shampoo (every 10, one block)": lambda: Shampoo(
        precondition_every=10, block_size=None
    ),
    "SOAP (every 10)": lambda: SOAP(precondition_every=10),
}
TIME_TARGETS = {name: 1.15 for name in TIMED if not name.startswith("Shampoo")}
TIME_TARGETS.update({name: 2.0 for name in TIMED if name.startswith("Shampoo")})
TIME_TARGETS.pop("SOAP (every 10)")  # measured, no target set yet
TIME_TARGETS.pop("Adam (Keras)")
TIME_TARGETS.pop("AdamW (Keras)")
REFERENCE = "AdamW (Keras)"  # (c)'s ratios are to it
DEFAULT_BACKENDS_OUT = Path(__file__).resolve().parent / "results" / "optimizers_backends.json"


# --- problems ----------------------------------------------------------------


def digits_split():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    val, train = order[:400], order[400:]
    return x[train], y[train], x[val], y[val]


def digits_cnn(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def least_squares(seed, condition_number, rows=512, inputs=32, outputs=8):
    """X with Hessian X^T X / rows of the given condition number, Y = X W*."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, inputs)))
    v, _ = np.linalg.qr(rng.normal(size=(inputs, inputs)))
    singular = np.logspace(0, -0.5 * math.log10(condition_number), inputs)
    x = math.sqrt(rows) * u @ np.diag(singular) @ v.T
    y = x @ rng.normal(size=(inputs, outputs))
    return x.astype("float32"), y.astype("float32")


# --- runs ----------------------------------------------------------------------


def steps_to_accuracy(make_optimizer, seed, data, target, max_steps, batch=32):
    """Steps until validation accuracy >= target (None if never), and the best."""
    x_train, y_train, x_val, y_val = data
    model = digits_cnn(seed)
    optimizer = make_optimizer(max_steps)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(seed)
    epochs = max_steps * batch // len(x_train) + 1
    order = np.concatenate([rng.permutation(len(x_train)) for _ in range(epochs)])
    order = tf.constant(order, dtype=tf.int32)
    xs, ys = tf.constant(x_train), tf.constant(y_train)
    xv, yv = tf.constant(x_val), tf.constant(y_val)

    @tf.function
    def train(first, count):
        loss = tf.constant(0.0)
        for i in tf.range(count):
            index = order[(first + i) * batch : (first + i + 1) * batch]
            with tf.GradientTape() as tape:
                logits = model(tf.gather(xs, index), training=True)
                loss = loss_fn(tf.gather(ys, index), logits)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function
    def accuracy():
        predicted = tf.argmax(model(xv), axis=-1, output_type=tf.int32)
        return tf.reduce_mean(tf.cast(predicted == yv, tf.float32))

    best, done, every = 0.0, 0, 10
    while done < max_steps:
        loss = float(train(tf.constant(done), tf.constant(every)))
        done += every
        best = max(best, float(accuracy()))
        if best >= target:
            return {"steps": done, "best_accuracy": best}
        # A run still at chance after a third of the budget has diverged.
        if not math.isfinite(loss) or (done >= max_steps // 3 and best < 0.2):
            break
    return {"steps": None, "best_accuracy": best}


def steps_to_loss(make_optimizer, seed, condition_number, target, max_steps, chunk=25):
    """Steps until loss / initial loss <= target (None if never), and the last."""
    x, y = least_squares(seed, condition_number)
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Dense(y.shape[1], use_bias=False)
    layer.build((None, x.shape[1]))
    optimizer = make_optimizer(max_steps)
    optimizer.build(layer.trainable_variables)
    x, y = tf.constant(x), tf.constant(y)

    def loss_fn():
        return tf.reduce_mean(tf.square(layer(x) - y))

    @tf.function
    def train(count):
        losses = tf.TensorArray(tf.float32, size=count)
        for i in tf.range(count):
            with tf.GradientTape() as tape:
                loss = loss_fn()
            grads = tape.gradient(loss, layer.trainable_variables)
            optimizer.apply(grads, layer.trainable_variables)
            losses = losses.write(i, loss)
        return losses.stack()

    initial = float(loss_fn())
    done = 0
    while done < max_steps:
        relative = train(tf.constant(chunk)).numpy() / initial
        reached = np.nonzero(relative <= target)[0]
        if len(reached):
            return {"steps": done + int(reached[0]), "relative_loss": float(relative[reached[0]])}
        done += chunk
        if not np.isfinite(relative[-1]):
            break
    return {"steps": None, "relative_loss": float(relative[-1])}


def step_times(jit_compile, rounds, block=20, batch=128):
    """Median ms per training step of every `TIMED` optimizer, interleaved."""
    x_train, y_train, _, _ = digits_split()
    x, y = tf.constant(x_train[:batch]), tf.constant(y_train[:batch])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = {}
    for name, make in TIMED.items():
        model, optimizer = digits_cnn(0), make()
        optimizer.build(model.trainable_variables)

        def step(model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        steps[name] = tf.function(step, jit_compile=jit_compile)
        for _ in range(block):  # compile, and get Shampoo past its first roots
            steps[name]()
        float(steps[name]())
    samples = {name: [] for name in TIMED}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(block):
                loss = step()
            float(loss)
            samples[name].append((time.perf_counter() - start) / block * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def selected_names(only):
    """The `TIMED` names that start with one of the comma-separated words, and AdamW."""
    if not only:
        return list(TIMED)
    words = [word.strip().lower() for word in only.split(",") if word.strip()]
    names = [n for n in TIMED if n == REFERENCE or any(n.lower().startswith(w) for w in words)]
    if names == [REFERENCE] and words != ["adamw"]:
        raise SystemExit(f"--only {only!r} names no optimizer; the names are: {', '.join(TIMED)}")
    return names


def compiled_digits_model(optimizer):
    model = digits_cnn(0)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # XLA on TensorFlow, as on JAX; PyTorch runs eagerly either way.
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


def trainer_step_times(rounds, names=None, block=20, batch=128):
    """Median ms per `train_on_batch` of the `TIMED` optimizers on the current backend.

    Keras' own trainer compiles the step the way the backend does (jit on JAX, a
    `tf.function` on TensorFlow, eager on PyTorch), so this is what a `fit` user pays.
    """
    names = names or list(TIMED)
    x_train, y_train, _, _ = digits_split()
    x, y = x_train[:batch], y_train[:batch]
    models = {}
    for name in names:
        model = compiled_digits_model(TIMED[name]())
        for _ in range(block):  # compile, and get Shampoo past its first roots
            model.train_on_batch(x, y)
        models[name] = model
    samples = {name: [] for name in names}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(block):
                loss = model.train_on_batch(x, y)
            float(np.asarray(loss))
            samples[name].append((time.perf_counter() - start) / block * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def soap_refresh_split(rounds, every=10, batch=128):
    """SOAP's `train_on_batch` steps timed one by one: median ms of the steps that refresh the
    eigenbases (power iteration + QR) and of the others, and their amortised mean."""
    x_train, y_train, _, _ = digits_split()
    x, y = x_train[:batch], y_train[:batch]
    model = compiled_digits_model(SOAP(precondition_every=every))
    for _ in range(2 * every):
        model.train_on_batch(x, y)
    refresh, other = [], []
    for _ in range(max(rounds, 3) * every):
        # The step refreshes when `iterations` (before it) is a multiple of `every`.
        iteration = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        start = time.perf_counter()
        # The loss comes back with the whole compiled step (optimizer update included).
        float(np.asarray(model.train_on_batch(x, y)))
        (other if iteration % every else refresh).append((time.perf_counter() - start) * 1000)
    refresh_ms, other_ms = statistics.median(refresh), statistics.median(other)
    return {"every": every, "refresh_step_ms": refresh_ms, "other_step_ms": other_ms,
            "amortised_ms": (refresh_ms + (every - 1) * other_ms) / every,
            "refresh_steps": len(refresh), "other_steps": len(other)}


def backend_details():
    backend = keras.backend.backend()
    details = {"backend": backend, "keras": keras.__version__}
    if backend == "jax":
        import jax

        details.update(jax=jax.__version__, device=str(jax.devices()[0]))
    elif backend == "torch":
        import torch

        details.update(torch=torch.__version__)
    else:
        details.update(tensorflow=tf.__version__)
    if any(name.startswith("Shampoo") for name in TIMED):
        probe = Shampoo()
        probe.build([keras.Variable(np.zeros((2, 2), "float32"))])
        details["shampoo_root"] = probe.root_method_in_use
    return details


def one_backend_result(rounds, names):
    result = {"details": backend_details(), "step_time_ms": trainer_step_times(rounds, names)}
    if "SOAP (every 10)" in names:
        result["soap_refresh_split"] = soap_refresh_split(rounds)
    return result


def run_one_backend(rounds, names):
    """(c) for the backend of this process, as one JSON line on stdout."""
    print(json.dumps(one_backend_result(rounds, names)))


def print_soap_split(results):
    """SOAP's refresh steps against its other steps, one line per backend."""
    splits = {b: r["soap_refresh_split"] for b, r in results.items() if "soap_refresh_split" in r}
    if not splits:
        return
    print("\n    SOAP (every 10), steps timed one by one (median ms; x AdamW's step):")
    print(f"{'backend':14s}{'refresh step':>14s}{'other steps':>13s}{'amortised':>11s}"
          f"{'x AdamW':>9s}")
    for backend, split in splits.items():
        adamw = results[backend]["step_time_ms"][REFERENCE]
        print(f"{backend:14s}{split['refresh_step_ms']:14.2f}{split['other_step_ms']:13.2f}"
              f"{split['amortised_ms']:11.2f}{split['amortised_ms'] / adamw:9.2f}")


def run_all_backends(args):
    """(c) for each installed backend, each in its own process, side by side."""
    import importlib.util
    import subprocess

    module_of = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    results, skipped = {}, []
    for backend in BACKENDS:
        if importlib.util.find_spec(module_of[backend]) is None:
            skipped.append(backend)
            continue
        command = [sys.executable, __file__, "--backend", backend, "--one-backend"]
        if args.quick:
            command.append("--quick")
        if args.only:
            command += ["--only", args.only]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True,
                              env=dict(os.environ, KERAS_BACKEND=backend))
        if done.returncode != 0:
            raise SystemExit(f"{backend} run failed:\n{done.stderr[-3000:]}")
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
        results[backend]["seconds"] = time.perf_counter() - started
    print("\n(c) time per training step through Keras' trainer (train_on_batch), digits CNN, "
          "batch 128, CPU;\n    ms and ratio to Keras AdamW on the same backend "
          "(median of interleaved 20-step blocks; shared machine, noisy)")
    print(f"{'optimizer':36s}" + "".join(f"{b + ' ms':>16s}{'x AdamW':>9s}" for b in results))
    for name in selected_names(args.only):
        row = f"{name:36s}"
        for backend, result in results.items():
            times = result["step_time_ms"]
            row += f"{times[name]:16.2f}{times[name] / times[REFERENCE]:9.2f}"
        print(row)
    print_soap_split(results)
    roots = ", ".join(f"{b}: {r['details'].get('shampoo_root')}" for b, r in results.items())
    print(f"  Shampoo's inverse roots: {roots} (eigh = float64 eigendecomposition, "
          "newton = float32 coupled Newton).")
    if skipped:
        print(f"  not installed, skipped: {', '.join(skipped)}")
    out = args.out if args.out != DEFAULT_OUT else DEFAULT_BACKENDS_OUT
    write_json(out, {
        "quick": args.quick,
        "only": args.only,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "backends": results,
        "skipped": skipped,
    })
    print(f"wrote {out}")


# --- contenders ------------------------------------------------------------------


def constant_rate(make):
    return lambda max_steps: make()


def adam(rate):
    return constant_rate(lambda: keras.optimizers.Adam(rate))


def shampoo(rate, **options):
    return constant_rate(lambda: Shampoo(rate, **options))


WORKBENCH_CANDIDATES = {
    # name -> (factory of (rate, max_steps) or of max_steps, rate grid or None)
    "Shampoo": (lambda rate, n: Shampoo(rate), "grid"),
    "Shampoo p=2": (lambda rate, n: Shampoo(rate, exponent_override=2), "grid"),
    "Prodigy": (lambda n: Prodigy(), None),
    "Prodigy + cosine": (
        lambda n: Prodigy(keras.optimizers.schedules.CosineDecay(1.0, n)),
        None,
    ),
    "AdaBelief": (lambda rate, n: AdaBelief(rate), "adam"),
    "RAdam": (lambda rate, n: RAdam(rate), "adam"),
    "Lookahead(Adam)": (lambda rate, n: Lookahead(keras.optimizers.Adam(rate)), "adam"),
    "GradientNoise(Adam)": (
        lambda rate, n: GradientNoise(keras.optimizers.Adam(rate), seed=0),
        "adam",
    ),
    "LARS": (lambda rate, n: LARS(rate), (0.3, 1.0, 3.0)),
}


def median_steps(results):
    steps = [r["steps"] if r["steps"] is not None else math.inf for r in results]
    return statistics.median(steps)


def evaluate(run, make, seeds):
    results = [run(make, seed) for seed in seeds]
    return {"median_steps": median_steps(results), "runs": results}


def tune(run, make_for_rate, grid, seeds):
    """The rate of `grid` with the fewest median steps, and every result."""
    tried = {rate: evaluate(run, make_for_rate(rate), seeds) for rate in grid}
    best = min(grid, key=lambda rate: (tried[rate]["median_steps"], grid.index(rate)))
    return best, tried


def with_grid(rate, tried):
    """The tuned result, with the median steps of every rate tried."""
    grid = {f"{r:g}": t["median_steps"] for r, t in tried.items()}
    return dict(tried[rate], rate=rate, grid=grid)


def compare(run, grid, seeds):
    table = {}
    table["Adam, default rate 1e-3"] = evaluate(run, adam(1e-3), seeds)
    adam_rate, tried = tune(run, adam, grid, seeds)
    table[f"Adam, tuned rate {adam_rate:g}"] = with_grid(adam_rate, tried)
    table["ScheduleFreeAdamW, default"] = evaluate(
        run, constant_rate(keras.optimizers.ScheduleFreeAdamW), seeds
    )
    table["Shampoo, default rate 1e-3"] = evaluate(run, shampoo(1e-3), seeds)

    candidates = {}
    for name, (factory, rates) in WORKBENCH_CANDIDATES.items():
        if rates is None:
            candidates[name] = evaluate(run, factory, seeds)
            continue
        rates = grid if rates == "grid" else [adam_rate] if rates == "adam" else list(rates)
        rate, tried = tune(
            run, lambda r, f=factory: (lambda n: f(r, n)), rates, seeds
        )
        candidates[f"{name}, rate {rate:g}"] = with_grid(rate, tried)
    shampoo_name = next(name for name in candidates if name.startswith("Shampoo,"))
    table[f"{shampoo_name} (tuned)"] = candidates[shampoo_name]
    best = min(candidates, key=lambda name: candidates[name]["median_steps"])
    table[f"best workbench: {best}"] = candidates[best]
    return table, candidates


# --- output ----------------------------------------------------------------------


def show_steps(value, limit):
    return f">{limit}" if value == math.inf else f"{value:g}"


def print_timing(times_by_mode):
    modes = list(times_by_mode)
    print("\n(a) time per training step, digits CNN, batch 128 "
          "(median of interleaved 20-step blocks; shared machine, noisy)")
    header = f"{'optimizer':36s}" + "".join(f"{m + ' ms':>14s}{'x Adam':>8s}" for m in modes)
    print(header + f"{'target':>9s}")
    for name in TIMED:
        row = f"{name:36s}"
        for mode in modes:
            times = times_by_mode[mode]
            row += f"{times[name]:14.2f}{times[name] / times['Adam (Keras)']:8.2f}"
        target = TIME_TARGETS.get(name)
        print(row + (f"{'<= ' + str(target):>9s}" if target else ""))
    print(
        "  Shampoo's refreshes are float64 eigendecompositions (512x512 for the dense"
        " layer unless blocked);\n  under XLA on CPU they use XLA's own eigh, far"
        " slower than LAPACK's, hence the XLA column."
    )


def print_convergence(title, table, candidates, limit, metric):
    print(f"\n{title}")
    print(f"{'contender':52s}{'median steps':>14s}  per seed (steps / {metric})")
    for name, result in table.items():
        runs = ", ".join(
            f"{show_steps(r['steps'] if r['steps'] is not None else math.inf, limit)}/{r[metric]:.3g}"
            for r in result["runs"]
        )
        print(f"{name:52s}{show_steps(result['median_steps'], limit):>14s}  {runs}")
    for name, result in table.items():
        if "grid" in result:
            grid = ", ".join(f"{r}: {show_steps(n, limit)}" for r, n in result["grid"].items())
            print(f"  {name.split(',')[0]} median steps by rate: {grid}")
    others = ", ".join(
        f"{name} {show_steps(r['median_steps'], limit)}" for name, r in candidates.items()
    )
    print(f"  all workbench candidates: {others}")


def finite_or_none(value):
    """JSON has no infinity: "never reached" (inf steps) becomes null."""
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(finite_or_none(payload), f, indent=2)
        temporary = f.name
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, smaller budgets")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--backend", choices=[*BACKENDS, "all"],
                        help="(c) only: step times on this backend, or on all side by side")
    parser.add_argument("--only", help="(c) only: comma-separated name prefixes, e.g. soap,shampoo")
    parser.add_argument("--one-backend", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.only and args.backend is None:
        parser.error("--only selects optimizers for --backend (part (c))")
    rounds = 3 if args.quick else 8
    if args.one_backend:
        return run_one_backend(rounds, selected_names(args.only))
    if args.backend == "all":
        return run_all_backends(args)
    if args.backend is not None:
        result = one_backend_result(rounds, selected_names(args.only))
        times = result["step_time_ms"]
        print(f"\n(c) {args.backend}: ms per train_on_batch step, and x AdamW")
        for name in times:
            print(f"{name:36s}{times[name]:10.2f}{times[name] / times[REFERENCE]:8.2f}")
        print_soap_split({args.backend: result})
        write_json(args.out.with_name(f"optimizers_{args.backend}.json"), result)
        return None

    seeds = [0] if args.quick else [0, 1, 2]
    digits_budget, squares_budget = (600, 1500) if args.quick else (1500, 3000)
    accuracy_target, loss_target, condition_number = 0.97, 1e-4, 1e4

    times = {"graph": step_times(False, rounds), "XLA": step_times(True, rounds)}
    print_timing(times)

    data = digits_split()

    def digits_run(make, seed):
        return steps_to_accuracy(make, seed, data, accuracy_target, digits_budget)

    def squares_run(make, seed):
        return steps_to_loss(make, seed, condition_number, loss_target, squares_budget)

    digits_table, digits_candidates = compare(
        digits_run, [3e-4, 1e-3, 3e-3, 1e-2, 3e-2], seeds
    )
    print_convergence(
        f"(b1) digits CNN: steps to validation accuracy >= {accuracy_target} "
        f"(budget {digits_budget}, seeds {seeds})",
        digits_table, digits_candidates, digits_budget, "best_accuracy",
    )
    squares_table, squares_candidates = compare(
        squares_run, [1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0], seeds
    )
    print_convergence(
        f"(b2) least squares, Hessian condition number {condition_number:g}: steps to "
        f"loss <= {loss_target:g} x initial (budget {squares_budget}, seeds {seeds})",
        squares_table, squares_candidates, squares_budget, "relative_loss",
    )

    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s on {os.cpu_count()} CPU(s); timings are from a shared machine.")
    write_json(
        args.out,
        {
            "quick": args.quick,
            "seeds": seeds,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "step_time_ms": times,
            "step_time_targets": TIME_TARGETS,
            "digits": {
                "target_accuracy": accuracy_target,
                "budget": digits_budget,
                "table": digits_table,
                "workbench_candidates": digits_candidates,
            },
            "least_squares": {
                "condition_number": condition_number,
                "target_relative_loss": loss_target,
                "budget": squares_budget,
                "table": squares_table,
                "workbench_candidates": squares_candidates,
            },
            "seconds": elapsed,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
