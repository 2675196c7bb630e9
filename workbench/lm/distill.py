"""Distillation of a GPT into a smaller GPT on the teacher's token distributions.

At every position the student learns the teacher's next-token distribution softened by a
temperature `T`, and the true next token (Hinton et al. 2015, "Distilling the Knowledge in a
Neural Network"; for language models, Sanh et al. 2019, "DistilBERT"):

    loss = alpha * CE(next token, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) ||
                                                                  softmax(student / T))

averaged over positions, computed by `keras.distillation.Distiller` with
`keras.distillation.LogitsDistillation` (softmax over the vocabulary axis). The batches are
nanoGPT's random windows of the training split (`workbench.lm.corpus.random_batches`), the
schedule the recipe's (warm-up, cosine decay).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

from workbench.errors import WorkbenchError


@dataclass
class DistilledLanguageModel:
    """The trained student and the distiller's per-chunk losses."""

    model: Any
    history: dict = field(default_factory=dict)


def default_student(teacher, layers=None, width=None, heads=None):
    """A GPT with the teacher's vocabulary and context and half its depth and width."""
    from workbench.lm.model import build_gpt
    from workbench.lm.compress import context_length

    teacher_layers = len(getattr(teacher, "transformer_layers", ())) or 4
    teacher_width = getattr(teacher, "hidden_dim", None) or 128
    width = width or max(16, teacher_width // 2)
    heads = heads or getattr(teacher, "num_heads", 4)
    while width % heads:
        heads //= 2
    return build_gpt(vocabulary_size=int(teacher.output_shape[-1]),
                     context=context_length(teacher), layers=layers or max(1, teacher_layers // 2),
                     heads=heads, width=width, name="student")


def distill_language_model(teacher, student, train_tokens, *, steps=500, batch_size=12,
                           learning_rate=1e-3, warmup_steps=50, temperature=1.0, alpha=0.5,
                           weight_decay=0.1, seed=0, log_every=100, jit_compile="auto"):
    """Train `student` on `teacher`'s token distributions for `steps` steps.

    Args:
        teacher: a trained language model (token ids -> logits); left unchanged.
        student: a language model with the teacher's context and vocabulary.
        train_tokens: the training split's token ids.
        temperature, alpha: see the module docstring; `alpha` weighs the true next token.
    """
    from workbench.lm.compress import context_length
    from workbench.lm.corpus import random_batches

    context = context_length(teacher)
    if context_length(student) != context or student.output_shape[-1] != teacher.output_shape[-1]:
        raise WorkbenchError(
            f"the student reads {context_length(student)} tokens into "
            f"{student.output_shape[-1]} logits, the teacher {context} into "
            f"{teacher.output_shape[-1]}; give the student the teacher's context and vocabulary")
    if steps < 1 or temperature <= 0 or not 0 <= alpha <= 1:
        raise WorkbenchError(f"distillation needs steps >= 1, temperature > 0 and alpha in "
                             f"[0, 1], got {steps}, {temperature}, {alpha}")
    warmup_steps = min(warmup_steps, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup_steps), alpha=0.1, warmup_target=learning_rate,
        warmup_steps=warmup_steps)
    optimizer = keras.optimizers.AdamW(schedule, beta_2=0.99, weight_decay=weight_decay,
                                       global_clipnorm=1.0)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in student.trainable_variables if len(v.shape) < 2])
    teacher_trainable = teacher.trainable
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        # An instance: the name "kl_divergence" would skip the temperature softmax.
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()),
        student_loss_weight=alpha)
    try:
        distiller.compile(optimizer=optimizer,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          jit_compile=jit_compile)
        chunk = max(1, min(log_every, steps // 4))
        batches = random_batches(train_tokens, context, batch_size, seed)
        history = distiller.fit(batches, steps_per_epoch=chunk, epochs=max(1, steps // chunk),
                                verbose=0)
    finally:
        teacher.trainable = teacher_trainable
    return DistilledLanguageModel(model=student, history={
        key: [float(v) for v in values] for key, values in history.history.items()})
