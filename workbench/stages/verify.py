"""Run every exported `.tflite` file with the LiteRT interpreter and compare it with the Keras
model, with the task's measures."""

from workbench.errors import WorkbenchError


def verify(ctx):
    ctx.require_data("verify")
    if not ctx.exports:
        raise WorkbenchError("stage 'verify' has nothing to check: include 'export' (or a "
                             "compression stage: prune, quantize, cluster, distill) in --stages")
    ctx.results["verify"] = ctx.task.verify(ctx)
    return ctx
