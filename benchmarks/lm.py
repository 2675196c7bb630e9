"""Language-model benchmarks on the `gpt` recipe's default configuration, side by side.

(a) Training throughput: tokens/s of the `train` stage's loop against a plain `model.fit` of the
    same compiled model on the same random-window batches (and nanoGPT's step in PyTorch, when
    PyTorch is installed), in interleaved rounds, median reported (`workbench.lm.throughput`).
(d) Achieved FLOP/s (tokens/s x model FLOPs/token, nanoGPT's count) against the machine's measured
    peak float32 matmul FLOP/s.
(b) Optimizer race: steps to reach validation loss 1.75 (nats/token) and the loss at the last
    step, for Keras AdamW, Muon, Lion and ScheduleFreeAdamW and the workbench's Shampoo and SOAP,
    each with its learning rate tuned on a small grid (`RACE_GRIDS`), median over seeds. Every
    contender trains the same model from the same initial weights on the same batches: nanoGPT's
    CPU configuration (4 layers, 4 heads, width 128, context 64, batch 12, dropout 0), 100 warm-up
    steps then cosine decay to a tenth of the rate, global gradient clipping at 1.0, decoupled
    weight decay 0.1 on every variable of rank >= 2 and none on the others (ScheduleFreeAdamW
    replaces the schedule by its own warm-up and averaging). Validation loss is measured every
    `--eval-every` steps on a fixed set of validation windows, so "steps to 1.75" is the first
    evaluation at or below it.
(e) Time to quality: the `gpt` recipe's train stage (`python -m workbench.run gpt`, each contender
    in its own process: the default recipe and `--set optimizer=adamw`, nanoGPT's settings) and a
    PyTorch reference in its own process (`benchmarks/lm_reference.py`: nanoGPT's `train.py` from
    a `--nanogpt DIR` checkout, else the project's re-implementation of it), all on the `stdlib`
    byte corpus: training tokens/s, the whole-validation loss at the end, and the training
    wall-clock (compilation included, validation left out and timed on its own) until the loss
    on `--eval-windows` fixed validation windows, measured every `--eval-interval` steps, first
    reaches `--target` (default: the reference's final loss on those windows).
(f) AdamW agreement across seeds: for each of `--seeds` in turn, the PyTorch re-implementation
    of nanoGPT (`lm_reference.py --seed N`) and `gpt --set optimizer=adamw --set seed=N`, each in
    its own process: the final loss over the whole validation split and training tokens/s, with
    the medians, means and seed-to-seed spread of both.
(c) Quantization: Keras' `model.quantize` modes (int8, int4, GPTQ, AWQ) on a trained GPT,
    evaluated on the same validation windows: weight bytes, validation loss, perplexity,
    generation tokens/s (see `workbench.lm.compress`).

    python benchmarks/lm.py --parts a,d [--throughput-steps 200] [--rounds 3]
    python benchmarks/lm.py --parts b [--steps 2000] [--seeds 0,1,2] [--tune-seeds 0]
                            [--optimizers adamw,soap] [--step-rounds 3] [--runs-from FILE]
                            [--step-times-only]
                            [--out benchmarks/results/lm.json]
    python benchmarks/lm.py --parts c --model RUN/model.keras
    python benchmarks/lm.py --parts e [--nanogpt DIR] [--steps 2000] [--eval-interval 100]
                            [--contender NAME="--set k=v ..."] [--target LOSS]
    python benchmarks/lm.py --parts f [--seeds 0,1,2] [--steps 2000]

Prints the tables and writes them as JSON (each part under its own key); part b also plots its
validation curves next to the JSON (`lm.png` for `lm.json`).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from workbench.optimizers import SOAP, Shampoo  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lm.json"
TARGET_LOSS = 1.75
CONTEXT = 64
BATCH = 12
WARMUP_STEPS = 100
WEIGHT_DECAY = 0.1
VALIDATION_WINDOWS = 512


def _race_optimizers():
    """name -> fn(learning rate as a float or schedule) -> optimizer."""
    opt = keras.optimizers
    return {
        "adamw": lambda lr: opt.AdamW(lr, beta_2=0.99, weight_decay=WEIGHT_DECAY,
                                      global_clipnorm=1.0),
        "muon": lambda lr: opt.Muon(lr, adam_beta_2=0.99, weight_decay=WEIGHT_DECAY,
                                    adam_weight_decay=WEIGHT_DECAY, global_clipnorm=1.0),
        # Lion's steps are sign-sized: the rate 3-10x smaller, the decay as much larger.
        "lion": lambda lr: opt.Lion(lr, beta_2=0.99, weight_decay=WEIGHT_DECAY * 10,
                                    global_clipnorm=1.0),
        "schedule_free_adamw": lambda lr: opt.ScheduleFreeAdamW(
            lr, beta_2=0.99, warmup_steps=WARMUP_STEPS, weight_decay=WEIGHT_DECAY,
            global_clipnorm=1.0),
        # The coupled Newton roots: under XLA on a CPU the float64 `eigh` of the default roots
        # makes a step cost about 9x AdamW's, the Newton iteration about 2x.
        "shampoo": lambda lr: Shampoo(lr, beta_2=0.99, weight_decay=WEIGHT_DECAY,
                                      global_clipnorm=1.0, root_method="newton"),
        "soap": lambda lr: SOAP(lr, beta_1=0.9, beta_2=0.99, weight_decay=WEIGHT_DECAY,
                                global_clipnorm=1.0),
        # SOAP with its eigenbasis refreshed 5x less often: the refresh amortised.
        "soap_every50": lambda lr: SOAP(lr, beta_1=0.9, beta_2=0.99, weight_decay=WEIGHT_DECAY,
                                        global_clipnorm=1.0, precondition_every=50),
    }


RACE_GRIDS = {
    "adamw": (1e-3, 2e-3, 4e-3),
    "muon": (2e-3, 4e-3, 8e-3),
    "lion": (1e-4, 3e-4, 1e-3),
    "schedule_free_adamw": (1e-3, 2e-3, 4e-3),
    "shampoo": (1e-3, 2e-3, 4e-3),
    "soap": (1e-3, 2e-3, 4e-3),
    "soap_every50": (1e-3, 2e-3, 4e-3),
}
SCHEDULE_FREE = {"schedule_free_adamw"}


def stdlib_corpus():
    """The `gpt` recipe's `stdlib` corpus as byte tokens: train = first 90%, validation = last 10%."""
    from workbench.lm.corpus import stdlib_bytes

    tokens = np.frombuffer(stdlib_bytes(), dtype=np.uint8).astype("int32")
    cut = int(len(tokens) * 0.9)
    return tokens[:cut], tokens[cut:]


