import keras


@keras.saving.register_keras_serializable(package="workbench")
class StepDecay(keras.optimizers.schedules.ExponentialDecay):
    """Step decay: multiply the rate by `factor` every `step_size` steps.

    ```python
    def learning_rate(step):
        return initial_learning_rate * factor ** (step // step_size)
    ```

    The classic "divide by 10 every 30 epochs" ImageNet schedule
    (He et al., 2016, "Deep Residual Learning for Image Recognition",
    https://arxiv.org/abs/1512.03385). It is Keras' `ExponentialDecay` with
    `staircase=True`, spelled with the names recipes use; only the
    arguments differ, so the computation is Keras' own.

    Example:

    >>> schedule = StepDecay(0.1, step_size=1000, factor=0.1)
    >>> [round(float(schedule(s)), 4) for s in (0, 999, 1000, 2500)]
    [0.1, 0.1, 0.01, 0.001]
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)

    Args:
        initial_learning_rate: Python float. The rate at step 0.
        step_size: Positive int. Number of optimizer steps between drops.
        factor: Python float. Multiplier applied at every drop, usually in
            (0, 1).
        name: String. Name scope of the operations. Defaults to
            `"StepDecay"`.
    """

    def __init__(self, initial_learning_rate, step_size, factor, name="StepDecay"):
        if int(step_size) != step_size or step_size <= 0:
            raise ValueError(
                "Argument `step_size` must be a positive integer. "
                f"Received: step_size={step_size!r}"
            )
        super().__init__(
            initial_learning_rate,
            decay_steps=int(step_size),
            decay_rate=factor,
            staircase=True,
            name=name,
        )
        self.step_size = int(step_size)
        self.factor = factor

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "factor": self.factor,
            "name": self.name,
        }
