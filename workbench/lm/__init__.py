"""The language-model family: its corpus, GPT model, step-based training, evaluation,
generation, search, compression and LiteRT export. `workbench.lm.task.LanguageModelTask` is the
family's `Task` (registered for the task name it answers to); `pipeline` and `shipping` hold what
it computes for each stage."""
