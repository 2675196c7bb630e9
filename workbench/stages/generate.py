"""Continue text prompts with the run's model; samples go to the report and `samples.txt`."""


def generate(ctx):
    ctx.require_model("generate")
    ctx.require_data("generate")
    samples, settings = ctx.task.generate(ctx)
    lines = []
    for sample in samples:
        lines += [f"--- prompt: {sample['prompt']!r} ({settings.sampler})",
                  sample["prompt"] + sample["continuation"], ""]
    ctx.run_dir.write_text("samples.txt", "\n".join(lines))
    ctx.results["generate"] = {"sampler": settings.sampler, "max_tokens": settings.max_tokens,
                               "temperature": settings.temperature, "samples": samples}
    for sample in samples:
        text = (sample["prompt"] + sample["continuation"]).replace("\n", "\\n")
        ctx.say(f"  {text[:160]}")
    return ctx
