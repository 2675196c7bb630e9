import keras
from keras import ops

from workbench.optimizers.wrapper import OptimizerWrapper


def standard_normal(shape, dtype, seed_generator):
    """N(0, 1) samples drawn with the next seed of `seed_generator`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Philox by name: `keras.random.normal` leaves the choice to
        # TensorFlow, whose pick under XLA on CPU is about 15x slower.
        seed = ops.cast(ops.mod(seed_generator.next(), 2**31 - 2), "int32")
        return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")
    return keras.random.normal(shape, dtype=dtype, seed=seed_generator)


@keras.saving.register_keras_serializable(package="workbench")
class GradientNoise(OptimizerWrapper):
    """Adds annealed Gaussian noise to the gradients of any optimizer.

    From [Neelakantan et al., 2015](https://arxiv.org/abs/1511.06807),
    "Adding Gradient Noise Improves Learning for Very Deep Networks": at
    update `t` (counted from 0) every gradient entry gets independent noise

    ```
    g_t <- g_t + N(0, sigma_t^2),    sigma_t^2 = eta / (1 + t)^gamma
    ```

    and the noisy gradients go to the wrapped optimizer, which does the rest
    of its step (clipping, weight decay, accumulation, EMA) as usual. `t` is
    the inner optimizer's `iterations`; with gradient accumulation the noise
    is drawn for every batch and averaged with the gradients.

    Under `tf.distribute`, each replica draws the same noise (the seed state
    is mirrored) scaled by `1 / num_replicas`, so after the all-reduce the
    update carries exactly one draw with variance `sigma_t^2`, as on a
    single device. With a static `loss_scale_factor` on the inner optimizer
    the noise is scaled up with the gradients, so that it has the intended
    size after unscaling.

    Args:
        inner_optimizer: The `keras.optimizers.Optimizer` to wrap (or an
            identifier such as `"adam"`).
        eta: Float >= 0, the initial noise variance. Defaults to `0.01`
            (the paper also uses 0.3 and 1.0).
        gamma: Float >= 0, the decay exponent. Defaults to `0.55`.
        seed: Int or `None`. Seed of the noise; `None` draws a random seed.
        name: String. The name of the optimizer.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import GradientNoise
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> optimizer = GradientNoise(keras.optimizers.Adam(), seed=1)
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    """

    def __init__(
        self,
        inner_optimizer,
        eta=0.01,
        gamma=0.55,
        seed=None,
        name=None,
        **kwargs,
    ):
        if eta < 0 or gamma < 0:
            raise ValueError(
                "`eta` and `gamma` must be >= 0 (sigma^2 = eta / (1+t)^gamma)."
                f" Received: eta={eta!r}, gamma={gamma!r}"
            )
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"`seed` must be an int or None. Received: {seed!r}")
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.eta = eta
        self.gamma = gamma
        self.seed = seed
        self._seed_generator = keras.random.SeedGenerator(
            seed, name=f"{self.name}_seed"
        )
        # Tracked so that the noise sequence is saved with the optimizer and
        # mirrored under tf.distribute.
        self._track_variable(self._seed_generator.state)

    def noise_stddev(self):
        """sigma_t for the coming update, as a float32 scalar tensor."""
        step = ops.cast(self.inner_optimizer.iterations, "float32")
        variance = ops.divide(
            ops.cast(self.eta, "float32"),
            ops.power(ops.add(step, 1.0), ops.cast(self.gamma, "float32")),
        )
        return ops.sqrt(variance)

    def transform_gradients(self, grads):
        stddev = ops.multiply(self.noise_stddev(), self.gradient_units())
        noisy = []
        for grad in grads:
            if grad is None:
                noisy.append(None)
                continue
            noise = standard_normal(tuple(grad.shape), grad.dtype, self._seed_generator)
            noisy.append(
                ops.add(grad, ops.multiply(noise, ops.cast(stddev, grad.dtype)))
            )
        return noisy

    def get_config(self):
        config = super().get_config()
        config.update({"eta": self.eta, "gamma": self.gamma, "seed": self.seed})
        return config
