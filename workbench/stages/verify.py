"""Run every exported `.tflite` file with the LiteRT interpreter on the test split, and read the
weight sparsity that survived into each flatbuffer."""

from workbench import deploy


def verify(ctx):
    data = ctx.require_data("verify")
    if not ctx.exports:
        from workbench.errors import WorkbenchError

        raise WorkbenchError("stage 'verify' has nothing to check: include 'export' (or a "
                             "compression stage: prune, quantize, cluster, distill) in --stages")
    settings = ctx.recipe.verify
    if data.info.task == "language_model":
        from workbench.lm.compress_stages import verify as verify_language_model

        return verify_language_model(ctx)
    keras_metrics = ctx.results.get("evaluate", {})
    results = {}
    width = max(8, *(len(name) for name in ctx.exports))
    for fmt, info in ctx.exports.items():
        metrics = deploy.verify_tflite(info["path"], data.test, num_threads=settings.num_threads,
                                       max_examples=settings.max_examples, task=data.info.task)
        for name in deploy.task_metric_names(data.info.task):
            keras_value = keras_metrics.get(f"test_{name}")
            if keras_value is not None and name in metrics:
                metrics[f"{name}_delta_vs_keras"] = metrics[name] - keras_value
        sparsity = deploy.weight_sparsity(info["path"])
        metrics["weight_sparsity"] = sparsity["weight_sparsity"]
        metrics["weight_tensors_sparsity"] = sparsity["weight_tensors"]
        info.update(metrics)
        results[fmt] = metrics
        headline = "  ".join(f"{name} {metrics[name]:.4f}"
                             for name in deploy.task_metric_names(data.info.task))
        ctx.say(f"  {fmt:{width}s} {headline}  "
                f"gzip {metrics['gzip_bytes'] / 1024:.1f} KiB  "
                f"median latency {metrics['median_latency_ms']:.3f} ms  "
                f"weight sparsity {metrics['weight_sparsity']:.1%}")
    ctx.results["verify"] = results
    return ctx
