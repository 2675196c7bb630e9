"""Quantize the run's model the task's way (post-training or quantization-aware for the
supervised family; Keras `model.quantize` modes compared for language models). Settings:
`quantize.*`."""


def quantize(ctx):
    ctx.require_model("quantize")
    ctx.require_data("quantize")
    ctx.results["quantize"] = ctx.task.quantize(ctx)
    return ctx
