"""Knowledge distillation from a trained teacher into a smaller student, with Keras' `Distiller`.

The student learns from the labels and from the teacher's softened predictions (Hinton et al.,
2015, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531): the loss is
`alpha * loss(y, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))`,
computed by `keras.distillation.Distiller` with `keras.distillation.LogitsDistillation`.

`LogitsDistillation` expects logits. A model that ends in a softmax outputs probabilities `p`;
`log p` equals its logits up to a per-example constant, which the temperature softmax cancels,
so such outputs are turned into logits that way before the loss sees them.

Example:

```python
result = distill(teacher, student, x_train, y_train, alpha=0.1, temperature=3.0, epochs=20)
result.model                # the trained student
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import keras

from workbench.compression.training import FineTuning, check_training_data
from workbench.errors import WorkbenchError


class _ProbabilityAwareLogitsDistillation(keras.distillation.LogitsDistillation):
    """`LogitsDistillation` that first takes the log of outputs that are softmax probabilities."""

    def __init__(self, temperature=3.0, teacher_probabilities=False,
                 student_probabilities=False):
        # An instance, not the default name: `keras.losses.get("kl_divergence")` is the plain
        # function, which skips LogitsDistillation's softmax-and-T^2 branch for KLDivergence and
        # would compare scaled logits as if they were probabilities.
        super().__init__(temperature=temperature, loss=keras.losses.KLDivergence())
        self.teacher_probabilities = teacher_probabilities
        self.student_probabilities = student_probabilities

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        def to_logits(outputs, probabilities):
            if not probabilities:
                return outputs
            return keras.tree.map_structure(
                lambda p: keras.ops.log(keras.ops.clip(p, 1e-7, 1.0)), outputs)

        return super().compute_loss(to_logits(teacher_outputs, self.teacher_probabilities),
                                    to_logits(student_outputs, self.student_probabilities),
                                    **kwargs)

    def get_config(self):
        return {**super().get_config(), "teacher_probabilities": self.teacher_probabilities,
                "student_probabilities": self.student_probabilities}


@dataclass
class Distilled:
    """What `distill` returns.

    Attributes:
        model: the trained student (the same object that was passed in).
        history: the distiller's per-epoch metrics (`student_loss`, `distillation_loss`, ...).
    """

    model: Any
    history: dict = field(default_factory=dict)


def outputs_probabilities(model):
    """Whether a Keras 3 model's (first) output comes from a softmax."""
    layer = model.outputs[0]._keras_history[0]
    return (isinstance(layer, keras.layers.Softmax)
            or getattr(layer, "activation", None) is keras.activations.softmax)


def distill(teacher, student, x, y, *, alpha: float = 0.1, temperature: float = 3.0,
            epochs: int = 20, fine_tuning: Optional[FineTuning] = None, metrics=("accuracy",),
            validation_data=None):
    """Train `student` to imitate `teacher` (and fit the labels) with `keras.distillation`.

    Args:
        teacher: the trained Keras 3 model (frozen during distillation, then restored).
        student: a built, smaller Keras 3 model with the same input and output shapes.
        x, y: training examples.
        alpha: weight of the label loss (`student_loss_weight`); `1 - alpha` weighs imitation.
        temperature: softmax temperature of the imitation loss.
        epochs: training epochs.
        fine_tuning: label loss, batch size and Keras 3 optimizer; `FineTuning()` when not given.
        metrics: metrics reported during training.
        validation_data: optional `(x_val, y_val)` or a data set of examples; with `x` a
            `workbench.data.Data`, its validation split.

    Raises:
        WorkbenchError: a setting out of range, models whose shapes do not match, no data.
    """
    from workbench.compression.training import training_batches
    from workbench.data import Data, make_dataset

    if not 0 <= alpha <= 1 or temperature <= 0 or epochs < 1:
        raise WorkbenchError(
            f"distillation needs alpha in [0, 1], temperature > 0 and epochs >= 1, got alpha "
            f"{alpha}, temperature {temperature}, epochs {epochs}")
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
            raise WorkbenchError(f"the distillation {role} must be a built Keras 3 Sequential or "
                                 f"Functional model, got {type(model).__name__}")
    check_training_data(x, y, "distillation")
    fine_tuning = fine_tuning or FineTuning()
    loss = _ProbabilityAwareLogitsDistillation(
        temperature, teacher_probabilities=outputs_probabilities(teacher),
        student_probabilities=outputs_probabilities(student))
    teacher_trainable = teacher.trainable
    try:
        distiller = keras.distillation.Distiller(
            teacher=teacher, student=student, distillation_losses=loss, student_loss_weight=alpha)
    except ValueError as error:
        raise WorkbenchError(f"cannot distill '{teacher.name}' into '{student.name}': {error}; "
                             "give the student the teacher's input and output shapes") from error
    try:
        dataset, steps_per_epoch = training_batches(x, y, fine_tuning.batch_size,
                                                    fine_tuning.seed)
        distiller.compile(optimizer=fine_tuning.make_optimizer(epochs, steps_per_epoch),
                          loss=fine_tuning.loss, metrics=list(metrics))
        if isinstance(x, Data) and validation_data is None:
            validation = x.batches("val", fine_tuning.batch_size)
        elif validation_data is not None and not isinstance(validation_data, tuple):
            validation = validation_data.batch(fine_tuning.batch_size)
        else:
            validation = (make_dataset(*validation_data, fine_tuning.batch_size)
                          if validation_data is not None else None)
        history = distiller.fit(dataset, validation_data=validation, epochs=epochs, verbose=0,
                                shuffle=False)
    finally:
        teacher.trainable = teacher_trainable  # the Distiller freezes it
    return Distilled(model=student,
                     history={k: [float(v) for v in values]
                              for k, values in history.history.items()})
