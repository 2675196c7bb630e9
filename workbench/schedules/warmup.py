import keras
from keras import ops

from workbench.schedules._interpolation import clipped_fraction
from workbench.schedules._interpolation import interpolate


@keras.saving.register_keras_serializable(package="workbench")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear learning-rate warmup in front of any schedule.

    Large learning rates early in training, while the weights are far from
    any minimum and adaptive optimizers' moment estimates are still poor,
    can make training diverge. Ramping the rate up linearly over the first
    steps avoids that (Goyal et al., 2017, "Accurate, Large Minibatch SGD:
    Training ImageNet in 1 Hour", https://arxiv.org/abs/1706.02677).

    The wrapped schedule starts *after* the warmup, so its own step count
    begins at zero when the warmup ends and the rate is continuous there:

    ```python
    def learning_rate(step):
        if step < warmup_steps:
            target = schedule(0)
            return initial_learning_rate + (
                target - initial_learning_rate) * step / warmup_steps
        return schedule(step - warmup_steps)
    ```

    A plain float `schedule` is a constant rate, so `Warmup(1e-3, 500)` is a
    ramp to `1e-3` followed by `1e-3` forever.

    Example:

    >>> decay = keras.optimizers.schedules.ExponentialDecay(
    ...     0.1, decay_steps=100, decay_rate=0.5)
    >>> schedule = Warmup(decay, warmup_steps=10)
    >>> round(float(schedule(5)), 4)
    0.05
    >>> round(float(schedule(110)), 4)
    0.05
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)

    Args:
        schedule: A `keras.optimizers.schedules.LearningRateSchedule` or a
            Python float: the rate to follow once the warmup is over.
        warmup_steps: Non-negative int. Number of optimizer steps over which
            the rate rises linearly. `0` disables the warmup.
        initial_learning_rate: Python float. The rate at step 0.
        name: String. Name scope of the operations. Defaults to `"Warmup"`.
    """

    def __init__(
        self,
        schedule,
        warmup_steps,
        initial_learning_rate=0.0,
        name="Warmup",
    ):
        super().__init__()
        if not isinstance(
            schedule, keras.optimizers.schedules.LearningRateSchedule
        ):
            try:
                schedule = float(schedule)
            except (TypeError, ValueError):
                raise TypeError(
                    "Argument `schedule` must be a "
                    "keras.optimizers.schedules.LearningRateSchedule or a "
                    f"float. Received: schedule={schedule!r}"
                ) from None
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(
                "Argument `warmup_steps` must be a non-negative integer. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.initial_learning_rate = initial_learning_rate
        self.name = name

    def _after_warmup(self, step):
        if isinstance(self.schedule, float):
            return ops.convert_to_tensor(self.schedule, dtype="float32")
        return ops.cast(self.schedule(step), "float32")

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.convert_to_tensor(step)
            # The inner schedule sees the step in its original (usually
            # integer) dtype, as it would without the wrapper: schedules
            # such as PiecewiseConstantDecay compare against int boundaries.
            shifted = ops.maximum(step - self.warmup_steps, 0)
            after = self._after_warmup(shifted)
            if self.warmup_steps == 0:
                return after
            target = self._after_warmup(ops.zeros_like(step))
            fraction = clipped_fraction(
                ops.cast(step, "float32"), 0.0, float(self.warmup_steps)
            )
            warm = interpolate(
                ops.cast(self.initial_learning_rate, "float32"),
                target,
                fraction,
            )
            return ops.where(step < self.warmup_steps, warm, after)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.optimizers.schedules.deserialize(
                config["schedule"], custom_objects=custom_objects
            )
        return cls(**config)

    def get_config(self):
        schedule = self.schedule
        if not isinstance(schedule, float):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {
            "schedule": schedule,
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "name": self.name,
        }
