import keras
from keras import ops


@keras.saving.register_keras_serializable(package="workbench")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Any learning-rate schedule multiplied by an adjustable factor.

    ```python
    def learning_rate(step):
        return scale * schedule(step)
    ```

    `scale` lives in a non-trainable variable. A compiled `train_function`
    reads a variable's value on every step, whereas a Python number would
    be frozen into the traced graph; so `set_scale` takes effect on the very
    next step without retracing on TensorFlow and PyTorch. JAX's compiled
    step bakes in the value of every variable that is not the model's or
    the optimizer's, so there the train function must be rebuilt after
    `set_scale` (`ReduceLROnPlateau` does). This is how
    `workbench.callbacks.ReduceLROnPlateau` lowers the rate of an optimizer
    that was given a schedule, whose learning rate Keras cannot set.

    `get_config()` records the current value of `scale`, so a model saved
    after a reduction loads with the reduced rate. The variable is not
    tracked by the optimizer (it is not part of `optimizer.variables`),
    which keeps optimizer checkpoints compatible with and without the
    wrapper; the value travels in the config instead.

    Example:

    >>> base = keras.optimizers.schedules.ExponentialDecay(
    ...     0.1, decay_steps=100, decay_rate=0.5)
    >>> schedule = ScaledSchedule(base)
    >>> schedule.set_scale(0.1)
    >>> round(float(schedule(100)), 4)
    0.005
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)

    Args:
        schedule: The `keras.optimizers.schedules.LearningRateSchedule` to
            scale.
        scale: Python float. The initial multiplier.
        name: String. Name scope of the operations. Defaults to
            `"ScaledSchedule"`.
    """

    def __init__(self, schedule, scale=1.0, name="ScaledSchedule"):
        super().__init__()
        if not isinstance(
            schedule, keras.optimizers.schedules.LearningRateSchedule
        ):
            raise TypeError(
                "ScaledSchedule wraps a "
                "keras.optimizers.schedules.LearningRateSchedule. "
                f"Received: schedule={schedule!r}. A float learning rate is "
                "already settable through `optimizer.learning_rate`."
            )
        self.schedule = schedule
        self.name = name
        self._scale = keras.Variable(
            float(scale),
            dtype="float32",
            trainable=False,
            name="learning_rate_scale",
        )

    @property
    def scale(self):
        """The current multiplier, as a Python float."""
        return float(ops.convert_to_numpy(self._scale))

    def set_scale(self, scale):
        self._scale.assign(float(scale))

    def __call__(self, step):
        with keras.name_scope(self.name):
            base = ops.cast(self.schedule(step), "float32")
            return base * self._scale

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(
            config["schedule"], custom_objects=custom_objects
        )
        return cls(**config)

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "scale": self.scale,
            "name": self.name,
        }
