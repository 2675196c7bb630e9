import keras
from keras import ops


@keras.saving.register_keras_serializable(package="workbench")
class InverseTimePowerDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Inverse-time decay raised to a power.

    ```python
    def learning_rate(step):
        return initial_learning_rate / (1 + decay_rate * step) ** power
    ```

    With `power=1` this is Keras' `InverseTimeDecay` with `decay_steps=1`;
    `power=0.5` gives the 1/sqrt(t) decay used by the analysis of Adam and
    AdaGrad-style methods (Kingma & Ba, 2015, "Adam: A Method for Stochastic
    Optimization", https://arxiv.org/abs/1412.6980, Theorem 4.1). Robbins &
    Monro's (1951) conditions for SGD to converge, sum(lr) = inf and
    sum(lr^2) < inf, hold for `0.5 < power <= 1`.

    Example:

    >>> schedule = InverseTimePowerDecay(0.1, decay_rate=0.01, power=0.5)
    >>> round(float(schedule(300)), 4)
    0.05
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)

    Args:
        initial_learning_rate: Python float. The rate at step 0.
        decay_rate: Non-negative Python float, the `beta` above: how fast the
            denominator grows per optimizer step.
        power: Non-negative Python float, the `gamma` above.
        name: String. Name scope of the operations. Defaults to
            `"InverseTimePowerDecay"`.
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_rate,
        power,
        name="InverseTimePowerDecay",
    ):
        super().__init__()
        if decay_rate < 0:
            raise ValueError(
                "Argument `decay_rate` must be >= 0. "
                f"Received: decay_rate={decay_rate}"
            )
        if power < 0:
            raise ValueError(
                f"Argument `power` must be >= 0. Received: power={power}"
            )
        self.initial_learning_rate = initial_learning_rate
        self.decay_rate = decay_rate
        self.power = power
        self.name = name

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            denominator = ops.power(1.0 + self.decay_rate * step, self.power)
            return ops.cast(self.initial_learning_rate, "float32") / denominator

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_rate": self.decay_rate,
            "power": self.power,
            "name": self.name,
        }