def validation_windows(tokens, count, context=CONTEXT):
    """`count` non-overlapping windows of `context + 1` tokens spread evenly over `tokens`."""
    starts = np.linspace(0, len(tokens) - context - 1, count).astype("int64")
    return np.stack([tokens[s:s + context + 1] for s in starts])


def build_race_model(seed):
    """The `gpt` recipe's default model (`workbench.lm.model.build_gpt`), seeded."""
    from workbench.lm.model import build_gpt

    keras.utils.set_random_seed(seed)
    return build_gpt()


def _schedule(name, lr, steps):
    if name in SCHEDULE_FREE:
        return lr
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - WARMUP_STEPS), alpha=0.1, warmup_target=lr,
        warmup_steps=WARMUP_STEPS)


class _Evaluate(keras.callbacks.Callback):
    """Validation loss every `every` steps (with ScheduleFreeAdamW's averaged weights)."""

    def __init__(self, x, y, every):
        super().__init__()
        self.x, self.y, self.every, self.losses = x, y, every, []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            optimizer = self.model.optimizer
            swap = hasattr(optimizer, "swap_to_evaluation_weights") and hasattr(
                optimizer, "swap_to_training_weights")
            if swap:
                optimizer.swap_to_evaluation_weights(self.model.trainable_variables)
            loss = self.model.evaluate(self.x, self.y, batch_size=64, verbose=0)
            if swap:
                optimizer.swap_to_training_weights(self.model.trainable_variables)
            self.losses.append((step, float(loss)))


def _race_model(name, lr, seed, steps):
    """The race model compiled with contender `name` at rate `lr` (schedule over `steps`)."""
    model = build_race_model(seed)
    optimizer = _race_optimizers()[name](_schedule(name, lr, steps))
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    # Built eagerly, as the train stage does (`build_before_fit`): Keras' ScheduleFreeAdamW
    # copies the weights into its momentum in `build`, and that copy is lost when `fit` builds
    # it inside the traced step; its first step then sets every weight to about zero.
    optimizer.build(model.trainable_variables)
    return model


