"""Shared plumbing for optimizers that wrap another Keras optimizer."""

import copy

import keras

from workbench.optimizers.common import num_replicas_in_sync

# Arguments of `keras.optimizers.Optimizer` that a wrapper does not take
# itself: they belong to the inner optimizer, which does the clipping,
# accumulation, EMA and loss scaling.
_INNER_ONLY_ARGUMENTS = (
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)
_INNER_ONLY_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


class OptimizerWrapper(keras.optimizers.Optimizer):
    """Base class for optimizers that transform another optimizer's step.

    The shape follows `keras.optimizers.LossScaleOptimizer`: `iterations`,
    `learning_rate`, loss scaling and EMA finalisation are the inner
    optimizer's, and `variables` lists the wrapper's own state followed by the
    inner optimizer's (so both are saved with the model). The
    inner optimizer keeps its whole pipeline (gradient clipping, weight
    decay, gradient accumulation, EMA, tf.distribute handling), so any Keras
    optimizer can be wrapped without re-implementing it.

    Subclasses override `before_inner_apply`, `transform_gradients` (both
    called before the inner step) and/or `after_inner_apply` (called after
    it), and extend `get_config`.

    Args:
        inner_optimizer: A `keras.optimizers.Optimizer` instance, or an
            identifier that `keras.optimizers.get` understands (`"adam"`).
        name: String. The name of the wrapper.
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        wrapper_name = type(self).__name__
        for argument in _INNER_ONLY_ARGUMENTS:
            if argument not in kwargs:
                continue
            value = kwargs.pop(argument)
            # Configs written by `Optimizer.get_config` carry the defaults;
            # accept those so that generic deserialization keeps working.
            if argument in _INNER_ONLY_DEFAULTS and (
                value == _INNER_ONLY_DEFAULTS[argument]
            ):
                continue
            raise ValueError(
                f"{wrapper_name} does not take `{argument}`; set it on the "
                f"optimizer it wraps instead, e.g. "
                f"{wrapper_name}(keras.optimizers.Adam({argument}=...)). "
                f"Received: {argument}={value!r}"
            )
        if kwargs:
            raise ValueError(
                f"{wrapper_name} got unknown argument(s) "
                f"{sorted(kwargs)}; see help({wrapper_name})."
            )
        try:
            inner_optimizer = keras.optimizers.get(inner_optimizer)
        except ValueError as error:
            raise ValueError(
                f"{wrapper_name} wraps a Keras optimizer; could not interpret "
                f"{inner_optimizer!r} as one ({error})."
            ) from None
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                f"{wrapper_name} wraps a `keras.optimizers.Optimizer` "
                f"instance, e.g. {wrapper_name}(keras.optimizers.Adam()). "
                f"Received: {inner_optimizer!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer

    def build(self, var_list):
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    f"{type(self).__name__} is not built yet: pass "
                    "`trainable_variables` on the first call to `apply`, or "
                    "call `build(trainable_variables)` first."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        self.before_inner_apply()
        grads = self.transform_gradients(list(grads))
        self.inner_optimizer.apply(grads, trainable_variables)
        self.after_inner_apply()

    def before_inner_apply(self):
        """Runs before the inner optimizer updates the variables."""
        # AutoGraph cannot convert a function whose body is only a docstring.
        return None

    def transform_gradients(self, grads):
        """Returns the gradients the inner optimizer should see."""
        return grads

    def after_inner_apply(self):
        """Runs after the inner optimizer has updated the variables."""
        # AutoGraph cannot convert a function whose body is only a docstring.
        return None

    def gradient_units(self):
        """What one device's unscaled gradient is multiplied by in the gradients that
        `transform_gradients` sees: they arrive summed over replicas and times the inner
        optimizer's loss scale, if any. A term added to them is multiplied by this so that it
        counts once, as on one device."""
        scale = 1.0 / num_replicas_in_sync()
        if self.inner_optimizer.loss_scale_factor is not None:
            scale *= self.inner_optimizer.loss_scale_factor
        return scale

    @property
    def variables(self):
        return self._variables[:] + self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def loss_scale_factor(self):
        inner = self.__dict__.get("inner_optimizer")
        return None if inner is None else inner.loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, value):
        # `LossScaleOptimizer` switches off its inner optimizer's static
        # loss scaling by setting this; it must reach the optimizer that
        # actually unscales the gradients.
        inner = self.__dict__.get("inner_optimizer")
        if inner is not None:
            inner.loss_scale_factor = value

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.optimizers.serialize(
                self.inner_optimizer
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # `keras.optimizers.deserialize` edits the dict it is given.
        inner_optimizer = keras.optimizers.deserialize(
            copy.deepcopy(config.pop("inner_optimizer")),
            custom_objects=custom_objects,
        )
        return cls(inner_optimizer, **config)

