import keras
import numpy as np

from workbench.callbacks._messages import print_message
from workbench.schedules.scaled_schedule import ScaledSchedule


def _optimizer_holding_the_rate(optimizer):
    # LossScaleOptimizer reports and sets the learning rate of the optimizer
    # it wraps; the schedule, if any, lives on that inner optimizer.
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


@keras.saving.register_keras_serializable(package="workbench")
class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Reduce the learning rate when a metric has stopped improving, even
    when the optimizer follows a learning-rate schedule.

    Keras' `ReduceLROnPlateau`, with the same arguments and behaviour for
    optimizers created with a float learning rate: after `patience` epochs
    without an improvement of at least `min_delta` in `monitor`, the rate is
    multiplied by `factor`, then `cooldown` epochs pass before waiting
    starts again. The effective learning rate is logged in
    `logs["learning_rate"]` every epoch, before any reduction.

    Keras' own callback raises `TypeError` when the optimizer was given a
    `LearningRateSchedule`, because such a rate cannot be set. Here the
    schedule's *output* is scaled instead: at the start of training the
    schedule is wrapped in a `workbench.schedules.ScaledSchedule`, whose
    multiplier lives in a variable, and each reduction multiplies that
    variable by `factor`:

    ```python
    learning_rate(step) = scale * schedule(step)   # scale *= factor
    ```

    The schedule keeps its shape (a cosine decay stays a cosine decay, just
    lower). Why a variable: `model.fit` traces the train step once and a
    Python number in the schedule would be frozen into that graph, while a
    variable is read at every step. When the wrapper is installed, the
    model's train function is rebuilt so that a graph traced by an earlier
    `fit()` call does not keep the unwrapped schedule. The wrapper becomes
    part of the optimizer's config, so `model.save()` records the reduced
    scale and a loaded model resumes at the reduced rate; a later run of
    this callback reuses the wrapper instead of stacking another.

    `min_lr` bounds what a reduction can do: a reduction never takes the
    effective rate below `min_lr` at the step it happens, and no reduction
    happens once the rate is at or below `min_lr`. A schedule that decays
    on its own may still go below `min_lr` later; that is the schedule's
    decision, not a reduction.

    Example:

    >>> import numpy as np
    >>> schedule = keras.optimizers.schedules.CosineDecay(0.1, 1000)
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(schedule), loss="mse")
    >>> reduce_lr = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2)
    >>> history = model.fit(np.zeros((8, 2)), np.zeros((8, 1)), epochs=4,
    ...                     callbacks=[reduce_lr], verbose=0)
    >>> step = model.optimizer.iterations
    >>> round(float(model.optimizer.learning_rate / schedule(step)), 3)
    0.5

    Args:
        monitor: String. Quantity to be monitored.
        factor: Float < 1. Factor by which the learning rate is reduced:
            `new_lr = lr * factor`.
        patience: Integer. Number of epochs with no improvement after which
            the learning rate is reduced.
        verbose: Integer. 0: quiet, 1: update messages.
        mode: One of `{"auto", "min", "max"}`: whether the monitored
            quantity should decrease or increase; `"auto"` infers it from
            the name.
        min_delta: Float. Threshold for measuring the new optimum, to only
            focus on significant changes.
        cooldown: Integer. Number of epochs to wait before resuming normal
            operation after the learning rate has been reduced.
        min_lr: Float. Lower bound on the learning rate (see above for
            schedules).
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__(
            monitor=monitor,
            factor=factor,
            patience=patience,
            verbose=verbose,
            mode=mode,
            min_delta=min_delta,
            cooldown=cooldown,
            min_lr=min_lr,
        )

    def _optimizers(self):
        optimizer = self.model.optimizer
        return list(getattr(optimizer, "optimizers", [optimizer]))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        wrapped_any = False
        for optimizer in self._optimizers():
            holder = _optimizer_holding_the_rate(optimizer)
            # Keras exposes only the schedule's current value publicly; the
            # schedule object itself is on `_learning_rate`.
            rate = holder._learning_rate
            if isinstance(
                rate, keras.optimizers.schedules.LearningRateSchedule
            ) and not isinstance(rate, ScaledSchedule):
                holder.learning_rate = ScaledSchedule(rate)
                wrapped_any = True
        if wrapped_any:
            self.model.make_train_function(force=True)

    def _reduce_optimizer_lr(self, optimizer, epoch, name=""):
        rate = _optimizer_holding_the_rate(optimizer)._learning_rate
        if not isinstance(rate, ScaledSchedule):
            return super()._reduce_optimizer_lr(optimizer, epoch, name)
        old_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if old_lr <= np.float32(self.min_lr):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        rate.set_scale(rate.scale * new_lr / old_lr)
        if keras.backend.backend() == "jax":
            # JAX's compiled train step takes the model's and optimizer's
            # variables as inputs and bakes every other variable's value in
            # as a constant; the scale is such a variable, so recompile.
            self.model.make_train_function(force=True)
        if self.verbose > 0:
            name_str = f" {name}" if name else ""
            print_message(
                f"\nEpoch {epoch + 1}: ReduceLROnPlateau scaling the"
                f"{name_str} learning-rate schedule by {rate.scale:.4g}; "
                f"learning rate now {new_lr:.4g}."
            )
        return True

    def get_config(self):
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "verbose": self.verbose,
            "mode": self.mode,
            # Keras flips the sign of `min_delta` once it knows the mode.
            "min_delta": abs(self.min_delta),
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
