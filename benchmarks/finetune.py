"""Fine-tuning modes side by side on one preset: full fine-tuning, LoRA at ranks 4, 8 and 16,
QLoRA on an int8 and an int4 base, and (JAX backend) LoRA with and without rematerialization.

Each mode is the `finetune` recipe's train stage (`--stages train`) in its own process, so its
peak resident memory is its own; all take the same steps, batch, learning rate, data and seed.
Printed per mode: trainable weights and their fraction of the total, optimizer-state bytes,
the process's peak RSS, training tokens/s (compiling and validation left out), and the
validation loss before and after the same number of steps. The ratios compare each mode with full
fine-tuning. `--qlora` runs only LoRA r8 and QLoRA r8 on the int8 and int4 bases and prints how
far each QLoRA's validation loss ends from LoRA's.

    python benchmarks/finetune.py [--preset DIR] [--steps 200] [--data SOURCE] [--no-jax] [--qlora]

Without `--preset` the workbench's own GPT-2 preset is used (built first if it is missing).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = [("full", ["finetune.mode=full"], "tensorflow"),
         ("lora r4", ["finetune.mode=lora", "finetune.rank=4"], "tensorflow"),
         ("lora r8", ["finetune.mode=lora", "finetune.rank=8"], "tensorflow"),
         ("lora r16", ["finetune.mode=lora", "finetune.rank=16"], "tensorflow"),
         ("qlora int8 r8", ["finetune.mode=qlora", "finetune.rank=8"], "tensorflow"),
         ("qlora int4 r8", ["finetune.mode=qlora", "finetune.rank=8",
                            "finetune.base_quantization=int4"], "tensorflow")]
QLORA_MODES = ("lora r8", "qlora int8 r8", "qlora int4 r8")
JAX_MODES = [("jax lora r8", ["finetune.mode=lora", "finetune.rank=8"], "jax"),
             ("jax lora r8 remat", ["finetune.mode=lora", "finetune.rank=8", "remat=true"],
              "jax")]


def run_mode(name, settings, backend, preset, steps, data, folder):
    out = Path(folder) / name.replace(" ", "_")
    sets = [f"model_options.preset={preset}", f"lm.steps={steps}",
            f"lm.eval_interval={steps}", *settings] + ([f"data={data}"] if data else [])
    command = [sys.executable, "-m", "workbench.run", "finetune", "--stages", "train",
               "--out", str(out), "--quiet"]
    for item in sets:
        command += ["--set", item]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {"mode": name, "backend": backend, "error": result.stderr.strip()[-400:]}
    train = json.loads((out / "report.json").read_text())["stages"]["train"]
    keys = ("trainable_parameters", "total_parameters", "trainable_fraction",
            "optimizer_state_bytes", "peak_rss_bytes", "tokens_per_second", "val_loss_before",
            "val_loss_after", "training_seconds", "merged_max_logit_difference")
    return {"mode": name, "backend": backend, **{key: train[key] for key in keys}}


def table(rows):
    full = next((r for r in rows if r["mode"] == "full" and "error" not in r), None)
    lines = [f"{'mode':18s} {'trainable':>10s} {'fraction':>8s} {'opt state':>10s} "
             f"{'peak RSS':>9s} {'tokens/s':>9s} {'vs full':>7s} {'val before':>10s} "
             f"{'val after':>9s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['mode']:18s} failed: {r['error']}")
            continue
        speed = (f"{r['tokens_per_second'] / full['tokens_per_second']:.2f}x"
                 if full and r["backend"] == full["backend"] else "-")
        lines.append(
            f"{r['mode']:18s} {r['trainable_parameters']:>10,d} {r['trainable_fraction']:>8.2%} "
            f"{r['optimizer_state_bytes'] / 2**20:>8.2f}Mi {r['peak_rss_bytes'] / 2**30:>7.2f}Gi "
            f"{r['tokens_per_second']:>9,.0f} {speed:>7s} {r['val_loss_before']:>10.4f} "
            f"{r['val_loss_after']:>9.4f}")
    return "\n".join(lines)


def qlora_gaps(rows):
    """How far each QLoRA row's validation loss ends from LoRA r8's (same steps and seed)."""
    lora = next((r for r in rows if r["mode"] == "lora r8" and "error" not in r), None)
    if lora is None:
        return ""
    return "\n".join(
        f"{r['mode']}: val loss after {r['val_loss_after']:.4f}, "
        f"{r['val_loss_after'] - lora['val_loss_after']:+.4f} against LoRA r8's "
        f"{lora['val_loss_after']:.4f}; merged model.keras differs by "
        f"{r['merged_max_logit_difference']:.2e} (max |logit|)"
        for r in rows if r["mode"].startswith("qlora") and "error" not in r)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--data", default=None, help="the recipe's default when unset")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX remat rows")
    parser.add_argument("--qlora", action="store_true",
                        help="only LoRA r8 and QLoRA r8 on the int8 and int4 bases")
    parser.add_argument("--out", default="benchmarks/results/finetune.json")
    args = parser.parse_args()
    preset = args.preset
    if preset is None:
        from workbench.hub.pretrain import ensure_own_preset

        preset = str(ensure_own_preset())
    modes = MODES + ([] if args.no_jax or args.qlora else JAX_MODES)
    if args.qlora:
        modes = [mode for mode in modes if mode[0] in QLORA_MODES]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, settings, backend in modes:
            print(f"  {name} ...", flush=True)
            rows.append(run_mode(name, settings, backend, preset, args.steps, args.data,
                                 folder))
    print(f"\nfine-tuning modes, {args.steps} steps each, preset {preset} "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)\n")
    print(table(rows))
    gaps = qlora_gaps(rows)
    if gaps:
        print("\n" + gaps)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": preset, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