def _race_batches(train_tokens, seed, steps):
    """nanoGPT's random training windows, the same for every contender with this seed."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(train_tokens) - CONTEXT - 1, size=steps * BATCH)
    windows = train_tokens[starts[:, None] + np.arange(CONTEXT + 1)]
    return tf.data.Dataset.from_tensor_slices((windows[:, :-1], windows[:, 1:])).batch(BATCH)


def race_step_times(optimizers, steps=100, rounds=3, warmup_steps=20, log=print):
    """Each contender's training step on the race model, alone on the machine: the seconds of
    its first `fit` of `warmup_steps` steps (compilation included), then `rounds` interleaved
    rounds of `steps` steps (every contender once per round, so load drifts hit all alike).
    Returns {name: {"ms_per_step": median over rounds, "rounds_ms": [...],
    "compile_seconds": first fit minus its steps at the median step time}}."""
    train_tokens, _ = stdlib_corpus()
    models, first = {}, {}
    for name in optimizers:
        models[name] = _race_model(name, RACE_GRIDS.get(name, (1e-3,))[0], 0, 2000)
        start = time.perf_counter()
        models[name].fit(_race_batches(train_tokens, 0, warmup_steps), verbose=0)
        first[name] = time.perf_counter() - start
    rounds_ms = {name: [] for name in optimizers}
    for round_ in range(rounds):
        for name, model in models.items():
            batches = _race_batches(train_tokens, 1 + round_, steps)
            start = time.perf_counter()
            model.fit(batches, verbose=0)
            rounds_ms[name].append(1000 * (time.perf_counter() - start) / steps)
    result = {}
    for name, times in rounds_ms.items():
        ms = statistics.median(times)
        result[name] = {"ms_per_step": ms, "rounds_ms": times,
                        "compile_seconds": max(0.0, first[name] - warmup_steps * ms / 1000)}
        log(f"  {name:20s} {ms:7.1f} ms/step (rounds {', '.join(f'{t:.1f}' for t in times)}), "
            f"compile {result[name]['compile_seconds']:.1f} s", flush=True)
    return result


def race_run(name, lr, seed, steps, train_tokens, val, eval_every):
    """One contender, one rate, one seed: [(step, validation loss)] and seconds per step."""
    # The earlier contenders' models and traced steps would otherwise pile up in one process
    # (5.7 GB after 13 runs) and slow the later ones.
    keras.backend.clear_session()
    model = _race_model(name, lr, seed, steps)
    dataset = _race_batches(train_tokens, seed, steps)
    evaluate = _Evaluate(val[:, :-1], val[:, 1:], eval_every)
    start = time.perf_counter()
    model.fit(dataset.prefetch(4), epochs=1, verbose=0, callbacks=[evaluate])
    seconds = time.perf_counter() - start
    return evaluate.losses, seconds / steps


def steps_to(losses, target):
    return next((step for step, loss in losses if loss <= target), None)


def optimizer_race(optimizers=tuple(RACE_GRIDS), grids=None, seeds=(0, 1, 2), steps=2000,
                   eval_every=100, target=TARGET_LOSS, log=print, on_run=None, tune_seeds=None,
                   step_rounds=3, earlier_runs=(), step_times=None):
    """Part (b). For each optimizer, every rate on its grid runs `tune_seeds` (all `seeds` when
    None); the rate with the fewest median steps to `target` (ties and misses: lowest median
    final loss) is its tuned rate, which then also runs the remaining seeds; the table gives the
    medians over all `seeds` at the tuned rate. Wall-clock to the target is each contender's
    compilation plus its median steps to the target times its step time, both from
    `race_step_times` (run first, with `step_rounds` rounds; 0 takes `step_times` measured
    earlier, if any), so the comparison holds even if the machine's load drifts during the long
    race. Returns {"runs": [...],
    "table": [...], "step_times": {...}} ready for JSON; `on_run(runs)` sees the runs so far
    after each one (a long race keeps what it measured if it is stopped). A run in
    `earlier_runs` with the same optimizer, rate, seed, steps and evaluation interval is taken
    as it is instead of training again: a stopped race resumes, and a race split over several
    processes is put together (steps to the target do not depend on the step's speed)."""
    grids = dict(RACE_GRIDS, **(grids or {}))
    tune_seeds = tuple(seeds if tune_seeds is None else tune_seeds)
    step_times = dict(step_times or {})
    if step_rounds:
        log(f"step times, {step_rounds} interleaved rounds of 100 steps:", flush=True)
        step_times = race_step_times(optimizers, rounds=step_rounds, log=log)
    train_tokens, val_tokens = stdlib_corpus()
    val = validation_windows(val_tokens, VALIDATION_WINDOWS)
    runs, table = [], []

    earlier = {_run_key(run): run for run in earlier_runs
               if run["steps"] == steps and run.get("eval_every", eval_every) == eval_every}

    def run_one(name, lr, seed):
        kept = earlier.get((name, float(lr), seed))
        if kept is not None:
            losses, step_seconds, how = kept["losses"], kept["seconds_per_step"], "earlier run"
        else:
            losses, step_seconds = race_run(name, lr, seed, steps, train_tokens, val, eval_every)
            how = f"{step_seconds * 1000:.0f} ms/step"
        run = {"optimizer": name, "learning_rate": lr, "seed": seed, "steps": steps,
               "eval_every": eval_every, "losses": [tuple(pair) for pair in losses],
               "steps_to_target": steps_to(losses, target),
               "final_loss": losses[-1][1] if losses else None,
               "seconds_per_step": step_seconds}
        runs.append(run)
        if on_run is not None:
            on_run(runs)
        log(f"  {name:20s} lr {lr:.0e} seed {seed}: final {run['final_loss']:.4f} "
            f"steps to {target} {run['steps_to_target']}  {how}", flush=True)
        return run

    def summary(lr, results):
        reached = [r["steps_to_target"] for r in results]
        return {
            "learning_rate": lr,
            # A seed that misses the target counts as never reaching it (median over inf).
            "median_steps_to_target": _median_or_none(reached),
            "median_final_loss": statistics.median(r["final_loss"] for r in results),
            "median_ms_per_step": 1000 * statistics.median(
                r["seconds_per_step"] for r in results),
            "seeds": [r["seed"] for r in results]}

    def rank(row):
        return (row["median_steps_to_target"] or math.inf, row["median_final_loss"])

    for name in optimizers:
        tuned = {lr: [run_one(name, lr, seed) for seed in tune_seeds] for lr in grids[name]}
        best_lr = min(tuned, key=lambda lr: rank(summary(lr, tuned[lr])))
        rest = [seed for seed in seeds if seed not in tune_seeds]
        results = tuned[best_lr] + [run_one(name, best_lr, seed) for seed in rest]
        row = {"optimizer": name, **summary(best_lr, results), "grid": list(grids[name]),
               "grid_median_steps_to_target": {
                   str(lr): summary(lr, tuned[lr])["median_steps_to_target"] for lr in tuned}}
        timing = step_times.get(name)
        if timing and row["median_steps_to_target"]:
            row["seconds_to_target"] = (timing["compile_seconds"] + row["median_steps_to_target"]
                                        * timing["ms_per_step"] / 1000)
        table.append(row)
    _compare_to_adamw(table)
    return {"target_loss": target, "seeds": list(seeds), "tune_seeds": list(tune_seeds),
            "steps": steps, "eval_every": eval_every, "validation_windows": VALIDATION_WINDOWS,
            "table": table, "runs": runs, "step_times": step_times}


def _run_key(run):
    return run["optimizer"], float(run["learning_rate"]), int(run["seed"])


def earlier_race(paths):
    """What earlier `--out` files recorded of the race: (runs, a finished race's and a stopped
    one's; the contenders' step times, the last file winning)."""
    runs, times = [], {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        race = report.get("b_optimizer_race", {})
        runs += race.get("runs", []) + report.get("b_optimizer_race_runs_so_far", [])
        times.update(race.get("step_times", {}))
        times.update(report.get("b_race_step_times", {}))
    return runs, times


def _median_or_none(values):
    """The median where a None (never reached) counts as infinitely late; None if that is it."""
    median = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(median) else median


def _compare_to_adamw(table):
    """Adds each row's ratios to the AdamW row's steps and seconds to the target."""
    adamw = next((row for row in table if row["optimizer"] == "adamw"), None)
    if not adamw:
        return
    for row in table:
        if adamw["median_steps_to_target"] and row["median_steps_to_target"]:
            row["speedup_vs_adamw"] = adamw["median_steps_to_target"] / row[
                "median_steps_to_target"]
        if adamw.get("seconds_to_target") and row.get("seconds_to_target"):
            row["wall_clock_speedup_vs_adamw"] = (adamw["seconds_to_target"]
                                                  / row["seconds_to_target"])


def print_race(result):
    print(f"\n(b) optimizer race: steps to validation loss {result['target_loss']} "
          f"(evaluated every {result['eval_every']} steps on {result['validation_windows']} "
          f"windows), {result['steps']} steps, rate tuned on seeds "
          f"{result.get('tune_seeds', result['seeds'])}, median of seeds {result['seeds']}")
    step_times = result.get("step_times", {})
    print(f"{'optimizer':22s} {'tuned lr':>9s} {'steps to target':>16s} {'final loss':>11s} "
          f"{'vs AdamW':>9s} {'ms/step':>8s} {'compile s':>10s} {'s to target':>12s} "
          f"{'vs AdamW':>9s}")

    def ratio(value):
        return f"{value:.2f}x" if value else "-"

    for row in result["table"]:
        reached = row["median_steps_to_target"]
        timing = step_times.get(row["optimizer"], {})
        seconds = row.get("seconds_to_target")
        compile_seconds = f"{timing['compile_seconds']:.1f}" if timing else "-"
        print(f"{row['optimizer']:22s} {row['learning_rate']:9.0e} "
              f"{(str(int(reached)) if reached else 'not reached'):>16s} "
              f"{row['median_final_loss']:11.4f} {ratio(row.get('speedup_vs_adamw')):>9s} "
              f"{timing.get('ms_per_step', row['median_ms_per_step']):8.1f} "
              f"{compile_seconds:>10s} "
              f"{(f'{seconds:.1f}' if seconds else '-'):>12s} "
              f"{ratio(row.get('wall_clock_speedup_vs_adamw')):>9s}")


def plot_race(result, path):
    """Validation loss against steps for every contender at its tuned rate, one line per seed,
    with the target: the race at a glance. Written atomically to `path` (a .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, row in enumerate(result["table"]):
        seeds = [run for run in result["runs"] if run["optimizer"] == row["optimizer"]
                 and run["learning_rate"] == row["learning_rate"]]
        for number, run in enumerate(seeds):
            steps, losses = zip(*run["losses"])
            ax.plot(steps, losses, color=colors[index % len(colors)], linewidth=1,
                    label=(f"{row['optimizer']} (lr {row['learning_rate']:g})"
                           if number == 0 else None))
    ax.axhline(result["target_loss"], color="black", linestyle="--", linewidth=0.8,
               label=f"target {result['target_loss']}")
    ax.set(xlabel="step", ylabel="validation loss (nats/token)", ylim=(None, 3.0),
           title=f"optimizer race: tuned rates, seeds {result['seeds']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    fig.savefig(temp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(temp, path)


def quantization_table(model_path, windows=VALIDATION_WINDOWS, log=print):
    """Part (c): every `workbench.lm.compress` mode on a trained GPT."""
    from workbench.components import load_model
    from workbench.lm.compress import compare_quantization_modes

    model = load_model(model_path)
    train_tokens, val_tokens = stdlib_corpus()
    context = int(model.inputs[0].shape[1])
    val = validation_windows(val_tokens, windows, context)
    calibration = validation_windows(train_tokens, 128, context)
    return compare_quantization_modes(model, val, calibration, log=log)


def print_quantization(rows):
    from workbench.lm.compress import format_quantization_table

    print("\n(c) quantization (Keras model.quantize), same validation windows")
    print(format_quantization_table(rows))


def training_throughput(steps=200, rounds=3, log=print):
    """Part (a): the train stage vs plain `model.fit` (vs PyTorch nanoGPT), tokens/s."""
    from workbench.lm.corpus import load_corpus
    from lm_throughput import compare_training_throughput, default_settings

    recipe, settings = default_settings()
    corpus = load_corpus(recipe.data, context=settings.context)
    return compare_training_throughput(recipe, settings, corpus.train, corpus.val, steps=steps,
                                       rounds=rounds, log=log)


def print_throughput(result):
    speeds = result["median_tokens_per_second"]
    plain, reference = speeds["plain_fit"], speeds.get("pytorch_nanogpt")
    print("\n(a) training tokens/s (median of interleaved rounds)")
    print(f"{'contender':<28}{'tokens/s':>12}{'vs plain fit':>14}{'vs PyTorch':>12}")
    for name, speed in speeds.items():
        versus = f"{speed / reference:.2f}x" if reference else "-"
        print(f"{name:<28}{speed:>12,.0f}{speed / plain:>13.1%}{versus:>12}")


def flops_utilization(throughput=None, steps=200, log=print):
    """Part (d): achieved training FLOP/s against the measured peak matmul FLOP/s."""
    from lm_throughput import peak_matmul_flops

    throughput = throughput or training_throughput(steps=steps, rounds=1, log=log)
    peak = peak_matmul_flops()
    per_token = throughput["flops_per_token"]
    rows = [{"contender": name, "tokens_per_second": speed,
             "achieved_flops_per_second": speed * per_token,
             "fraction_of_peak": speed * per_token / peak}
            for name, speed in throughput["median_tokens_per_second"].items()]
    return {"peak_matmul_flops_per_second": peak, "flops_per_token": per_token, "rows": rows}


def print_flops(result):
    print(f"\n(d) achieved FLOP/s ({result['flops_per_token'] / 1e6:.2f} MFLOP/token) vs peak "
          f"matmul {result['peak_matmul_flops_per_second'] / 1e9:.1f} GFLOP/s")
    for row in result["rows"]:
        print(f"{row['contender']:<28}{row['tokens_per_second']:>12,.0f} tokens/s"
              f"{row['achieved_flops_per_second'] / 1e9:>10.1f} GFLOP/s"
              f"{row['fraction_of_peak']:>9.1%} of peak")


# (e)'s workbench contenders: name -> `--set` overrides of the `gpt` recipe.
TIME_TO_QUALITY_CONTENDERS = {
    "gpt (default)": [],
    "gpt --set optimizer=adamw": ["optimizer=adamw"],
    "gpt --set lm.steps=2000": ["lm.steps=2000"],
}


def _reference_run(folder, steps, eval_interval, eval_windows, nanogpt=None, log=print,
                   seed=None):
    command = [sys.executable, str(Path(__file__).with_name("lm_reference.py")),
               "--data", str(folder), "--out", str(folder / "reference.json"),
               "--steps", str(steps), "--eval-interval", str(eval_interval),
               "--eval-windows", str(eval_windows), "--threads", str(os.cpu_count() or 1)]
    if nanogpt:
        command += ["--nanogpt", str(nanogpt)]
    if seed is not None:
        command += ["--seed", str(seed)]
    _run_logged(command, log)
    return json.loads((folder / "reference.json").read_text())


def _run_logged(command, log, env=None):
    import subprocess

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.lstrip().startswith(("reference", "step ")):
            log("  " + line.rstrip(), flush=True)
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{''.join(lines[-30:])}")


def _workbench_run(folder, name, overrides, eval_interval, eval_windows, log=print):
    out = folder / f"run-{len(list(folder.glob('run-*')))}"
    command = [sys.executable, "-m", "workbench.run", "gpt", "--stages", "train,evaluate",
               "--out", str(out), "--set", f"lm.eval_interval={eval_interval}",
               "--set", f"lm.eval_windows={eval_windows}"]
    for item in overrides:
        command += ["--set", item]
    log(f"  {name}: python -m workbench.run gpt " + " ".join(
        f"--set {item}" for item in overrides), flush=True)
    _run_logged(command, log)
    report = json.loads((out / "report.json").read_text())
    train, evaluate = report["stages"]["train"], report["stages"]["evaluate"]
    return {"contender": name, "overrides": list(overrides), "eval_steps": train["eval_steps"],
            "val_loss": report["history"]["val_loss"],
            "train_seconds_at_eval": train["eval_train_seconds"],
            "train_seconds": train["training_seconds"],
            "validation_seconds": train["validation_seconds"],
            "tokens_per_second": train["tokens_per_second"],
            "tokens_per_step": train["tokens_per_step"],
            "final_val_loss": evaluate["val_loss"], "steps": train["steps"]}


def _first_reaching(row, target):
    for step, loss, seconds in zip(row["eval_steps"], row["val_loss"],
                                   row["train_seconds_at_eval"]):
        if loss <= target:
            return step, seconds
    return None, None


def time_to_quality(steps=2000, eval_interval=100, eval_windows=2048, target=None, nanogpt=None,
                    contenders=None, log=print):
    """Part (e): the reference (`steps` steps), then each workbench contender (the recipe's own
    steps unless its overrides say otherwise), one after another (2 cores cannot run two fairly
    at once); returns {"reference", "rows", "target_loss"}."""
    import tempfile

    contenders = TIME_TO_QUALITY_CONTENDERS if contenders is None else contenders
    with tempfile.TemporaryDirectory(prefix="lm-ttq-") as name:
        folder = Path(name)
        _corpus_folder(folder)
        log(f"  reference ({'nanoGPT train.py' if nanogpt else 'PyTorch re-implementation'})",
            flush=True)
        reference = _reference_run(folder, steps, eval_interval, eval_windows, nanogpt, log)
        rows = [_workbench_run(folder, contender, overrides, eval_interval, eval_windows, log)
                for contender, overrides in contenders.items()]
    if target is None:
        target = reference.get("final_fixed_windows_loss", reference["val_loss"][-1])
    for row in [reference, *rows]:
        row["steps_to_target"], row["seconds_to_target"] = _first_reaching(row, target)
        row["tokens_per_second_vs_reference"] = (row["tokens_per_second"]
                                                 / reference["tokens_per_second"])
        if row["seconds_to_target"] is not None and reference["seconds_to_target"]:
            row["time_to_target_vs_reference"] = (row["seconds_to_target"]
                                                  / reference["seconds_to_target"])
        row["time_to_target_vs_reference_training"] = (
            row["seconds_to_target"] / reference["train_seconds"]
            if row["seconds_to_target"] is not None else None)
    return {"target_loss": target, "steps": steps, "eval_interval": eval_interval,
            "eval_windows": eval_windows, "reference": reference, "rows": rows}


def _corpus_folder(folder):
    from workbench.lm.corpus import load_corpus

    corpus = load_corpus("stdlib")
    np.save(folder / "train.npy", corpus.train.astype(np.uint8))
    np.save(folder / "val.npy", corpus.val.astype(np.uint8))


def seed_agreement(seeds=(0, 1, 2), steps=2000, eval_windows=1024, log=print):
    """Part (f): for each seed in turn, the PyTorch re-implementation of nanoGPT (`--seed`) and
    `gpt --set optimizer=adamw --set seed=N`, alternating in one invocation; the final loss over
    the whole validation split and training tokens/s of each, their medians and means."""
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory(prefix="lm-seeds-") as name:
        folder = Path(name)
        _corpus_folder(folder)
        for seed in seeds:
            log(f"  seed {seed}: reference", flush=True)
            reference = _reference_run(folder, steps, steps, eval_windows, log=log, seed=seed)
            row = _workbench_run(folder, f"gpt adamw seed {seed}",
                                 ["optimizer=adamw", f"seed={seed}"], steps, eval_windows, log)
            runs.append({"seed": seed, "reference_loss": reference["final_val_loss"],
                         "reference_tokens_per_second": reference["tokens_per_second"],
                         "workbench_loss": row["final_val_loss"],
                         "workbench_tokens_per_second": row["tokens_per_second"]})
    summary = {}
    for key in ("reference_loss", "workbench_loss", "reference_tokens_per_second",
                "workbench_tokens_per_second"):
        values = [run[key] for run in runs]
        summary[key] = {"median": statistics.median(values), "mean": statistics.fmean(values),
                        "spread": max(values) - min(values)}
    summary["median_difference"] = (summary["workbench_loss"]["median"]
                                    - summary["reference_loss"]["median"])
    summary["mean_difference"] = (summary["workbench_loss"]["mean"]
                                  - summary["reference_loss"]["mean"])
    summary["tokens_per_second_ratio"] = (summary["workbench_tokens_per_second"]["median"]
                                          / summary["reference_tokens_per_second"]["median"])
    return {"steps": steps, "runs": runs, "summary": summary}


def print_seed_agreement(result):
    print(f"\n(f) AdamW at nanoGPT's settings, {result['steps']} steps: final loss over the whole "
          "validation split, per seed")
    print(f"{'seed':>5}{'reference':>11}{'workbench':>11}{'difference':>12}"
          f"{'ref tokens/s':>14}{'wb tokens/s':>13}")
    for run in result["runs"]:
        print(f"{run['seed']:>5}{run['reference_loss']:>11.4f}{run['workbench_loss']:>11.4f}"
              f"{run['workbench_loss'] - run['reference_loss']:>+12.4f}"
              f"{run['reference_tokens_per_second']:>14,.0f}"
              f"{run['workbench_tokens_per_second']:>13,.0f}")
    summary = result["summary"]
    for kind in ("median", "mean"):
        print(f"{kind:>5}{summary['reference_loss'][kind]:>11.4f}"
              f"{summary['workbench_loss'][kind]:>11.4f}{summary[kind + '_difference']:>+12.4f}"
              f"{summary['reference_tokens_per_second'][kind]:>14,.0f}"
              f"{summary['workbench_tokens_per_second'][kind]:>13,.0f}")
    print(f"seed-to-seed spread: reference {summary['reference_loss']['spread']:.4f}, workbench "
          f"{summary['workbench_loss']['spread']:.4f}; tokens/s ratio (medians) "
          f"{summary['tokens_per_second_ratio']:.2f}x")


def print_time_to_quality(result):
    reference = result["reference"]
    print(f"\n(e) time to quality: training seconds until the loss on {result['eval_windows']} "
          f"validation windows (every {result['eval_interval']} steps) reaches "
          f"{result['target_loss']:.4f}; {result['steps']} steps; final loss over the whole "
          f"validation split")
    print(f"{'contender':<34}{'tokens/s':>10}{'vs ref':>8}{'steps to':>9}{'s to':>7}"
          f"{'vs ref train':>13}{'train s':>9}{'val s':>7}{'final loss':>11}")
    for row in [reference, *result["rows"]]:
        reached, seconds = row["steps_to_target"], row["seconds_to_target"]
        share = row["time_to_target_vs_reference_training"]
        print(f"{row['contender']:<34}{row['tokens_per_second']:>10,.0f}"
              f"{row['tokens_per_second_vs_reference']:>7.2f}x"
              f"{(str(reached) if reached else '-'):>9}"
              f"{(f'{seconds:.1f}' if reached else '-'):>7}"
              f"{(f'{share:.2f}x' if share is not None else '-'):>13}"
              f"{row['train_seconds']:>9.1f}{row['validation_seconds']:>7.1f}"
              f"{row['final_val_loss']:>11.4f}")


def machine():
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "keras": keras.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="b",
                        help="comma-separated parts to run (a, b, c, d, e, f)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tune-seeds", default=None,
                        help="seeds that tune the rate on the grid (default: all --seeds); the "
                             "tuned rate then runs the other seeds")
    parser.add_argument("--optimizers", default=",".join(RACE_GRIDS))
    parser.add_argument("--step-rounds", type=int, default=3,
                        help="part b: interleaved rounds of the step-time pass (0: take the "
                             "step times of the --runs-from files)")
    parser.add_argument("--step-times-only", action="store_true",
                        help="part b: only the step-time pass of --optimizers, alone on the "
                             "machine, kept for a later --runs-from")
    parser.add_argument("--runs-from", action="append", default=[], type=Path,
                        help="part b: an earlier --out file whose runs are reused (resume a "
                             "stopped race; put together a race split over processes)")
    parser.add_argument("--grid", action="append", default=[],
                        help="NAME=LR,LR,... overrides one optimizer's grid")
    parser.add_argument("--target", type=float, default=None,
                        help=f"validation loss to reach (part b: default {TARGET_LOSS}; part e: "
                             "default the reference's final loss)")
    parser.add_argument("--model", help="a trained GPT (.keras) for part c")
    parser.add_argument("--nanogpt", help="part e: a nanoGPT checkout whose train.py is the "
                                          "reference (default: the project's PyTorch "
                                          "re-implementation)")
    parser.add_argument("--eval-windows", type=int, default=2048,
                        help="part e: fixed validation windows of the time-to-target curve")
    parser.add_argument("--contender", action="append", default=[],
                        help='part e: NAME="k=v k=v" a workbench contender (--set overrides of '
                             'the gpt recipe); replaces the default contenders')
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--throughput-steps", type=int, default=200,
                        help="steps per timed round in parts a and d")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds in part a")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["machine"] = machine()
    throughput = None
    if "a" in parts:
        throughput = training_throughput(args.throughput_steps, args.rounds)
        print_throughput(throughput)
        report["a_training_throughput"] = throughput
    if "d" in parts:
        flops = flops_utilization(throughput, args.throughput_steps)
        print_flops(flops)
        report["d_flops"] = flops

    def write():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        temp = args.out.with_name(f".partial-{os.getpid()}-{args.out.name}")
        temp.write_text(json.dumps(report, indent=2))
        os.replace(temp, args.out)

    def keep_runs(runs):
        report["b_optimizer_race_runs_so_far"] = runs
        write()

    if "b" in parts and args.step_times_only:
        print(f"step times, {args.step_rounds} interleaved rounds of 100 steps:", flush=True)
        report["b_race_step_times"] = race_step_times(args.optimizers.split(","),
                                                      rounds=args.step_rounds)
    elif "b" in parts:
        earlier_runs, step_times = earlier_race(args.runs_from)
        grids = {}
        for item in args.grid:
            name, rates = item.split("=")
            grids[name] = tuple(float(r) for r in rates.split(","))
        result = optimizer_race(
            optimizers=args.optimizers.split(","), grids=grids,
            seeds=tuple(int(s) for s in args.seeds.split(",")), steps=args.steps,
            eval_every=args.eval_every,
            target=TARGET_LOSS if args.target is None else args.target, on_run=keep_runs,
            tune_seeds=(None if args.tune_seeds is None
                        else tuple(int(s) for s in args.tune_seeds.split(","))),
            step_rounds=args.step_rounds, earlier_runs=earlier_runs, step_times=step_times)
        print_race(result)
        plot_race(result, args.out.with_suffix(".png"))
        print(f"plot: {args.out.with_suffix('.png')}")
        report.pop("b_optimizer_race_runs_so_far", None)
        report["b_optimizer_race"] = result
    if "e" in parts:
        contenders = None
        if args.contender:
            contenders = {}
            for item in args.contender:
                name, _, overrides = item.partition("=")
                contenders[name] = overrides.split()
        result = time_to_quality(steps=args.steps, eval_interval=args.eval_every,
                                 eval_windows=args.eval_windows,
                                 target=args.target,
                                 nanogpt=args.nanogpt, contenders=contenders)
        print_time_to_quality(result)
        report["e_time_to_quality"] = result
    if "f" in parts:
        result = seed_agreement(seeds=tuple(int(seed) for seed in args.seeds.split(",")),
                                steps=args.steps, eval_windows=args.eval_windows)
        print_seed_agreement(result)
        report["f_seed_agreement"] = result
    if "c" in parts:
        if not args.model:
            parser.error("part c needs --model RUN/model.keras (a trained GPT)")
        rows = quantization_table(args.model)
        print_quantization(rows)
        report["c_quantization"] = rows
    write()


if __name__ == "__main__":
    main()
