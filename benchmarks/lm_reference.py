"""The PyTorch reference of `benchmarks/lm.py`'s time-to-quality part (e), run in its own process
(TensorFlow's thread pools slow PyTorch in a shared one; this file never imports TensorFlow).

Two references, both on the token files the benchmark writes (`train.npy`, `val.npy`):

- `--nanogpt DIR`: nanoGPT's own `train.py` from a checkout, on a `data/<name>/` folder made from
  the tokens (`train.bin`, `val.bin` as uint16, `meta.pkl` with the vocabulary). Its log gives the
  step times (`iter N: ... time T ms`) and its own validation estimates (`step N: ... val loss L`,
  `eval_iters` random batches); the time of an iteration that evaluated is replaced by the median
  step time, so validation is not counted as training. The final checkpoint is then scored with
  the checkout's `model.py` on the benchmark's windows.
- otherwise the project's re-implementation of nanoGPT's `model.py` (bias-free LayerNorm and
  Linear, tied embeddings, `scaled_dot_product_attention`, exact GELU, N(0, 0.02) init with the
  residual projections at 0.02/sqrt(2 x layers)) and of `train.py`'s loop (random windows from
  `torch.randint`, AdamW over two groups, weight decay on rank >= 2 only, `get_lr`'s linear
  warm-up and cosine to `min_lr`, clipping at 1.0), validated every `eval_interval` steps on the
  benchmark's fixed windows with the clock stopped.

Both write one JSON: the validation curve (`eval_steps`, `val_loss`, `train_seconds_at_eval`), the
training seconds and tokens/s, the validation seconds, and the whole-validation loss at the end.

    python benchmarks/lm_reference.py --data DIR --out ref.json [--nanogpt NANOGPT_DIR]
                                      [--steps 2000] [--eval-interval 100] [--threads 2]
"""

import argparse
import json
import math
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional


def fixed_windows(tokens, context, count=None):
    """Window starts as `workbench.lm.corpus.window_starts`: every `context` tokens (the whole
    split, each target once), or `count` evenly spread."""
    last = len(tokens) - context - 1
    if count is None:
        return np.arange(0, last + 1, context, dtype=np.int64)
    return np.linspace(0, last, min(count, last + 1)).astype(np.int64)


def windows(tokens, starts, context):
    ids = torch.from_numpy(tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64))
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


