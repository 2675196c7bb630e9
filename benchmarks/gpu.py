"""GPT training with every workbench optimizer, on JAX or PyTorch, where TensorFlow is absent.

Needs only `keras`, `jax` (or `torch`) and the workbench: the model is a small nanoGPT-style
decoder written here with `keras.layers` and `keras.ops` (KerasHub's layers import TensorFlow
even on the JAX backend), trained with Keras' own trainer (`train_on_batch`, a jitted step on
JAX) on bytes of Python's standard library.

For each scale (`baby`: 4 layers, 4 heads, width 128, context 64, batch 12, the `gpt` recipe's
size; `gpt2-small`: 12 layers, 12 heads, width 768, context 1024, batch 8) and each optimizer
(Keras AdamW and Muon, the workbench's Shampoo, AdaBelief, RAdam, Prodigy, Lookahead(AdamW),
GradientNoise(AdamW), and any further workbench optimizer it finds) it measures:

- step time, tokens/s, and its ratio to AdamW's step time;
- MFU, model FLOPs utilisation: achieved FLOP/s over the device's peak, with the nanoGPT /
  PaLM count of 6 N + 12 L T d FLOPs per token (N: parameters outside the embeddings, L
  layers, T context, d width). The peak comes from `--peak-tflops` or a table of known GPUs
  (bf16 dense for `--precision bfloat16`, fp32 otherwise); on a CPU MFU is left out;
- steps to reach `--target-loss` (validation cross-entropy in nats per byte; a uniform guess
  is ln 256 = 5.55), checked every `--eval-every` steps, and the last validation loss.

The corpus: every `*.py` file under `sysconfig.get_paths()["stdlib"]`, leaving out
site-packages, `/test/` and `idle_test` paths, sorted by path, concatenated as bytes; the last
10% is the validation split. Batches are drawn at seeded random offsets, the same for every
optimizer.

    KERAS_BACKEND=jax python benchmarks/gpu.py --scale baby --steps 300     # CPU, minutes
    KERAS_BACKEND=jax python benchmarks/gpu.py --scale all --precision bfloat16   # on a GPU

Prints the tables side by side and writes them as JSON (`--out`).
"""

