"""Magnitude pruning of a Keras 3 model with TF-MOT, through its tf_keras twin.

The model is bridged to tf_keras, the chosen layers are wrapped with
`tfmot.sparsity.keras.prune_low_magnitude` (unstructured, or 2:4 structured with
`sparsity_m_by_n=(2, 4)`), the wrapped twin is fine-tuned with a Keras 3 optimizer while
`UpdatePruningStep` is driven by hand (`training.fine_tune`), the wrappers are removed with
`strip_pruning`, and the weights, now with zeros, come home as a Keras 3 model.

Schedules (Zhu & Gupta, 2017, "To prune, or not to prune", arXiv:1710.01878):
- `"polynomial"`: `PolynomialDecay` raises sparsity from `initial_sparsity` to `target_sparsity`
  over the first three quarters of the fine-tuning steps (the last quarter trains at the target,
  so accuracy recovers); masks are updated every `frequency` steps.
- `"constant"`: `ConstantSparsity` prunes to `target_sparsity` at the first update and keeps it.

2:4 structured sparsity (two zeros in every four consecutive input-channel weights, the pattern
sparse tensor cores and XNNPACK accelerate) ignores the schedule's sparsity: it is always 50%.

Example:

```python
result = prune(model, x_train, y_train, target_sparsity=0.8, epochs=4)
result.model                # a Keras 3 model whose kernels are 80% zeros
result.layer_sparsity       # {"conv2d": 0.8, "dense": 0.8, ...}
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from workbench.compression.environment import legacy_keras_environment
from workbench.compression.training import (
    FineTuning, check_training_data, choose_layers, training_batches, clone_wrapping, fine_tune, leaf_layers,
    tf_keras_twin)
from workbench.errors import WorkbenchError, suggest
from workbench.settings import PRUNE_SCHEDULES, PRUNE_STRUCTURES

RAMP_FRACTION = 0.75
"""Share of the fine-tuning steps over which the polynomial schedule reaches the target."""


@dataclass
class Pruned:
    """What `prune` returns.

    Attributes:
        model: the pruned Keras 3 model (uncompiled).
        layer_sparsity: layer name -> fraction of zeros in the weights TF-MOT pruned.
        skipped_layers: layer name -> why it was left dense (only when no layers were named).
        losses: mean fine-tuning loss of every epoch.
    """

    model: Any
    layer_sparsity: dict
    skipped_layers: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)


def kernel_sparsity(model):
    """Layer name -> fraction of zeros in that layer's multi-dimensional weights (its kernels).

    Works for Keras 3 and tf_keras models, and reaches into nested models.
    """
    found = {}
    for layer in leaf_layers(model).values():
        kernels = [np.asarray(w) for w in layer.weights if len(w.shape) >= 2]
        if kernels:
            zeros = sum(int(np.sum(k == 0)) for k in kernels)
            found[layer.name] = zeros / sum(k.size for k in kernels)
    return found


def check_prune_arguments(target_sparsity, initial_sparsity, schedule, structure, epochs,
                          frequency):
    """Raise a `WorkbenchError` for a pruning setting out of range or not a known choice."""
    if not 0 <= target_sparsity < 1:
        raise WorkbenchError(f"target sparsity must be in [0, 1), got {target_sparsity}; "
                             "use e.g. 0.8 to zero 80% of the weights")
    if not 0 <= initial_sparsity <= target_sparsity:
        raise WorkbenchError(f"initial sparsity must be in [0, target sparsity "
                             f"{target_sparsity}], got {initial_sparsity}")
    if schedule not in PRUNE_SCHEDULES:
        raise WorkbenchError(f"unknown pruning schedule '{schedule}': "
                             f"{suggest(schedule, PRUNE_SCHEDULES)}")
    if structure not in PRUNE_STRUCTURES:
        raise WorkbenchError(f"unknown pruning structure '{structure}': "
                             f"{suggest(structure, PRUNE_STRUCTURES)}")
    if epochs < 1 or frequency < 1:
        raise WorkbenchError(f"pruning needs epochs >= 1 and frequency >= 1, got {epochs} "
                             f"and {frequency}")


def prune(model, x, y, *, target_sparsity: float = 0.8, initial_sparsity: float = 0.0,
          schedule: str = "polynomial", structure: str = "unstructured", layers=(),
          epochs: int = 4, frequency: int = 10, fine_tuning: Optional[FineTuning] = None):
    """Prune a Keras 3 model's weights by magnitude with TF-MOT and fine-tune it.

    Args:
        model: a built Keras 3 Sequential or Functional model (left unchanged).
        x, y: training examples for the fine-tuning.
        target_sparsity: fraction of each pruned layer's weights set to zero, in [0, 1).
        initial_sparsity: where the polynomial schedule starts.
        schedule: `"polynomial"` (`PolynomialDecay`) or `"constant"` (`ConstantSparsity`).
        structure: `"unstructured"` or `"2:4"` (`sparsity_m_by_n=(2, 4)`).
        layers: names of the layers to prune; empty prunes every layer TF-MOT can prune (and,
            for 2:4, to which the pattern applies).
        epochs: fine-tuning epochs.
        frequency: steps between mask updates.
        fine_tuning: loss, batch size and Keras 3 optimizer (`FineTuning.from_recipe(recipe)`
            for a recipe's own); `FineTuning()` when not given.

    Returns:
        A `Pruned` with the Keras 3 model and the sparsity of every pruned layer.

    Raises:
        WorkbenchError: a setting out of range, an unknown or unprunable layer name, 2:4 asked of
            a layer it cannot apply to, a layer the bridge cannot translate, or no training data.
    """
    check_prune_arguments(target_sparsity, initial_sparsity, schedule, structure, epochs,
                          frequency)
    check_training_data(x, y, "pruning")
    fine_tuning = fine_tuning or FineTuning()
    total_steps = epochs * training_batches(x, y, fine_tuning.batch_size)[1]
    with legacy_keras_environment() as tfmot:
        from workbench.compression.bridge import from_tf_keras

        twin = tf_keras_twin(model)
        params = {"pruning_schedule": _schedule(tfmot, schedule, initial_sparsity,
                                                target_sparsity, total_steps, frequency)}
        if structure == "2:4":
            params["sparsity_m_by_n"] = (2, 4)
        wrapped, wrappers, skipped = _wrap_layers(tfmot, twin, tuple(layers), params)
        losses = fine_tune(wrapped, x, y, epochs=epochs, fine_tuning=fine_tuning,
                           callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        layer_sparsity = {w.layer.name: _zero_fraction(w.prunable_weights) for w in wrappers}
        pruned = from_tf_keras(tfmot.sparsity.keras.strip_pruning(wrapped))
    return Pruned(model=pruned, layer_sparsity=layer_sparsity, skipped_layers=skipped,
                  losses=losses)


def _schedule(tfmot, name, initial, target, total_steps, frequency):
    sparsity = tfmot.sparsity.keras
    ramp_steps = max(1, round(RAMP_FRACTION * total_steps))
    # Masks update only at multiples of the frequency; end the ramp on one so the last update
    # reaches the target exactly, and update at least once however short the fine-tuning.
    frequency = min(frequency, ramp_steps)
    if name == "constant":
        return sparsity.ConstantSparsity(target, begin_step=0, frequency=frequency)
    end_step = frequency * (ramp_steps // frequency)
    return sparsity.PolynomialDecay(initial_sparsity=initial, final_sparsity=target,
                                    begin_step=0, end_step=end_step, frequency=frequency)


def _wrap_layers(tfmot, twin, names, params):
    """Wrap the chosen layers; return the wrapped model, its wrappers and the skipped layers."""
    chosen = choose_layers(twin, names, "prune")

    def make_wrapper(layer):
        return tfmot.sparsity.keras.prune_low_magnitude(layer, **params)

    wrapped, wrappers, problems = clone_wrapping(twin, chosen, make_wrapper)
    for wrapper in wrappers:
        why = "has no weights to prune" if not wrapper.prunable_weights else (
            _two_four_problem(wrapper) if "sparsity_m_by_n" in params else None)
        if why:
            problems[wrapper.layer.name] = why
    if problems and names:
        name, why = next(iter(problems.items()))
        raise WorkbenchError(f"cannot prune layer '{name}': it {why}; leave it out of the "
                             "pruned layers")
    if problems:  # layers picked implicitly: leave out the ones that cannot take the pruning
        wrapped, wrappers, _ = clone_wrapping(twin, chosen - set(problems), make_wrapper)
    if not wrappers:
        raise WorkbenchError("the model has no layer that can be pruned with these settings; "
                             "prune a model with Dense or Conv layers")
    return wrapped, wrappers, problems


def _two_four_problem(wrapper):
    """Why 2:4 sparsity cannot apply to a wrapped layer, or None when it can."""
    for weight in wrapper.prunable_weights:
        shape = tuple(weight.shape)
        if len(shape) not in (2, 4):
            return (f"has a rank-{len(shape)} kernel, and 2:4 sparsity applies to rank-2 "
                    "(Dense) and rank-4 (Conv2D) kernels only")
        if shape[-2] % 4:
            return (f"has {shape[-2]} input channels, and 2:4 sparsity groups 4 consecutive "
                    "input channels, so it needs a multiple of 4")
    return None


def _zero_fraction(weights):
    values = [np.asarray(w) for w in weights]
    return sum(int(np.sum(v == 0)) for v in values) / max(1, sum(v.size for v in values))
