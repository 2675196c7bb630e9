"""The run report: `report.json` (everything), `report.md` (for people) and PNG plots."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

import numpy as np

VERSIONED_PACKAGES = ("tensorflow", "keras", "tf-keras", "tensorflow-model-optimization",
                      "keras-tuner", "ai-edge-litert", "numpy", "scikit-learn")


def versions():
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _plain(value):
    """JSON-safe copy: NumPy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def build(ctx, status, error=None):
    report = {
        "recipe": ctx.recipe.name,
        "status": status,
        "seed": ctx.recipe.seed,
        "run_dir": str(ctx.run_dir.path),
        "config": ctx.recipe.settings(),
        "versions": versions(),
        "data": data_summary(ctx.data),
        "stages": {name: {"seconds": round(ctx.timings.get(name, 0.0), 3),
                          **ctx.results.get(name, {})}
                   for name in ctx.timings},
        "exports": ctx.exports,
        "history": ctx.history,
        "hyperparameters": ctx.hp.values if ctx.hp is not None else {},
    }
    if error is not None:
        report["error"] = error
    return _plain(report)


def data_summary(data):
    """What the report says of the data: source, task, sizes, classes, fingerprint."""
    if data is None:
        return None
    info = data.info
    summary = {"source": info.source, "name": info.name, "task": info.task,
               "sizes": dict(info.sizes), "input_shape": info.input_shape,
               "fingerprint": info.fingerprint}
    for key in ("num_classes", "num_targets", "class_names", "vocabulary_size"):
        if getattr(info, key, None) is not None:
            summary[key] = getattr(info, key)
    return summary


def summary_rows(ctx):
    """Rows for the summary table: the Keras model, then every exported variant."""
    rows = []
    evaluation = ctx.results.get("evaluate", {})
    train = ctx.results.get("train", {})
    # The task family names its headline: the key in `evaluate`'s results, and in each verified
    # export's metrics.
    keras_key, metric = ctx.task.HEADLINE if ctx.task is not None else ("test_accuracy",
                                                                         "accuracy")
    if evaluation or train:
        rows.append({"model": "keras", "accuracy": evaluation.get(keras_key),
                     "metric_name": metric,
                     "loss": evaluation.get("test_loss"), "size_bytes": train.get("model_bytes"),
                     "gzip_bytes": None, "ratio": None, "latency_ms": None, "sparsity": None,
                     "path": train.get("model_path")})
    # Compression ratios are against the float32 export when there is one (the usual baseline).
    baseline = ctx.exports.get("float32", {}).get("gzip_bytes")
    for fmt, info in ctx.exports.items():
        gzip_bytes = info.get("gzip_bytes")
        rows.append({"model": f"tflite {fmt}", "accuracy": info.get(metric), "loss": None,
                     "metric_name": metric,
                     "size_bytes": info.get("size_bytes"), "gzip_bytes": gzip_bytes,
                     "ratio": baseline / gzip_bytes if baseline and gzip_bytes else None,
                     "latency_ms": info.get("median_latency_ms"),
                     "sparsity": info.get("weight_sparsity"), "path": info.get("path")})
    return rows


def _cell(value, kind):
    if value is None:
        return "-"
    if kind == "fraction":
        return f"{value:.4f}"
    if kind == "bytes":
        return f"{value / 1024:.1f} KiB"
    if kind == "ms":
        return f"{value:.3f} ms"
    if kind == "ratio":
        return f"{value:.1f}x"
    if kind == "percent":
        return f"{value:.1%}"
    return str(value)


COLUMNS = [("model", "model", "text"), ("accuracy", "test accuracy", "fraction"),
           ("loss", "test loss", "fraction"), ("size_bytes", "size", "bytes"),
           ("gzip_bytes", "gzip size", "bytes"), ("ratio", "smaller (gzip)", "ratio"),
           ("latency_ms", "median latency", "ms"), ("sparsity", "weight sparsity", "percent")]


def table(rows, markdown=False):
    metric = rows[0].get("metric_name", "accuracy") if rows else "accuracy"
    title = metric.replace("_", " ") if metric.startswith("val_") else f"test {metric}"
    header = [title if key == "accuracy" else name for key, name, _ in COLUMNS]
    body = [[_cell(row[key], kind) for key, _, kind in COLUMNS] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*cells) for cells in body)])