import argparse
import json
import math
import os
import platform
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workbench as wb  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu.json"
SCALES = {
    "baby": dict(layers=4, heads=4, width=128, context=64, batch=12, learning_rate=1e-3),
    "gpt2-small": dict(layers=12, heads=12, width=768, context=1024, batch=8,
                       learning_rate=6e-4),
}
VOCABULARY = 256  # bytes
# Dense peak FLOP/s (TFLOP/s) of GPUs by name fragment: (bf16 tensor core, fp32).
KNOWN_PEAKS = {
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L4": (121.0, 30.3),
    "A10": (125.0, 31.2),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


# --- data --------------------------------------------------------------------


def stdlib_corpus():
    """Bytes of the standard library's Python sources (not tests, not site-packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(
        p for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts
        and "idle_test" not in p.parts
    )
    return np.frombuffer(b"".join(p.read_bytes() for p in paths), dtype=np.uint8), len(paths)


def batches(data, context, batch, seed):
    """Endless (inputs, next-byte targets) at seeded random offsets."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(data) - context - 1, size=batch)
        window = np.stack([data[s:s + context + 1] for s in starts]).astype("int32")
        yield window[:, :-1], window[:, 1:]


# --- model -------------------------------------------------------------------


class Block(layers.Layer):
    """Pre-norm decoder block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width, heads, **kwargs):
        super().__init__(**kwargs)
        self.norm_1 = layers.LayerNormalization(epsilon=1e-5)
        self.attention = layers.MultiHeadAttention(heads, width // heads)
        self.norm_2 = layers.LayerNormalization(epsilon=1e-5)
        self.expand = layers.Dense(4 * width, activation="gelu")
        self.project = layers.Dense(width)

    def call(self, x):
        h = self.norm_1(x)
        x = x + self.attention(h, h, use_causal_mask=True)
        return x + self.project(self.expand(self.norm_2(x)))


def gpt(layers_, heads, width, context, seed=0):
    # Keras draws unseeded initializers' seeds from Python's `random`; seeding it (rather than
    # `keras.utils.set_random_seed`, which imports TensorFlow when installed to seed it too)
    # makes every optimizer start from the same weights.
    random.seed(seed)
    tokens = keras.Input((context,), dtype="int32")
    positions = ops.expand_dims(ops.arange(context), 0)
    x = layers.Embedding(VOCABULARY, width, name="token_embedding")(tokens)
    x = x + layers.Embedding(context, width, name="position_embedding")(positions)
    for i in range(layers_):
        x = Block(width, heads, name=f"block_{i}")(x)
    x = layers.LayerNormalization(epsilon=1e-5)(x)
    # float32 logits under mixed precision, for a stable softmax cross-entropy.
    logits = layers.Dense(VOCABULARY, dtype="float32", name="logits")(x)
    return keras.Model(tokens, logits)


def flops_per_token(model, layers_, width, context):
    embeddings = sum(
        int(np.prod(w.shape)) for w in model.weights if "embedding" in w.path
    )
    non_embedding = model.count_params() - embeddings
    return 6 * non_embedding + 12 * layers_ * context * width


# --- optimizers -----------------------------------------------------------------


def contenders(learning_rate):
    """Name -> factory. AdamW first: the reference for the ratios."""
    adamw = lambda: keras.optimizers.AdamW(learning_rate, weight_decay=0.1)  # noqa: E731
    table = {
        "AdamW (Keras)": adamw,
        "Muon (Keras)": lambda: keras.optimizers.Muon(
            learning_rate, exclude_layers=["logits"]
        ),
        "Shampoo": lambda: wb.optimizers.Shampoo(learning_rate),
        "AdaBelief": lambda: wb.optimizers.AdaBelief(learning_rate),
        "RAdam": lambda: wb.optimizers.RAdam(learning_rate),
        "Prodigy": lambda: wb.optimizers.Prodigy(),
        "Lookahead(AdamW)": lambda: wb.optimizers.Lookahead(adamw()),
        "GradientNoise(AdamW)": lambda: wb.optimizers.GradientNoise(adamw(), seed=0),
    }
    # LARS is a large-batch SGD method; at these batch sizes it is not a contender.
    known = {"Shampoo", "AdaBelief", "RAdam", "Prodigy", "Lookahead", "GradientNoise",
             "LARS", "OptimizerWrapper"}
    for name in sorted(getattr(wb.optimizers, "__all__", [])):
        if name not in known:
            cls = getattr(wb.optimizers, name)
            table[name] = lambda cls=cls: cls(learning_rate=learning_rate)
    return table


# --- runs --------------------------------------------------------------------


def device_description():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.platform, getattr(device, "device_kind", str(device))
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", torch.cuda.get_device_name(0)
        return "cpu", platform.processor() or "cpu"
    return "cpu", platform.processor() or "cpu"


def peak_tflops(kind, precision, override):
    if override:
        return override
    for fragment, (bf16, fp32) in KNOWN_PEAKS.items():
        if fragment.lower() in kind.lower():
            return bf16 if precision == "bfloat16" else fp32
    return None


def train_one(make_optimizer, scale, data, steps, eval_every, target, warmup, seed=0):
    settings = SCALES[scale]
    model = gpt(settings["layers"], settings["heads"], settings["width"], settings["context"])
    optimizer = make_optimizer()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() != "torch",
    )
    train, validation = data
    train_batches = batches(train, settings["context"], settings["batch"], seed)
    validation_set = [
        b for _, b in zip(range(4), batches(validation, settings["context"], 32, seed + 1))
    ]

    def validation_loss():
        losses = [float(np.asarray(model.test_on_batch(x, y))) for x, y in validation_set]
        return float(np.mean(losses))

    step_seconds, reached, last_loss, train_loss = [], None, None, None
    for step in range(1, steps + 1):
        x, y = next(train_batches)
        started = time.perf_counter()
        train_loss = float(np.asarray(model.train_on_batch(x, y)))  # waits for the step
        if step > warmup:
            step_seconds.append(time.perf_counter() - started)
        if not math.isfinite(train_loss):
            break
        if step % eval_every == 0 or step == steps:
            last_loss = validation_loss()
            if reached is None and last_loss <= target:
                reached = step
    median = float(np.median(step_seconds)) if step_seconds else None
    result = {
        "step_seconds": median,
        "tokens_per_second": settings["context"] * settings["batch"] / median if median else None,
        "steps_to_target": reached,
        "last_validation_loss": last_loss,
        "last_train_loss": train_loss,
        "steps_run": step,
    }
    root = getattr(optimizer, "root_method_in_use", None)
    if root:
        result["shampoo_root"] = root
    return result, model


def run_scale(scale, args, data):
    settings = SCALES[scale]
    table, flops = {}, None
    for name, make in contenders(settings["learning_rate"]).items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        result, model = train_one(make, scale, data, args.steps, args.eval_every,
                                  args.target_loss, args.warmup)
        result["wall_seconds"] = time.perf_counter() - started
        if flops is None:
            flops = flops_per_token(model, settings["layers"], settings["width"],
                                    settings["context"])
        table[name] = result
        print(f"  {scale} {name}: {number(result['step_seconds'], 1000, '.1f')} ms/step, "
              f"val loss {number(result['last_validation_loss'], 1, '.3f')} "
              f"({result['wall_seconds']:.0f} s)", flush=True)
    return table, flops


def number(value, factor, spec):
    """`value * factor` formatted, or "diverged" for a run that never got a finite value."""
    return "diverged" if value is None else format(value * factor, spec)


def print_table(scale, table, flops, peak):
    settings = SCALES[scale]
    reference = table.get("AdamW (Keras)", {}).get("step_seconds")
    print(f"\n{scale}: {settings['layers']} layers, {settings['heads']} heads, width "
          f"{settings['width']}, context {settings['context']}, batch {settings['batch']}; "
          f"{flops / 1e6:.1f} MFLOP per token")
    print(f"{'optimizer':24s}{'ms/step':>10s}{'x AdamW':>9s}{'tokens/s':>11s}{'MFU':>8s}"
          f"{'steps to target':>17s}{'val loss':>10s}")
    for name, r in table.items():
        seconds = r["step_seconds"]
        mfu = (flops * r["tokens_per_second"] / (peak * 1e12)) if peak and seconds else None
        r["mfu"] = mfu
        ratio = seconds / reference if reference and seconds else None
        r["x_adamw"] = ratio
        steps = r["steps_to_target"] if r["steps_to_target"] is not None else f">{r['steps_run']}"
        mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "-"
        print(f"{name:24s}{number(seconds, 1000, '.1f'):>10s}{number(ratio, 1, '.2f'):>9s}"
              f"{number(r['tokens_per_second'], 1, '.0f'):>11s}{mfu_text:>8s}{steps!s:>17s}"
              f"{number(r['last_validation_loss'], 1, '.3f'):>10s}")


def write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2, allow_nan=False,
                  default=lambda value: None)
        temporary = f.name
    os.replace(temporary, path)


def finite(value):
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=[*SCALES, "all"], default="baby")
    parser.add_argument("--small", action="store_true",
                        help="baby scale, 60 steps, 3 optimizers: a smoke run of a minute or two")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5,
                        help="steps left out of the timing (compilation)")
    parser.add_argument("--target-loss", type=float, default=2.5)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for MFU; default from a table of known GPUs")
    parser.add_argument("--only", nargs="*", help="optimizer names to run (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.small:
        args.scale, args.steps, args.eval_every = "baby", 60, 20
        args.only = args.only or ["AdamW (Keras)", "Muon (Keras)", "Shampoo"]
    args.warmup = min(args.warmup, args.steps - 1)  # keep at least one timed step
    if args.precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    corpus, files = stdlib_corpus()
    cut = int(0.9 * len(corpus))
    data = (corpus[:cut], corpus[cut:])
    platform_name, kind = device_description()
    peak = peak_tflops(kind, args.precision, args.peak_tflops)
    print(f"backend {keras.backend.backend()}, device {platform_name} ({kind}), "
          f"precision {args.precision}, peak {peak or 'unknown'} TFLOP/s; corpus "
          f"{len(corpus) / 1e6:.1f} MB from {files} files", flush=True)

    started = time.perf_counter()
    scales = list(SCALES) if args.scale == "all" else [args.scale]
    results = {}
    for scale in scales:
        table, flops = run_scale(scale, args, data)
        results[scale] = {"settings": SCALES[scale], "flops_per_token": flops, "table": table}
    for scale in scales:
        print_table(scale, results[scale]["table"], results[scale]["flops_per_token"], peak)
    elapsed = time.perf_counter() - started
    print(f"TensorFlow imported: {'tensorflow' in sys.modules}")
    print(f"\n{elapsed:.0f} s; steps to validation loss <= {args.target_loss} nats/byte, "
          f"checked every {args.eval_every} steps.")
    write_json(args.out, finite({
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "device": {"platform": platform_name, "kind": kind, "peak_tflops": peak},
        "precision": args.precision,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "target_loss": args.target_loss,
        "corpus_bytes": int(len(corpus)),
        "corpus_files": files,
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "results": results,
        "seconds": elapsed,
    }))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