class Block(nn.Module):
    def __init__(self, width, heads, layers):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width, bias=False)
        self.c_attn = nn.Linear(width, 3 * width, bias=False)
        self.c_proj = nn.Linear(width, width, bias=False)
        self.ln_2 = nn.LayerNorm(width, bias=False)
        self.c_fc = nn.Linear(width, 4 * width, bias=False)
        self.mlp_proj = nn.Linear(4 * width, width, bias=False)
        for projection in (self.c_proj, self.mlp_proj):
            nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(functional.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocabulary, context, layers, heads, width):
        super().__init__()
        self.wte = nn.Embedding(vocabulary, width)
        self.wpe = nn.Embedding(context, width)
        for module in (self.wte, self.wpe):
            nn.init.normal_(module.weight, std=0.02)
        self.h = nn.ModuleList(Block(width, heads, layers) for _ in range(layers))
        for block in self.h:
            for linear in (block.c_attn, block.c_fc):
                nn.init.normal_(linear.weight, std=0.02)
        self.ln_f = nn.LayerNorm(width, bias=False)
        self.lm_head = nn.Linear(width, vocabulary, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, functional.cross_entropy(logits.view(-1, logits.size(-1)),
                                                targets.reshape(-1))


def nanogpt_lr(step, args):
    """nanoGPT's `get_lr`."""
    if step < args.warmup:
        return args.learning_rate * (step + 1) / (args.warmup + 1)
    if step > args.steps:
        return args.min_learning_rate
    ratio = (step - args.warmup) / (args.steps - args.warmup)
    return args.min_learning_rate + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (
        args.learning_rate - args.min_learning_rate)


@torch.no_grad()
def mean_loss(model, tokens, starts, context, batch=256):
    """Mean next-token loss (nats) over the windows at `starts`."""
    model.eval()
    total, count = 0.0, 0
    for first in range(0, len(starts), batch):
        x, y = windows(tokens, starts[first:first + batch], context)
        _, loss = model(x, y)
        total += float(loss) * y.numel()
        count += y.numel()
    model.train()
    return total / count


def train_reimplementation(args, train, val):
    torch.manual_seed(args.seed)
    model = GPT(args.vocabulary, args.context, args.layers, args.heads, args.width)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, args.beta_2))
    data = torch.from_numpy(train.astype(np.int64))
    eval_starts = fixed_windows(val, args.context, args.eval_windows)
    result = {"eval_steps": [], "val_loss": [], "train_seconds_at_eval": []}
    train_seconds = validation_seconds = 0.0
    step_seconds = []

    def batch():
        starts = torch.randint(len(data) - args.context - 1, (args.batch,))
        x = torch.stack([data[i:i + args.context] for i in starts])
        y = torch.stack([data[i + 1:i + 1 + args.context] for i in starts])
        return x, y

    for step in range(1, args.steps + 1):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(step - 1, args)
        x, y = batch()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        step_seconds.append(elapsed)
        if step % args.eval_interval == 0 or step == args.steps:
            started = time.perf_counter()
            value = mean_loss(model, val, eval_starts, args.context)
            validation_seconds += time.perf_counter() - started
            result["eval_steps"].append(step)
            result["val_loss"].append(value)
            result["train_seconds_at_eval"].append(train_seconds)
            print(f"  reference step {step:>5d}/{args.steps}  val_loss {value:.4f}  "
                  f"{train_seconds:.1f} s training", flush=True)
    steady = step_seconds[len(step_seconds) // 10:]  # the first steps warm the allocator up
    result.update({
        "contender": "pytorch_reimplementation",
        "train_seconds": train_seconds, "validation_seconds": validation_seconds,
        "tokens_per_second": len(steady) * args.batch * args.context / sum(steady)})
    return model, result


STEP_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
ITER_LINE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")


def train_nanogpt(args, train, val):
    """nanoGPT's `train.py` from `args.nanogpt` on the tokens; its log parsed into the curve."""
    checkout = Path(args.nanogpt).resolve()
    if not (checkout / "train.py").is_file() or not (checkout / "model.py").is_file():
        raise SystemExit(f"--nanogpt {checkout}: no nanoGPT checkout there (train.py, model.py)")
    work = Path(tempfile.mkdtemp(prefix="nanogpt-"))
    data = work / "data" / "workbench"
    data.mkdir(parents=True)
    train.astype(np.uint16).tofile(data / "train.bin")
    val.astype(np.uint16).tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as handle:
        pickle.dump({"vocab_size": args.vocabulary}, handle)
    (work / "configurator.py").write_text((checkout / "configurator.py").read_text())
    command = [sys.executable, str(checkout / "train.py"), "--dataset=workbench",
               f"--out_dir={work / 'out'}", "--device=cpu", "--compile=False",
               "--dtype=float32", f"--batch_size={args.batch}", f"--block_size={args.context}",
               f"--n_layer={args.layers}", f"--n_head={args.heads}", f"--n_embd={args.width}",
               "--dropout=0.0", "--bias=False", f"--learning_rate={args.learning_rate}",
               f"--min_lr={args.min_learning_rate}", f"--warmup_iters={args.warmup}",
               f"--max_iters={args.steps}", f"--lr_decay_iters={args.steps}",
               f"--beta2={args.beta_2}", f"--weight_decay={args.weight_decay}",
               "--grad_clip=1.0", "--gradient_accumulation_steps=1",
               f"--eval_interval={args.eval_interval}", f"--eval_iters={args.nanogpt_eval_iters}",
               "--log_interval=1", "--always_save_checkpoint=True", "--wandb_log=False"]
    process = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed:\n{process.stderr[-3000:]}")
    evals, times = {}, {}
    for line in process.stdout.splitlines():
        if match := STEP_LINE.match(line):
            evals[int(match[1])] = float(match[3])
        elif match := ITER_LINE.match(line):
            times[int(match[1])] = float(match[3]) / 1000
    # Iteration 0's time is the first batch; an iteration that evaluated also holds the
    # evaluation and the checkpoint: both are replaced by the median step.
    typical = statistics.median(times.values())
    step_seconds = {i: (typical if i in evals else t) for i, t in times.items()}
    result = {"contender": "nanogpt_train_py", "eval_steps": [], "val_loss": [],
              "train_seconds_at_eval": [], "nanogpt_eval_iters": args.nanogpt_eval_iters}
    for step, loss in sorted(evals.items()):
        if step == 0:
            continue
        result["eval_steps"].append(step)
        result["val_loss"].append(loss)
        result["train_seconds_at_eval"].append(sum(t for i, t in step_seconds.items() if i < step))
    trained = sum(t for i, t in step_seconds.items() if i < args.steps)
    counted = [t for i, t in step_seconds.items() if i < args.steps and i not in evals]
    result.update({"train_seconds": trained,
                   "validation_seconds": sum(times[i] - typical for i in evals if i in times),
                   "tokens_per_second": len(counted) * args.batch * args.context / sum(counted)})
    sys.path.insert(0, str(checkout))
    from model import GPT as NanoGPT, GPTConfig  # noqa: E402  (nanoGPT's own model.py)

    checkpoint = torch.load(work / "out" / "ckpt.pt", map_location="cpu", weights_only=False)
    model = NanoGPT(GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v
                           for k, v in checkpoint["model"].items()})
    # nanoGPT's own estimate is the curve; the benchmark's windows score the end.
    result["final_fixed_windows_loss"] = mean_loss(
        model, val, fixed_windows(val, args.context, args.eval_windows), args.context)
    return model, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with train.npy and val.npy (token ids)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--nanogpt", help="a nanoGPT checkout: run its train.py")
    parser.add_argument("--nanogpt-eval-iters", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocabulary", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--min-learning-rate", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--beta-2", type=float, default=0.99)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--eval-windows", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = np.load(args.data / "train.npy")
    val = np.load(args.data / "val.npy")
    trainer = train_nanogpt if args.nanogpt else train_reimplementation
    model, result = trainer(args, train, val)
    started = time.perf_counter()
    result["final_val_loss"] = mean_loss(model, val, fixed_windows(val, args.context),
                                         args.context)
    result["whole_validation_seconds"] = time.perf_counter() - started
    result.update({"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "steps": args.steps, "batch": args.batch, "context": args.context,
                   "tokens_per_step": args.batch * args.context,
                   "eval_windows": args.eval_windows})
    args.out.write_text(json.dumps(result, indent=2))
    print(f"  reference final whole-validation loss {result['final_val_loss']:.4f}, "
          f"{result['tokens_per_second']:,.0f} tokens/s, {result['train_seconds']:.1f} s "
          f"training", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
