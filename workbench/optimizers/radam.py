import keras
from keras import ops

from workbench.optimizers.common import constant


@keras.saving.register_keras_serializable(package="workbench")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam: Adam whose adaptive step is switched on when trustworthy.

    From [Liu et al., 2019](https://arxiv.org/abs/1908.03265), "On the
    Variance of the Adaptive Learning Rate and Beyond" (Algorithm 2). Early
    in training the second-moment estimate rests on a handful of gradients
    and its variance is large; RAdam measures that with the length of the
    approximated simple moving average (SMA) `rho_t`, takes plain momentum
    steps while `rho_t` is below a threshold, and afterwards multiplies the
    adaptive step by a rectification term `r_t` that tends to 1:

    ```
    m_t = beta_1 * m_{t-1} + (1 - beta_1) * g_t
    v_t = beta_2 * v_{t-1} + (1 - beta_2) * g_t^2
    m_hat = m_t / (1 - beta_1^t)
    rho_inf = 2 / (1 - beta_2) - 1
    rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t)
    if rho_t >= sma_threshold:
        l_t = sqrt(1 - beta_2^t) / (sqrt(v_t) + epsilon)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf
                   / ((rho_inf - 4)(rho_inf - 2) rho_t))
        theta_t = theta_{t-1} - lr * r_t * m_hat * l_t
    else:
        theta_t = theta_{t-1} - lr * m_hat
    ```

    The paper writes the test as `rho_t > 4`; the authors' code uses
    `rho_t >= 5`, which is the default here (with `beta_2 = 0.999` the
    rectified step starts at `t = 6`).

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Defaults to `0.001`.
        beta_1: Float, decay of the first moment. Defaults to `0.9`.
        beta_2: Float, decay of the second moment. Defaults to `0.999`.
        epsilon: Float added to `sqrt(v_t)`. Defaults to `1e-7`.
        sma_threshold: Float > 4, the SMA length from which the adaptive
            (rectified) step is used. Defaults to `5.0`.
        **kwargs: The `keras.optimizers.Optimizer` arguments: `name`,
            `weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`,
            `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import RAdam
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=RAdam(learning_rate=1e-3), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        sma_threshold=5.0,
        name=None,
        **kwargs,
    ):
        if sma_threshold <= 4:
            raise ValueError(
                "`sma_threshold` must be > 4: the rectification term is only "
                f"defined for rho_t > 4. Received: {sma_threshold!r}"
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.sma_threshold = sma_threshold

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = constant(self.beta_1, dtype)
        beta_2 = constant(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]

        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(
            v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2)
        )

        beta_2_power = ops.power(beta_2, step)
        m_hat = ops.divide(m, 1 - ops.power(beta_1, step))
        rho_inf = 2.0 / (1.0 - beta_2) - 1.0
        rho_t = rho_inf - 2.0 * step * beta_2_power / (1.0 - beta_2_power)
        # Clamped so that the unused branch of the `where` stays finite.
        r_squared = ops.divide(
            (rho_t - 4.0) * (rho_t - 2.0) * rho_inf,
            (rho_inf - 4.0) * (rho_inf - 2.0) * rho_t,
        )
        r_t = ops.sqrt(ops.maximum(r_squared, 0.0))
        adaptive = ops.divide(
            ops.sqrt(1.0 - beta_2_power),
            ops.add(ops.sqrt(v), constant(self.epsilon, dtype)),
        )
        direction = ops.where(
            rho_t >= constant(self.sma_threshold, dtype),
            ops.multiply(ops.multiply(r_t, m_hat), adaptive),
            m_hat,
        )
        self.assign_sub(variable, ops.multiply(lr, direction))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "sma_threshold": self.sma_threshold,
            }
        )
        return config
