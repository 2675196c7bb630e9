"""Fine-tuning a TF-MOT-wrapped tf_keras twin with a Keras 3 optimizer, in a custom loop.

TF-MOT wraps the twin's layers (pruning masks, fake quantization, cluster centroids) and the
wrapped model must be trained for a while. It is trained here rather than with tf_keras' `fit`,
so the recipe's own Keras 3 optimizer and learning-rate schedule do the updates: under the
TensorFlow backend a Keras 3 optimizer applies gradients to any `tf.Variable`, including a
tf_keras model's. TF-MOT callbacks (`UpdatePruningStep`) are driven by hand, the custom-loop path
TF-MOT documents: `set_model`, `on_train_begin`, `on_train_batch_begin` every step,
`on_epoch_end` every epoch.

Example:

```python
fine_tuning = FineTuning(loss="sparse_categorical_crossentropy", batch_size=32)
with legacy_keras_environment() as tfmot:
    wrapped = tfmot.quantization.keras.quantize_model(tf_keras_twin(model))
    losses = fine_tune(wrapped, x, y, epochs=2, fine_tuning=fine_tuning)
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from workbench.errors import WorkbenchError, suggest


def _adam(epochs, steps_per_epoch):
    import keras

    return keras.optimizers.Adam(1e-3)


@dataclass
class FineTuning:
    """How a compressed model is fine-tuned.

    Args:
        loss: a Keras 3 loss (name, function or `keras.losses.Loss`) of `(y_true, y_pred)`.
        batch_size: examples per step.
        make_optimizer: `fn(epochs, steps_per_epoch)` returning a fresh Keras 3 optimizer, so a
            learning-rate schedule can span exactly the fine-tuning run. Defaults to Adam(1e-3).
        seed: seeds the shuffling of the training examples.
    """

    loss: Union[str, Callable[..., Any]] = "sparse_categorical_crossentropy"
    batch_size: int = 32
    make_optimizer: Callable[[int, int], Any] = _adam
    seed: int = 0

    @classmethod
    def from_recipe(cls, recipe, loss, learning_rate_factor: float = 1.0):
        """`loss` (the family's, for the recipe's task) with the recipe's batch size, seed,
        optimizer and schedule (by name), the learning rate scaled by `learning_rate_factor` and
        the schedule spanning the fine-tuning."""
        from workbench.training import optimizer_for

        def make_optimizer(epochs, steps_per_epoch):
            return optimizer_for(recipe, epochs * steps_per_epoch,
                                 learning_rate_factor=learning_rate_factor)

        return cls(loss=loss, batch_size=recipe.batch_size, make_optimizer=make_optimizer,
                   seed=recipe.seed)


def tf_keras_twin(model):
    """`to_tf_keras(model)`, with an untranslatable layer reported as a `WorkbenchError`."""
    from workbench.compression.bridge import UntranslatableLayerError, to_tf_keras

    try:
        return to_tf_keras(model)
    except UntranslatableLayerError as error:
        _, cls, reason = error.problems[0]
        raise WorkbenchError(
            f"cannot compress model '{model.name}': layer '{error.layer_name}' ({cls}) {reason}; "
            "build the model from built-in Keras layers "
            "(workbench.compression.SUPPORTED_LAYERS)") from error


def is_stream(x):
    """Whether `x` is training data as a stream: a `workbench.data.Data` (its train split is
    used) or a `tf.data.Dataset` of unbatched `(x, y)` examples."""
    from workbench.data import Data

    return isinstance(x, Data) or type(x).__name__.endswith("Dataset") or hasattr(x, "element_spec")


def training_batches(x, y, batch_size, seed=0):
    """`(batched shuffled dataset, steps per epoch)` from arrays `x, y`, a `Data` or a dataset
    of examples. Streams are shuffled through a bounded buffer, never loaded whole."""
    import tensorflow as tf

    from workbench.data import Data, make_dataset
    from workbench.data.core import shuffle_buffer

    if isinstance(x, Data):
        count = x.info.sizes.get("train")
        return (x.batches("train", batch_size, shuffle=True, seed=seed),
                math.ceil(count / batch_size) if count else _count_batches(
                    x.batches("train", batch_size)))
    if is_stream(x):
        dataset = x.shuffle(shuffle_buffer(None), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        return dataset, _count_batches(x.batch(batch_size))
    return make_dataset(x, y, batch_size, shuffle=True, seed=seed), math.ceil(len(x) / batch_size)


def _count_batches(dataset):
    count = int(dataset.cardinality())
    if count < 0:  # unknown (filtered streams): one pass to count
        count = int(dataset.reduce(0, lambda total, _: total + 1))
    return count


def check_training_data(x, y, what):
    """Raise a `WorkbenchError` unless `x` and `y` are non-empty and of the same length (or `x`
    is a stream of examples and `y` is `None`)."""
    if is_stream(x):
        if y is not None:
            raise WorkbenchError(f"{what}: pass labels inside the data set, not as y")
        return
    if x is None or y is None or len(x) == 0 or len(x) != len(y):
        raise WorkbenchError(
            f"{what} needs training examples: x and y of the same, non-zero length "
            f"(got {None if x is None else len(x)} and {None if y is None else len(y)}); "
            "pass the training split")


def fine_tune(model, x, y, *, epochs: int, fine_tuning: Optional[FineTuning] = None,
              callbacks=()):
    """Train `model` (tf_keras or Keras 3) on `(x, y)` with a Keras 3 optimizer.

    Args:
        model: the model to train, typically a TF-MOT-wrapped tf_keras twin.
        x, y: training inputs and targets (NumPy), or `x` a `workbench.data.Data` or a
            `tf.data.Dataset` of unbatched `(x, y)` examples and `y` None.
        epochs: passes over the data.
        fine_tuning: loss, batch size and optimizer; `FineTuning()` when not given.
        callbacks: tf_keras callbacks (such as `UpdatePruningStep`), driven by hand.

    Returns:
        The mean training loss of every epoch.

    Raises:
        WorkbenchError: the loss became NaN or infinite (the run diverged).
    """
    import keras
    import tensorflow as tf

    fine_tuning = fine_tuning or FineTuning()
    dataset, steps_per_epoch = training_batches(x, y, fine_tuning.batch_size, fine_tuning.seed)
    optimizer = fine_tuning.make_optimizer(epochs, steps_per_epoch)
    loss_fn = keras.losses.get(fine_tuning.loss)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train_step(inputs, targets):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = tf.reduce_mean(loss_fn(targets, outputs))
            if model.losses:  # regularization terms the twin carries
                loss += tf.add_n(model.losses)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    epoch_losses = []
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        total, count = 0.0, 0
        for batch, (inputs, targets) in enumerate(dataset):
            for callback in callbacks:
                callback.on_train_batch_begin(batch)
            total += float(train_step(inputs, targets))
            count += 1
            for callback in callbacks:
                callback.on_train_batch_end(batch)
        for callback in callbacks:
            callback.on_epoch_end(epoch)
        epoch_losses.append(total / max(count, 1))
        if not math.isfinite(epoch_losses[-1]):
            raise WorkbenchError(
                f"fine-tuning diverged (loss {epoch_losses[-1]} in epoch {epoch + 1}); lower the "
                "learning rate (the stage's learning_rate_factor) and run again")
    for callback in callbacks:
        callback.on_train_end()
    return epoch_losses


def leaf_layers(model):
    """Layer name -> layer for every layer of `model` that is not itself a model (nested too)."""
    found = {}
    for layer in model.layers:
        if _is_model(layer):
            found.update(leaf_layers(layer))
        else:
            found[layer.name] = layer
    return found


def choose_layers(twin, names, what):
    """The layer names to wrap: `names` checked against the model, or (when empty) every layer
    with trainable weights."""
    layers = leaf_layers(twin)
    for name in names:
        if name not in layers:
            raise WorkbenchError(f"cannot {what} layer '{name}': the model has no such layer; "
                                 f"{suggest(name, layers)}")
    return set(names) or {name for name, layer in layers.items() if layer.trainable_weights}


def clone_wrapping(twin, chosen, make_wrapper):
    """Clone a tf_keras model with the layers named in `chosen` wrapped by `make_wrapper(layer)`,
    TF-MOT's per-layer recipe (`clone_model` with a `clone_function`), nested models included.

    Returns `(model, wrappers, refused)`: the clone, the wrappers made, and layer name -> why
    for the layers `make_wrapper` refused (it raised `ValueError` or returned the layer itself).
    """
    import tf_keras

    wrappers, refused = [], {}

    def wrap(layer):
        if _is_model(layer):
            return tf_keras.models.clone_model(layer, clone_function=wrap)
        if layer.name not in chosen:
            return layer
        try:
            wrapper = make_wrapper(layer)
        except ValueError:
            wrapper = layer
        if wrapper is layer:
            refused[layer.name] = f"is a {type(layer).__name__}, which TF-MOT does not support here"
            return layer
        wrappers.append(wrapper)
        return wrapper

    return tf_keras.models.clone_model(twin, clone_function=wrap), wrappers, refused


def _is_model(layer):
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def predict(model, x, batch_size=256):
    """Outputs of `model` (tf_keras or Keras 3) on `x`, in inference mode, as NumPy."""
    outputs = [np.asarray(model(x[start:start + batch_size], training=False))
               for start in range(0, len(x), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def accuracy(model, x, y):
    """Top-1 accuracy of a classifier on integer labels."""
    if x is None or len(x) == 0:
        return None
    return float(np.mean(np.argmax(predict(model, x), axis=-1) == np.asarray(y)))
