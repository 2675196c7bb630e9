import keras
from keras import ops

from workbench.schedules._interpolation import check_choice
from workbench.schedules._interpolation import clipped_fraction
from workbench.schedules._interpolation import interpolate


@keras.saving.register_keras_serializable(package="workbench")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's one-cycle learning-rate policy.

    One warm-up from a low rate to `max_learning_rate` over the first
    `pct_start` of training, then one long anneal to a rate far below the
    start. The high middle phase acts as a regularizer and lets networks
    train in far fewer epochs ("super-convergence": Smith & Topin, 2017,
    "Super-Convergence: Very Fast Training of Neural Networks Using Large
    Learning Rates", https://arxiv.org/abs/1708.07120; Smith, 2018, "A
    disciplined approach to neural network hyper-parameters: Part 1",
    https://arxiv.org/abs/1803.09820).

    With `P = pct_start * total_steps`, `start = max / div_factor` and
    `end = max / final_div_factor`:

    ```python
    def learning_rate(step):
        if step < P:
            return interpolate(start, max, step / P)
        return interpolate(max, end, min((step - P) / (total_steps - P), 1))
    ```

    `interpolate` is a straight line for `anneal_strategy="linear"` (Smith's
    papers) or half a cosine for `"cos"` (fastai's and PyTorch's default);
    the strategy applies to both phases. Unlike PyTorch's `OneCycleLR`, the
    final rate is `max / final_div_factor`, not `start / final_div_factor`.
    Smith also cycles momentum inversely; Keras optimizers take momentum
    as a constant, so that half of the policy is not covered here.

    Example:

    >>> schedule = OneCycle(0.1, total_steps=1000, anneal_strategy="linear")
    >>> [round(float(schedule(s)), 5) for s in (0, 300, 650, 1000)]
    [0.004, 0.1, 0.05001, 1e-05]
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)

    Args:
        max_learning_rate: Python float. The peak rate, reached at
            `pct_start * total_steps`. An `LRFinder` run is a good way to
            pick it.
        total_steps: Positive int. Optimizer steps in the whole cycle; the
            rate stays at the final value after it.
        pct_start: Python float in [0, 1]. Share of the cycle spent warming
            up.
        div_factor: Python float > 0. The rate starts at
            `max_learning_rate / div_factor`.
        final_div_factor: Python float > 0. The rate ends at
            `max_learning_rate / final_div_factor`.
        anneal_strategy: `"cos"` or `"linear"`.
        name: String. Name scope of the operations. Defaults to
            `"OneCycle"`.
    """

    def __init__(
        self,
        max_learning_rate,
        total_steps,
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        anneal_strategy="cos",
        name="OneCycle",
    ):
        super().__init__()
        check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        if int(total_steps) != total_steps or total_steps <= 0:
            raise ValueError(
                "Argument `total_steps` must be a positive integer. "
                f"Received: total_steps={total_steps!r}"
            )
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(
                "Argument `pct_start` must be in [0, 1]. "
                f"Received: pct_start={pct_start}"
            )
        if div_factor <= 0 or final_div_factor <= 0:
            raise ValueError(
                "Arguments `div_factor` and `final_div_factor` must be > 0. "
                f"Received: div_factor={div_factor}, "
                f"final_div_factor={final_div_factor}"
            )
        self.max_learning_rate = max_learning_rate
        self.total_steps = int(total_steps)
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.anneal_strategy = anneal_strategy
        self.name = name

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            shape = "cosine" if self.anneal_strategy == "cos" else "linear"
            peak = ops.cast(self.max_learning_rate, "float32")
            warm_steps = self.pct_start * self.total_steps
            warm = interpolate(
                peak / self.div_factor,
                peak,
                clipped_fraction(step, 0.0, warm_steps),
                shape,
            )
            anneal = interpolate(
                peak,
                peak / self.final_div_factor,
                clipped_fraction(
                    step, warm_steps, self.total_steps - warm_steps
                ),
                shape,
            )
            return ops.where(step < warm_steps, warm, anneal)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal_strategy": self.anneal_strategy,
            "name": self.name,
        }
