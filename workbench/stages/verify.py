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
    keras_accuracy = ctx.results.get("evaluate", {}).get("test_accuracy")
    results = {}
    width = max(8, *(len(name) for name in ctx.exports))
    for fmt, info in ctx.exports.items():
        metrics = deploy.verify_tflite(info["path"], data.x_test, data.y_test,
                                       num_threads=settings.num_threads,
                                       max_examples=settings.max_examples)
        if keras_accuracy is not None:
            metrics["accuracy_delta_vs_keras"] = metrics["accuracy"] - keras_accuracy
        sparsity = deploy.weight_sparsity(info["path"])
        metrics["weight_sparsity"] = sparsity["weight_sparsity"]
        metrics["weight_tensors_sparsity"] = sparsity["weight_tensors"]
        info.update(metrics)
        results[fmt] = metrics
        ctx.say(f"  {fmt:{width}s} accuracy {metrics['accuracy']:.4f}  "
                f"gzip {metrics['gzip_bytes'] / 1024:.1f} KiB  "
                f"median latency {metrics['median_latency_ms']:.3f} ms  "
                f"weight sparsity {metrics['weight_sparsity']:.1%}")
    ctx.results["verify"] = results
    return ctx
