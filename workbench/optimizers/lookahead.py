import keras
from keras import ops

from workbench.optimizers.common import constant
from workbench.optimizers.wrapper import OptimizerWrapper


@keras.saving.register_keras_serializable(package="workbench")
class Lookahead(OptimizerWrapper):
    """Lookahead: `k` steps forward with any optimizer, then one step back.

    Lookahead ([Zhang et al., 2019](https://arxiv.org/abs/1907.08610))
    keeps two copies of the weights. The *fast* weights `theta` (the model's
    own variables) are updated by the wrapped optimizer `A` as usual. Every
    `k = sync_period` updates, the *slow* weights `phi` move part of the way
    towards the fast weights and the fast weights restart from there:

    ```
    theta_{t,i} = theta_{t,i-1} + A(grad L(theta_{t,i-1}))   i = 1..k
    phi_t = phi_{t-1} + alpha * (theta_{t,k} - phi_{t-1})
    theta_{t+1,0} = phi_t
    ```

    with `alpha = slow_step_size`. The inner optimizer's state (moments,
    step count) is carried across synchronisations, as in the paper.

    This is a wrapper in the Optax sense: the inner optimizer does its whole
    step (clipping, weight decay, gradient accumulation, EMA), Lookahead only
    adds the slow weights. With `gradient_accumulation_steps=N` on the inner
    optimizer, `k` counts the inner optimizer's real updates, i.e. a
    synchronisation happens every `k * N` batches. With `use_ema=True` on
    the inner optimizer, the average tracks the fast weights.

    The slow weights are taken from the model at the start of every period
    (where they equal the fast weights), so weights set or loaded between
    building and training are respected. Between synchronisations the model
    holds the fast weights.

    Args:
        inner_optimizer: The `keras.optimizers.Optimizer` to wrap (or an
            identifier such as `"adam"`).
        sync_period: Int >= 1, `k`: number of inner updates between two
            synchronisations. Defaults to `5`.
        slow_step_size: Float in `(0, 1]`, `alpha`: how far the slow weights
            move towards the fast weights at a synchronisation. Defaults to
            `0.5`.
        name: String. The name of the optimizer.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import Lookahead
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=Lookahead(keras.optimizers.Adam()), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(
        self,
        inner_optimizer,
        sync_period=5,
        slow_step_size=0.5,
        name=None,
        **kwargs,
    ):
        if not isinstance(sync_period, int) or sync_period < 1:
            raise ValueError(
                "`sync_period` must be an integer >= 1 (the number of inner "
                f"updates between synchronisations). Received: {sync_period!r}"
            )
        if not 0.0 < slow_step_size <= 1.0:
            raise ValueError(
                "`slow_step_size` must be in (0, 1]. Received: "
                f"{slow_step_size!r}"
            )
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._slow_weights = self.add_optimizer_variables(var_list, "slow")

    def _batches_per_period(self):
        # The wrapper's own counter counts batches, like the inner optimizer's
        # raw counter; an accumulating inner optimizer updates once every
        # `gradient_accumulation_steps` batches.
        batches_per_update = self.inner_optimizer.gradient_accumulation_steps
        return self.sync_period * (batches_per_update or 1)

    def _at_period_boundary(self):
        return ops.equal(ops.mod(self._iterations, self._batches_per_period()), 0)

    def before_inner_apply(self):
        # At the start of a period the fast weights are the slow ones (they
        # were just synchronised), so copying them is a no-op except on the
        # very first batch, where it initialises phi_0. Doing it here rather
        # than in `build` matters: Keras builds the optimizer while tracing
        # the train step, where a copy would run on every batch. A select
        # rather than a cond, so that no assignment happens inside a branch
        # (which JAX's stateless apply cannot carry out of the branch).
        start = self._at_period_boundary()
        for slow, fast in zip(self._slow_weights, self._trainable_variables):
            if slow is not None:
                # Read as tensors: JAX's `where` refuses a `keras.Variable`.
                self.assign(
                    slow,
                    ops.where(start, ops.convert_to_tensor(fast), ops.convert_to_tensor(slow)),
                )

    def after_inner_apply(self):
        self._iterations.assign_add(1)
        synchronise = self._at_period_boundary()
        for slow, fast in zip(self._slow_weights, self._trainable_variables):
            if slow is None:
                continue
            alpha = constant(self.slow_step_size, slow.dtype)
            slow_value, fast_value = ops.convert_to_tensor(slow), ops.convert_to_tensor(fast)
            moved = ops.add(slow_value, ops.multiply(alpha, ops.subtract(fast_value, slow_value)))
            new_slow = ops.where(synchronise, moved, slow_value)
            self.assign(slow, new_slow)
            self.assign(fast, ops.where(synchronise, new_slow, fast_value))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sync_period": self.sync_period,
                "slow_step_size": self.slow_step_size,
            }
        )
        return config
