import keras
from keras import ops

from workbench.optimizers.common import constant


@keras.saving.register_keras_serializable(package="workbench")
class AdaBelief(keras.optimizers.Optimizer):
    """AdaBelief: Adam with the step size adapted to the "belief" in the gradient.

    From [Zhuang et al., 2020](https://arxiv.org/abs/2010.07468), "AdaBelief
    Optimizer: Adapting Stepsizes by the Belief in Observed Gradients"
    (Algorithm 2). Where Adam divides by the EMA of `g^2`, AdaBelief divides
    by the EMA of `(g - m)^2`, the squared deviation of the gradient from its
    own prediction `m`: a step is large when the gradient agrees with the
    momentum and small when it does not.

    ```
    m_t = beta_1 * m_{t-1} + (1 - beta_1) * g_t
    s_t = beta_2 * s_{t-1} + (1 - beta_2) * (g_t - m_t)^2 + epsilon
    s_t = max(s_t, s_{t-1})                       (if amsgrad)
    m_hat = m_t / (1 - beta_1^t),   s_hat = s_t / (1 - beta_2^t)
    theta_t = theta_{t-1} - lr * m_hat / (sqrt(s_hat) + epsilon)
    ```

    Decoupled weight decay (the paper's AdamW-style option) is the base
    class's `weight_decay`.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Defaults to `0.001`.
        beta_1: Float, decay of the first moment. Defaults to `0.9`.
        beta_2: Float, decay of the second moment `s`. Defaults to `0.999`.
        epsilon: Float, added to `s` at every step and to its square root.
            Defaults to `1e-16`, the authors' choice: unlike Adam's, AdaBelief's
            `s` can be near zero, and a large epsilon turns it into SGD.
        amsgrad: Boolean, keep the running maximum of `s` (the AMSGrad
            variant). Defaults to `False`.
        **kwargs: The `keras.optimizers.Optimizer` arguments: `name`,
            `weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`,
            `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import AdaBelief
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=AdaBelief(learning_rate=1e-3), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-16,
        amsgrad=False,
        name=None,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._beliefs = self.add_optimizer_variables(
            var_list, ["momentum", "belief"]
        )
        if self.amsgrad:
            self._belief_maxima = self.add_optimizer_variables(
                var_list, "belief_max"
            )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = constant(self.beta_1, dtype)
        beta_2 = constant(self.beta_2, dtype)
        epsilon = constant(self.epsilon, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        s = self._beliefs[index]

        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        surprise = ops.square(ops.subtract(gradient, m))
        self.assign_add(
            s,
            ops.add(ops.multiply(ops.subtract(surprise, s), 1 - beta_2), epsilon),
        )
        if self.amsgrad:
            s_max = self._belief_maxima[index]
            # Read as tensors: JAX's `maximum` refuses a `keras.Variable`.
            self.assign(
                s_max, ops.maximum(ops.convert_to_tensor(s_max), ops.convert_to_tensor(s))
            )
            s = s_max

        m_hat = ops.divide(m, 1 - ops.power(beta_1, step))
        s_hat = ops.divide(s, 1 - ops.power(beta_2, step))
        self.assign_sub(
            variable,
            ops.divide(ops.multiply(lr, m_hat), ops.add(ops.sqrt(s_hat), epsilon)),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "amsgrad": self.amsgrad,
            }
        )
        return config
