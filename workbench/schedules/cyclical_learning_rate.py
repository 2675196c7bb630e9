import keras
from keras import ops

from workbench.schedules._interpolation import check_choice


@keras.saving.register_keras_serializable(package="workbench")
class CyclicalLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Cyclical learning rates (Smith, 2015).

    The rate moves back and forth between `initial_learning_rate` and
    `maximal_learning_rate` in triangles of `2 * step_size` steps, which
    lets training escape saddle points without hand-tuning a decay
    (Smith, 2015, "Cyclical Learning Rates for Training Neural Networks",
    https://arxiv.org/abs/1506.01186):

    ```python
    def learning_rate(step):
        cycle = floor(1 + step / (2 * step_size))
        x = abs(step / step_size - 2 * cycle + 1)
        return initial + (maximal - initial) * max(0, 1 - x) * scale(step)
    ```

    where `scale` depends on `mode`:

    - `"triangular"`: `1`, every cycle reaches `maximal_learning_rate`;
    - `"triangular2"`: `1 / 2 ** (cycle - 1)`, the amplitude halves every
      cycle;
    - `"exp_range"`: `gamma ** step`, the amplitude decays exponentially.

    Smith suggests `step_size` of 2 to 10 epochs' worth of steps.

    Example:

    >>> schedule = CyclicalLearningRate(1e-3, 6e-3, step_size=100)
    >>> [round(float(schedule(s)), 4) for s in (0, 50, 100, 200)]
    [0.001, 0.0035, 0.006, 0.001]
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)

    Args:
        initial_learning_rate: Python float. The bottom of every cycle
            ("base_lr" in the paper).
        maximal_learning_rate: Python float. The top of the first cycle
            ("max_lr").
        step_size: Positive int. Steps in half a cycle.
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`.
        gamma: Python float in (0, 1]. Per-step decay of the amplitude in
            `"exp_range"` mode; ignored by the other modes.
        name: String. Name scope of the operations. Defaults to
            `"CyclicalLearningRate"`.
    """

    def __init__(
        self,
        initial_learning_rate,
        maximal_learning_rate,
        step_size,
        mode="triangular",
        gamma=1.0,
        name="CyclicalLearningRate",
    ):
        super().__init__()
        check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
        if int(step_size) != step_size or step_size <= 0:
            raise ValueError(
                "Argument `step_size` must be a positive integer. "
                f"Received: step_size={step_size!r}"
            )
        self.initial_learning_rate = initial_learning_rate
        self.maximal_learning_rate = maximal_learning_rate
        self.step_size = int(step_size)
        self.mode = mode
        self.gamma = gamma
        self.name = name

    def _amplitude_scale(self, step, cycle):
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1.0 / ops.power(2.0, cycle - 1.0)
        return ops.power(ops.cast(self.gamma, "float32"), step)

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            low = ops.cast(self.initial_learning_rate, "float32")
            high = ops.cast(self.maximal_learning_rate, "float32")
            cycle = ops.floor(1.0 + step / (2.0 * self.step_size))
            x = ops.abs(step / self.step_size - 2.0 * cycle + 1.0)
            triangle = ops.maximum(0.0, 1.0 - x)
            return low + (high - low) * triangle * self._amplitude_scale(
                step, cycle
            )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "name": self.name,
        }
