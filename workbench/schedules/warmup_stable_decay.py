import keras
from keras import ops

from workbench.schedules._interpolation import check_choice
from workbench.schedules._interpolation import clipped_fraction
from workbench.schedules._interpolation import interpolate


@keras.saving.register_keras_serializable(package="workbench")
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warmup-stable-decay (WSD): ramp up, hold, then decay at the end.

    The rate rises linearly to `peak_learning_rate`, stays there, and only
    in the last `decay_fraction` of training falls to `final_learning_rate`.
    Because the long constant phase does not depend on the run length, a
    run can be extended or branched from a checkpoint taken before the
    decay (Hu et al., 2024, "MiniCPM: Unveiling the Potential of Small
    Language Models with Scalable Training Strategies",
    https://arxiv.org/abs/2404.06395; Hägele et al., 2024, "Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations",
    https://arxiv.org/abs/2405.18392).

    With `W = warmup_steps`, `D = round(decay_fraction * total_steps)` and
    `S = total_steps - D` (the step where the decay starts):

    ```python
    def learning_rate(step):
        if step < W:
            return initial + (peak - initial) * step / W
        if step < S:
            return peak
        p = min((step - S) / D, 1)
        if decay_shape == "linear":
            return peak + (final - peak) * p
        return final + (peak - final) * 0.5 * (1 + cos(pi * p))  # "cosine"
    ```

    Example:

    >>> schedule = WarmupStableDecay(
    ...     1e-3, total_steps=1000, warmup_steps=100, decay_fraction=0.2)
    >>> [round(float(schedule(s)), 6) for s in (50, 500, 900, 1000)]
    [0.0005, 0.001, 0.0005, 0.0]
    >>> optimizer = keras.optimizers.AdamW(learning_rate=schedule)

    Args:
        peak_learning_rate: Python float. The rate of the stable phase.
        total_steps: Positive int. Optimizer steps in the whole run; the rate
            stays at `final_learning_rate` after it.
        warmup_steps: Non-negative int. Length of the linear warmup.
        decay_fraction: Python float in [0, 1]. Share of `total_steps` spent
            decaying. The MiniCPM and Hägele et al. runs use about 0.1-0.2.
        final_learning_rate: Python float. The rate at `total_steps`.
        decay_shape: `"linear"` or `"cosine"`.
        initial_learning_rate: Python float. The rate at step 0.
        name: String. Name scope of the operations. Defaults to
            `"WarmupStableDecay"`.
    """

    def __init__(
        self,
        peak_learning_rate,
        total_steps,
        warmup_steps=0,
        decay_fraction=0.1,
        final_learning_rate=0.0,
        decay_shape="linear",
        initial_learning_rate=0.0,
        name="WarmupStableDecay",
    ):
        super().__init__()
        check_choice("decay_shape", decay_shape, ("linear", "cosine"))
        if int(total_steps) != total_steps or total_steps <= 0:
            raise ValueError(
                "Argument `total_steps` must be a positive integer. "
                f"Received: total_steps={total_steps!r}"
            )
        if not 0.0 <= decay_fraction <= 1.0:
            raise ValueError(
                "Argument `decay_fraction` must be in [0, 1]. "
                f"Received: decay_fraction={decay_fraction}"
            )
        decay_steps = round(decay_fraction * total_steps)
        if warmup_steps < 0 or warmup_steps + decay_steps > total_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps} plus the {decay_steps} decay "
                f"steps (decay_fraction={decay_fraction} of total_steps="
                f"{total_steps}) must fit in total_steps. Shorten the warmup "
                "or lower decay_fraction."
            )
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_fraction = decay_fraction
        self.final_learning_rate = final_learning_rate
        self.decay_shape = decay_shape
        self.initial_learning_rate = initial_learning_rate
        self.name = name
        self._decay_steps = decay_steps

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            peak = ops.cast(self.peak_learning_rate, "float32")
            decay_start = float(self.total_steps - self._decay_steps)
            warm = interpolate(
                ops.cast(self.initial_learning_rate, "float32"),
                peak,
                clipped_fraction(step, 0.0, float(self.warmup_steps)),
            )
            decay = interpolate(
                peak,
                ops.cast(self.final_learning_rate, "float32"),
                clipped_fraction(step, decay_start, float(self._decay_steps)),
                self.decay_shape,
            )
            return ops.where(
                step < self.warmup_steps,
                warm,
                ops.where(step < decay_start, peak, decay),
            )

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay_fraction": self.decay_fraction,
            "final_learning_rate": self.final_learning_rate,
            "decay_shape": self.decay_shape,
            "initial_learning_rate": self.initial_learning_rate,
            "name": self.name,
        }
