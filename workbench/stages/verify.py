"""Run every exported `.tflite` file with the LiteRT interpreter on the test split."""

from workbench import deploy


def verify(ctx):
    data = ctx.require_data("verify")
    if not ctx.exports:
        from workbench.errors import WorkbenchError

        raise WorkbenchError("stage 'verify' has nothing to check: include 'export' in --stages")
    settings = ctx.recipe.verify
    keras_accuracy = ctx.results.get("evaluate", {}).get("test_accuracy")
    results = {}
    for fmt, info in ctx.exports.items():
        metrics = deploy.verify_tflite(info["path"], data.x_test, data.y_test,
                                       num_threads=settings.num_threads,
                                       max_examples=settings.max_examples)
        if keras_accuracy is not None:
            metrics["accuracy_delta_vs_keras"] = metrics["accuracy"] - keras_accuracy
        info.update(metrics)
        results[fmt] = metrics
        ctx.say(f"  {fmt:8s} accuracy {metrics['accuracy']:.4f}  "
                f"gzip {metrics['gzip_bytes'] / 1024:.1f} KiB  "
                f"median latency {metrics['median_latency_ms']:.3f} ms")
    ctx.results["verify"] = results
    return ctx
