"""Language models: the `language_model` task's corpus, GPT model, step-based training,
evaluation and generation (`workbench.lm.stages` holds the pipeline stages)."""
