"""Continue text prompts with the run's language model (see workbench.lm.generate)."""


def generate(ctx):
    from workbench.lm.stages import generate as generate_text

    return generate_text(ctx)


def check_generate(recipe, data_info):
    """Before any work: `generate` needs the language-model task."""
    from workbench.lm.stages import preflight

    preflight(recipe, data_info)


def check_language_model_training(recipe, data_info):
    """Before any work: a language model's builder must read `lm.context` tokens."""
    if data_info.task == "language_model":
        from workbench.lm.stages import preflight

        preflight(recipe, data_info)