def markdown(ctx, report):
    lines = [f"# Run report: {report['recipe']}", "",
             f"- status: **{report['status']}**",
             f"- run directory: `{report['run_dir']}`",
             f"- seed: {report['seed']}",
             f"- data: {report['data']}", ""]
    if "error" in report:
        lines += [f"**Error:** {report['error']}", ""]
    rows = summary_rows(ctx)
    if rows:
        lines += ["## Results", "", table(rows, markdown=True), ""]
    search = ctx.results.get("search", {})
    if search.get("trials"):
        lines += [f"## Search ({search['tuner']}, objective {search['objective']})", "",
                  f"Best: trial {search['best_trial']}, {search['objective']} = "
                  f"{_short(search['best_score'])}, {search['best_hyperparameters']}", "",
                  "| trial | status | score | hyperparameters |", "|---|---|---|---|"]
        lines += [f"| {t['trial']} | {t['status']} | {_short(t['score'])} | {t['hyperparameters']} |"
                  for t in search["trials"]]
        lines.append("")
    for section in ctx.sections.values():
        lines += [section, ""]
    lines += ["## Stages", "", "| stage | seconds | details |", "|---|---|---|"]
    for name, info in report["stages"].items():
        details = ", ".join(f"{k}={_short(v)}" for k, v in info.items()
                            if k != "seconds" and not isinstance(v, (dict, list)))
        lines.append(f"| {name} | {info['seconds']:.1f} | {details} |")
    lines += ["", "## Plots", ""]
    for name in ("training_curves.png", "learning_rate.png", "search.png", "lr_find.png",
                 "accuracy_vs_size.png"):
        if (ctx.run_dir / name).exists():
            lines.append(f"![{name}]({name})")
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in report["versions"].items()]
    return "\n".join(lines) + "\n"


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_training(ctx):
    """training_curves.png (loss and metrics per epoch) and learning_rate.png (per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ctx.history:
        metrics = sorted({k.removeprefix("val_") for k in ctx.history} - {"learning_rate"})
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
                if key in ctx.history:
                    ax.plot(np.arange(1, len(ctx.history[key]) + 1), ctx.history[key], label=label)
            ax.set_title(metric)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{ctx.recipe.name}: training curves")
        fig.tight_layout()
        _save_figure(ctx, fig, "training_curves.png")
    if ctx.learning_rates:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(np.arange(len(ctx.learning_rates)), ctx.learning_rates)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.set_yscale("log")
        ax.set_title(f"{ctx.recipe.name}: learning rate per step")
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        _save_figure(ctx, fig, "learning_rate.png")


def plot_search(ctx):
    """search.png: the objective of every trial, and the best so far."""
    search = ctx.results.get("search", {})
    scored = [t for t in search.get("trials", []) if t["score"] is not None]
    if not scored:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.array([t["score"] for t in scored])
    maximize = "loss" not in search["objective"]
    best = np.maximum.accumulate(scores) if maximize else np.minimum.accumulate(scores)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(np.arange(1, len(scores) + 1), scores, "o", label="trial")
    ax.step(np.arange(1, len(scores) + 1), best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(search["objective"])
    ax.set_title(f"{ctx.recipe.name}: {search['tuner']} search")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(ctx, fig, "search.png")


def plot_variants(ctx):
    """accuracy_vs_size.png: every verified export, test accuracy against gzip size."""
    points = [(name, info["gzip_bytes"] / 1024, info["accuracy"])
              for name, info in ctx.exports.items() if "accuracy" in info]
    if len(points) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, size, accuracy in points:
        ax.plot(size, accuracy, "o")
        ax.annotate(name, (size, accuracy), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("gzip size (KiB, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{ctx.recipe.name}: accuracy vs size of the exported models")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save_figure(ctx, fig, "accuracy_vs_size.png")


def _save_figure(ctx, fig, name):
    import matplotlib.pyplot as plt

    with ctx.run_dir.atomic(name) as temp:
        fig.savefig(temp, dpi=110, format="png")
    plt.close(fig)


def write(ctx, status, error=None, plots=True):
    """Write the plots, report.json and report.md into the run directory; return the report."""
    report = build(ctx, status, error)
    if plots:
        plot_training(ctx)
        plot_search(ctx)
        plot_variants(ctx)
    ctx.run_dir.write_text("report.json", json.dumps(report, indent=2) + "\n")
    ctx.run_dir.write_text("report.md", markdown(ctx, report))
    return report
