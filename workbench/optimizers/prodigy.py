import math

import keras
import numpy as np
from keras import ops

from workbench.optimizers.common import constant


@keras.saving.register_keras_serializable(package="workbench")
class Prodigy(keras.optimizers.Optimizer):
    """Prodigy: Adam whose learning rate is estimated on the fly.

    From [Mishchenko & Defazio, 2023](https://arxiv.org/abs/2306.06101),
    "Prodigy: An Expeditiously Adaptive Parameter-Free Learner". Prodigy
    estimates `d`, the distance from the initial point `x_0` to the solution,
    from the correlation of the gradients with the distance travelled, and
    runs Adam with step size `d * lr` (leave `lr = 1`). One step with
    `dlr = d_k * lr * b_k`, sums running over all variables:

    ```
    r_{k+1} = beta_3 r_k + (d_k / d_0) dlr <g_k, x_0 - x_k>
    m_{k+1} = beta_1 m_k + (1 - beta_1) d_k g_k
    v_{k+1} = beta_2 v_k + (1 - beta_2) d_k^2 g_k^2
    s_{k+1} = beta_3 s_k + (d_k / d_0) dlr g_k
    d_hat = d_coef * r_{k+1} / ||s_{k+1}||_1
    d_max = max(d_max, d_hat)
    d_{k+1} = min(d_max, growth_rate * d_k)     (d_{k+1} = max(d_k, d_hat) the
                                                  first time d moves off d_0)
    x_{k+1} = x_k - dlr * wd * x_k - dlr * m_{k+1} / (sqrt(v_{k+1}) + d_{k+1} eps)
    ```

    This follows the authors' reference implementation (`prodigyopt`), which
    refines the paper's Algorithm 3 with the `d / d_0` scaling of `r` and `s`
    (it cancels in `d_hat` and keeps the sums away from underflow), the
    `growth_rate` cap, `safeguard_warmup` (`s` uses `d` in place of `dlr`)
    and the optional Adam bias correction `b_k = sqrt(1 - beta_2^(k+1)) /
    (1 - beta_1^(k+1))` (otherwise `b_k = 1`). If `||s||_1 = 0` (no non-zero
    gradient yet) the variables and `d` are left unchanged.

    `d` is a single scalar shared by all variables, so one step has two
    phases: every variable's statistics, then `d`, then every variable's
    update. Gradient clipping changes the statistics `d` is estimated from
    and is best left off; a decaying learning-rate schedule (cosine) is what
    the authors recommend.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use. A
            multiplier of the estimated step size. Defaults to `1.0`.
        beta_1: Float, decay of the first moment. Defaults to `0.9`.
        beta_2: Float, decay of the second moment. Defaults to `0.999`.
        beta_3: Float or `None`, decay of `r` and `s`. Defaults to `None`,
            meaning `sqrt(beta_2)`.
        epsilon: Float, added to the denominator (times `d`). Defaults to
            `1e-8`.
        weight_decay: Float or `None`. Defaults to `None`.
        decouple: Boolean. If `True` (default) the weight decay is decoupled
            (AdamW style, scaled by `dlr`); if `False` it is added to the
            gradient as an L2 term.
        use_bias_correction: Boolean, Adam's bias correction in `dlr`.
            Defaults to `False`.
        safeguard_warmup: Boolean, leave `lr` out of `s` (useful with
            learning-rate warm-up). Defaults to `False`.
        d0: Float > 0, the initial estimate of `d`. Defaults to `1e-6`.
        d_coef: Float, multiplies the estimate; the knob to turn if the
            estimated step is too large or small. Defaults to `1.0`.
        growth_rate: Float, the largest factor by which `d` may grow in one
            step. Defaults to `inf` (unbounded).
        **kwargs: The `keras.optimizers.Optimizer` arguments: `name`,
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import Prodigy
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=Prodigy(), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(
        self,
        learning_rate=1.0,
        beta_1=0.9,
        beta_2=0.999,
        beta_3=None,
        epsilon=1e-8,
        weight_decay=None,
        decouple=True,
        use_bias_correction=False,
        safeguard_warmup=False,
        d0=1e-6,
        d_coef=1.0,
        growth_rate=math.inf,
        name=None,
        **kwargs,
    ):
        if d0 <= 0:
            raise ValueError(f"`d0` must be > 0. Received: {d0!r}")
        if epsilon <= 0:
            raise ValueError(f"`epsilon` must be > 0. Received: {epsilon!r}")
        for beta_name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(
                    f"`{beta_name}` must be in [0, 1). Received: {beta!r}"
                )
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.beta_3 = beta_3
        self.epsilon = epsilon
        self.decouple = decouple
        self.use_bias_correction = use_bias_correction
        self.safeguard_warmup = safeguard_warmup
        self.d0 = d0
        self.d_coef = d_coef
        self.growth_rate = growth_rate

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities, self._s = self.add_optimizer_variables(
            var_list, ["momentum", "velocity", "s"]
        )
        # Filled with the weights at the first update (see `update_step`),
        # like the reference's lazy state.
        self._initial_values = self.add_optimizer_variables(
            var_list, "initial_value"
        )

        def scalar(name, value):
            # Built in the variable's own dtype: `Constant` would round d0
            # through float32, and `d == d0` must hold exactly at the start.
            def initializer(shape, dtype=None):
                return np.full(shape, value, dtype=dtype)

            return self.add_variable(shape=(), initializer=initializer, name=name)

        self.d = scalar("d", self.d0)
        self.d_max = scalar("d_max", self.d0)
        self.d_numerator = scalar("d_numerator", 0.0)
        # Per-step sums over the variables, filled in by `update_step`.
        self._numerator_increment = scalar("numerator_increment", 0.0)
        self._denominator = scalar("denominator", 0.0)

    def _apply_weight_decay(self, variables):
        # Prodigy's decay is scaled by the estimated step `dlr` and applied
        # in the second phase of `_backend_update_step`.
        return

    @property
    def _beta_3(self):
        return math.sqrt(self.beta_2) if self.beta_3 is None else self.beta_3

    def _decay(self, variable):
        if self.weight_decay and self._use_weight_decay(variable):
            return self.weight_decay
        return 0.0

    def _dlr(self, learning_rate):
        """`d * lr * bias_correction` with the current (old) `d`."""
        dlr = ops.multiply(self.d, ops.cast(learning_rate, self.d.dtype))
        if self.use_bias_correction:
            step = ops.cast(self.iterations + 1, self.d.dtype)
            dlr = dlr * ops.sqrt(1.0 - ops.power(self.beta_2, step))
            dlr = dlr / (1.0 - ops.power(self.beta_1, step))
        return dlr

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self.assign(self._numerator_increment, 0.0)
        self.assign(self._denominator, 0.0)
        # Phase 1: statistics of every variable, through the backend's
        # per-variable update (which also all-reduces under tf.distribute).
        super()._backend_update_step(grads, trainable_variables, learning_rate)

        # Variables are read once as tensors: JAX's ops refuse a
        # `keras.Variable` where they expect an array.
        d = ops.convert_to_tensor(self.d)
        d_max_before = ops.convert_to_tensor(self.d_max)
        d_numerator = ops.convert_to_tensor(self.d_numerator)
        dlr = self._dlr(learning_rate)
        denominator = ops.convert_to_tensor(self._denominator)
        numerator = ops.add(
            ops.multiply(self._beta_3, d_numerator),
            ops.convert_to_tensor(self._numerator_increment),
        )
        has_statistics = denominator > 0.0
        d_hat = ops.divide(
            ops.multiply(self.d_coef, numerator),
            ops.where(has_statistics, denominator, 1.0),
        )
        d_first = ops.where(ops.equal(d, self.d0), ops.maximum(d, d_hat), d)
        d_max = ops.maximum(d_max_before, d_hat)
        d_new = ops.minimum(d_max, ops.multiply(d_first, self.growth_rate))

        # Phase 2: the step itself, with the old `d` in `dlr` and the new one
        # next to epsilon, as in the reference implementation.
        for variable in trainable_variables:
            index = self._get_variable_index(variable)
            m = self._momentums[index]
            if m is None:
                continue
            dtype = variable.dtype
            v = self._velocities[index]
            scale = ops.cast(ops.where(has_statistics, dlr, 0.0), dtype)
            denom = ops.add(
                ops.sqrt(v), ops.cast(d_new * self.epsilon, dtype)
            )
            step = ops.divide(ops.convert_to_tensor(m), denom)
            decay = self._decay(variable)
            if decay and self.decouple:
                step = ops.add(
                    step,
                    ops.multiply(constant(decay, dtype), ops.convert_to_tensor(variable)),
                )
            self.assign_sub(variable, ops.multiply(scale, step))

        self.assign(self.d, ops.where(has_statistics, d_new, d))
        self.assign(self.d_max, ops.where(has_statistics, d_max, d_max_before))
        self.assign(
            self.d_numerator, ops.where(has_statistics, numerator, d_numerator)
        )

    def update_step(self, gradient, variable, learning_rate):
        """Phase 1: moments, `s`, and this variable's share of the sums."""
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        s = self._s[index]
        x0 = self._initial_values[index]
        gradient = ops.cast(gradient, dtype)
        # Read as tensors: JAX's ops refuse a `keras.Variable` in `where`.
        value = ops.convert_to_tensor(variable)
        decay = self._decay(variable)
        if decay and not self.decouple:
            gradient = ops.add(gradient, ops.multiply(constant(decay, dtype), value))

        d_scalar = ops.convert_to_tensor(self.d)
        d = ops.cast(d_scalar, dtype)
        # `d / d0` keeps `r` and `s` away from underflow; it cancels in d_hat.
        relative_d = d_scalar / self.d0
        scaled_dlr = ops.cast(relative_d * self._dlr(learning_rate), dtype)
        if self.safeguard_warmup:
            s_rate = ops.cast(relative_d * d_scalar, dtype)
        else:
            s_rate = scaled_dlr

        # Keras builds optimizers while tracing the train step, so x_0 is
        # taken at the first update rather than assigned in `build` (where the
        # assignment would run on every step); a select is cheaper than a cond.
        x0_value = ops.where(
            ops.equal(self.iterations, 0), value, ops.convert_to_tensor(x0)
        )
        self.assign(x0, x0_value)
        progress = ops.sum(ops.multiply(gradient, ops.subtract(x0_value, value)))
        self.assign_add(
            self._numerator_increment,
            ops.cast(ops.multiply(scaled_dlr, progress), self.d.dtype),
        )
        beta_1 = constant(self.beta_1, dtype)
        beta_2 = constant(self.beta_2, dtype)
        beta_3 = constant(self._beta_3, dtype)
        self.assign(m, beta_1 * m + d * (1 - beta_1) * gradient)
        self.assign(v, beta_2 * v + d * d * (1 - beta_2) * ops.square(gradient))
        self.assign(s, beta_3 * s + s_rate * gradient)
        self.assign_add(
            self._denominator, ops.cast(ops.sum(ops.abs(s)), self.d.dtype)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "beta_3": self.beta_3,
                "epsilon": self.epsilon,
                "decouple": self.decouple,
                "use_bias_correction": self.use_bias_correction,
                "safeguard_warmup": self.safeguard_warmup,
                "d0": self.d0,
                "d_coef": self.d_coef,
                "growth_rate": self.growth_rate,
            }
        )
        return config
