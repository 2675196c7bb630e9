import keras
from keras import ops

from workbench.optimizers.wrapper import OptimizerWrapper


@keras.saving.register_keras_serializable(package="workbench")
class Proximal(OptimizerWrapper):
    """Pulls any optimizer's step towards an anchor point: the FedProx proximal term.

    From [Li et al., 2020](https://arxiv.org/abs/1812.06127), "Federated
    Optimization in Heterogeneous Networks": a client minimises its loss plus
    `mu / 2 * ||w - w_anchor||^2`, where `w_anchor` is the global model it
    received, so every gradient gains

    ```
    g <- g + mu * (w - w_anchor)
    ```

    before the wrapped optimizer does the rest of its step. `set_anchor()`
    copies the current weights into the anchor (call it when the round's
    global weights are loaded); `mu` is a variable, so changing it with
    `set_mu` needs no retrace. With `mu = 0` the wrapper leaves the inner
    optimizer's step unchanged.

    Args:
        inner_optimizer: The `keras.optimizers.Optimizer` to wrap (or an
            identifier such as `"adam"`).
        mu: Float >= 0, the proximal weight. Defaults to `0.01`.
        name: String. The name of the optimizer.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import Proximal
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> optimizer = Proximal(keras.optimizers.SGD(0.1), mu=0.1)
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> optimizer.build(model.trainable_variables)
    >>> optimizer.set_anchor()
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(self, inner_optimizer, mu=0.01, name=None, **kwargs):
        if mu < 0:
            raise ValueError(f"`mu` must be >= 0. Received: mu={mu!r}")
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.mu = float(mu)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._mu = self.add_variable((), initializer=keras.initializers.Constant(self.mu),
                                     dtype="float32", name="mu")
        self._anchors = self.add_optimizer_variables(var_list, "anchor")

    def before_inner_apply(self):
        # Keras builds the optimizer while tracing the train step, where an assignment in
        # `build` does not hold: the weights before the first update become the anchor here
        # (a no-op after `set_anchor`), with a select rather than a cond, as JAX's stateless
        # apply needs.
        first = ops.equal(self._iterations, 0)
        for anchor, variable in zip(self._anchors, self._trainable_variables):
            self.assign(anchor, ops.where(first, ops.convert_to_tensor(variable),
                                          ops.convert_to_tensor(anchor)))

    def after_inner_apply(self):
        self._iterations.assign_add(1)

    def set_anchor(self):
        """The current weights become the point the step is pulled towards."""
        for anchor, variable in zip(self._anchors, self._trainable_variables):
            anchor.assign(variable)

    def set_mu(self, mu):
        self.mu = float(mu)
        self._mu.assign(self.mu)

    def apply(self, grads, trainable_variables=None):
        # The model's variables, held outside Keras' tracking: were they tracked, they would join
        # `variables` (the optimizer's state), and restoring a saved state would overwrite the
        # weights with old ones.
        object.__setattr__(self, "_applying", list(trainable_variables)
                           if trainable_variables is not None else None)
        super().apply(grads, trainable_variables)

    def transform_gradients(self, grads):
        variables = getattr(self, "_applying", None) or self._trainable_variables
        scale = self.gradient_units()
        pulled = []
        for grad, variable in zip(grads, variables):
            if grad is None:
                pulled.append(None)
                continue
            anchor = self._anchors[self._get_variable_index(variable)]
            mu = ops.multiply(ops.cast(self._mu, grad.dtype), ops.cast(scale, grad.dtype))
            pulled.append(ops.add(grad, ops.multiply(mu, ops.subtract(variable, anchor))))
        return pulled

    def get_config(self):
        config = super().get_config()
        config.update({"mu": self.mu})
        return config
