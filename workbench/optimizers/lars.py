import keras
from keras import ops

from workbench.optimizers.common import constant


@keras.saving.register_keras_serializable(package="workbench")
class LARS(keras.optimizers.Optimizer):
    """LARS: momentum SGD with a layer-wise trust ratio.

    From [You et al., 2017](https://arxiv.org/abs/1708.03888), "Large Batch
    Training of Convolutional Networks" (Algorithm 1). Each variable (layer)
    gets its own local learning rate proportional to the ratio of its weight
    norm to its gradient norm, so that the step is a fixed fraction of the
    weights whatever the gradient scale; this is what makes very large
    batches trainable.

    ```
    lambda = eta * ||w|| / (||g|| + beta * ||w|| + epsilon)
             (lambda = 1 when ||w|| = 0 or ||g|| = 0)
    v = momentum * v + lr * lambda * (g + beta * w)
    w = w - v            (nesterov: w = w - (momentum * v + lr * lambda * (g + beta * w)))
    ```

    `eta` is `trust_coefficient` and `beta` is `weight_decay`, an L2 term
    inside the update as in the paper (not the decoupled decay of AdamW).
    By default variables of rank <= 1 (biases, and the scales and offsets of
    batch/layer normalization) are excluded from both the trust ratio and the
    weight decay and get plain momentum SGD, as in the large-batch ResNet and
    SimCLR recipes. `exclude_from_weight_decay(var_names=[...])` still
    excludes further variables from the weight decay.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use. The
            global rate `gamma`, multiplied by the trust ratio. Defaults to
            `1.0`.
        momentum: Float in `[0, 1)`. Defaults to `0.9`.
        trust_coefficient: Float, `eta` (how far a step may move relative to
            the weight norm). Defaults to `0.001`.
        weight_decay: Float or `None`, `beta`. Defaults to `None` (no decay).
        epsilon: Float added to the trust ratio's denominator. Defaults to
            `0.0`, the paper's formula.
        nesterov: Boolean, Nesterov momentum. Defaults to `False`.
        exclude_bias_and_norm: Boolean, give variables of rank <= 1 plain
            momentum SGD (no trust ratio, no weight decay). Defaults to `True`.
        **kwargs: The `keras.optimizers.Optimizer` arguments: `name`,
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import LARS
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=LARS(learning_rate=1.0), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(
        self,
        learning_rate=1.0,
        momentum=0.9,
        trust_coefficient=0.001,
        weight_decay=None,
        epsilon=0.0,
        nesterov=False,
        exclude_bias_and_norm=True,
        name=None,
        **kwargs,
    ):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: {momentum!r}")
        if trust_coefficient <= 0:
            raise ValueError(
                f"`trust_coefficient` must be > 0. Received: {trust_coefficient!r}"
            )
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self.momentum = momentum
        self.trust_coefficient = trust_coefficient
        self.epsilon = epsilon
        self.nesterov = nesterov
        self.exclude_bias_and_norm = exclude_bias_and_norm

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = self.add_optimizer_variables(var_list, "velocity")

    def _apply_weight_decay(self, variables):
        # The paper's weight decay is an L2 term inside the trust-ratio step
        # (`update_step`), not the base class's decoupled decay.
        return

    def _adapts(self, variable):
        return not (self.exclude_bias_and_norm and len(variable.shape) <= 1)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        momentum = constant(self.momentum, dtype)
        velocity = self._velocities[self._get_variable_index(variable)]

        if self._adapts(variable):
            decay = 0.0
            if self.weight_decay and self._use_weight_decay(variable):
                decay = self.weight_decay
            decay = constant(decay, dtype)
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            denominator = g_norm + decay * w_norm + constant(self.epsilon, dtype)
            safe = ops.logical_and(w_norm > 0, g_norm > 0)
            trust_ratio = ops.where(
                safe,
                constant(self.trust_coefficient, dtype)
                * w_norm
                / ops.where(safe, denominator, 1.0),
                constant(1.0, dtype),
            )
            step = ops.multiply(
                lr * trust_ratio, ops.add(gradient, ops.multiply(decay, variable))
            )
        else:
            step = ops.multiply(lr, gradient)

        self.assign(velocity, ops.add(ops.multiply(momentum, velocity), step))
        if self.nesterov:
            self.assign_sub(
                variable, ops.add(ops.multiply(momentum, velocity), step)
            )
        else:
            self.assign_sub(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
                "nesterov": self.nesterov,
                "exclude_bias_and_norm": self.exclude_bias_and_norm,
            }
        )
        return config
