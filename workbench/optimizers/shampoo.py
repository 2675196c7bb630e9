import math

import keras
from keras import ops

from workbench.optimizers.common import constant

# The preconditioners are L^(-1/p) and R^(-1/p) with p = 2 * rank; every
# variable is preconditioned as a matrix, so p = 4 unless overridden.
_MATRIX_ROOT = 4
# Floor of the damping's scale, for statistics that are still all zero.
_TINY = 1e-30


@keras.saving.register_keras_serializable(package="workbench")
class Shampoo(keras.optimizers.Optimizer):
    """Shampoo: Kronecker-factored preconditioning grafted onto Adam.

    From [Gupta et al., 2018](https://arxiv.org/abs/1802.09568), "Shampoo:
    Preconditioned Stochastic Tensor Optimization", with the practical
    recipe of [Anil et al., 2020](https://arxiv.org/abs/2002.09018),
    "Scalable Second Order Optimization for Deep Learning". For a variable
    seen as a matrix `G` (rows x cols), Shampoo keeps one statistic per
    dimension,

    ```
    L_t = beta_2 L_{t-1} + (1 - beta_2) G_t G_t^T       (rows x rows)
    R_t = beta_2 R_{t-1} + (1 - beta_2) G_t^T G_t       (cols x cols)
    ```

    (plain sums `L_t = L_{t-1} + G_t G_t^T` when `beta_2 = 1`, the original
    algorithm), and preconditions with the inverse fourth roots, `L^(-1/4) M
    R^(-1/4)` (`p = 2 * rank = 4` for a matrix). Following Anil et al.:

    - The roots are expensive (an eigendecomposition), so they are
      recomputed every `precondition_every` steps from step
      `start_preconditioning_step` on, and reused in between. The damping is
      relative: `(L + epsilon_m * lambda_max(L) I)^(-1/4)`.
    - Grafting (layer-wise): Shampoo gives the direction, Adam the step
      length. With `M` the momentum (EMA of gradients) and `A` Adam's step
      for the same variable, `m_hat / (sqrt(v_hat) + epsilon)`, the update is
      `lr * ||A|| * D / ||D||` with `D = L^(-1/4) M R^(-1/4)`. Before
      `start_preconditioning_step` the update is Adam's, `lr * A`.
    - A dimension larger than `max_preconditioner_dim` gets a diagonal
      statistic instead of a full one, `diag(L) += sum_j G_ij^2` (the
      per-dimension diagonal Shampoo), so memory and the root stay linear in
      that dimension. 1-D and scalar variables (biases, normalization
      parameters) have no Kronecker structure and take Adam's update, i.e.
      Shampoo falls back to diagonal (Adam) statistics there.

    Variables of rank > 2 are preconditioned as the matrix
    `(prod(shape[:-1]), shape[-1])`: a convolution kernel
    `(kh, kw, c_in, c_out)` becomes `(kh * kw * c_in, c_out)`, one statistic
    over the receptive field times input channels and one over output
    channels. This keeps the exponent at -1/4 and avoids tiny `kh x kh`
    factors that carry little curvature information.

    Cost: per step, two matrix products per variable (about twice Adam's
    arithmetic for a square matrix); every `precondition_every` steps one
    symmetric eigendecomposition per full statistic.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Defaults to `0.001` (the update has Adam's scale).
        beta_1: Float, decay of the momentum (shared by the Shampoo direction
            and the Adam grafting). Defaults to `0.9`.
        beta_2: Float in `(0, 1]`, decay of the Kronecker statistics and of
            Adam's second moment; `1.0` sums them (original Shampoo, with
            Adagrad grafting). Defaults to `0.999`.
        epsilon: Float added to `sqrt(v_hat)` in the Adam grafting. Defaults
            to `1e-7`.
        matrix_epsilon: Float, damping relative to the largest eigenvalue of
            each statistic before the inverse root. Defaults to `1e-6`.
        precondition_every: Int >= 1, steps between two recomputations of
            the inverse roots. Defaults to `10`.
        start_preconditioning_step: Int >= 0, the first step that uses the
            Shampoo direction (the roots are first computed then). Defaults to
            `10`.
        max_preconditioner_dim: Int, the largest dimension that gets a full
            statistic. Defaults to `1024`.
        exponent_override: Int or `None`. Use `L^(-1/p)`, `R^(-1/p)` with
            this `p` instead of `p = 2 * rank = 4`. `p = 2` ("Shampoo^2")
            is the better Kronecker approximation of full-matrix Adagrad
            ([Morwani et al., 2024](https://arxiv.org/abs/2406.17748)); with
            grafting the overall scale stays Adam's either way. Defaults to
            `None`.
        **kwargs: The `keras.optimizers.Optimizer` arguments: `name`,
            `weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`,
            `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import Shampoo
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile(optimizer=Shampoo(precondition_every=5), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        matrix_epsilon=1e-6,
        precondition_every=10,
        start_preconditioning_step=10,
        max_preconditioner_dim=1024,
        exponent_override=None,
        name=None,
        **kwargs,
    ):
        if not 0.0 < beta_2 <= 1.0:
            raise ValueError(f"`beta_2` must be in (0, 1]. Received: {beta_2!r}")
        if not isinstance(precondition_every, int) or precondition_every < 1:
            raise ValueError(
                "`precondition_every` must be an integer >= 1. Received: "
                f"{precondition_every!r}"
            )
        if (
            not isinstance(start_preconditioning_step, int)
            or start_preconditioning_step < 0
        ):
            raise ValueError(
                "`start_preconditioning_step` must be an integer >= 0. "
                f"Received: {start_preconditioning_step!r}"
            )
        if max_preconditioner_dim < 1:
            raise ValueError(
                "`max_preconditioner_dim` must be >= 1. Received: "
                f"{max_preconditioner_dim!r}"
            )
        if exponent_override is not None and exponent_override <= 0:
            raise ValueError(
                "`exponent_override` must be a positive root order p (the "
                f"preconditioner is L^(-1/p)) or None. Received: {exponent_override!r}"
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.matrix_epsilon = matrix_epsilon
        self.precondition_every = precondition_every
        self.start_preconditioning_step = start_preconditioning_step
        self.max_preconditioner_dim = max_preconditioner_dim
        self.exponent_override = exponent_override

    @staticmethod
    def matrix_shape(shape):
        """The `(rows, cols)` a variable is preconditioned as, or `None`."""
        if len(shape) < 2:
            return None
        return (math.prod(shape[:-1]), shape[-1])

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        self._left_statistics, self._right_statistics = [], []
        self._left_roots, self._right_roots = [], []
        for variable in var_list:
            matrix = self.matrix_shape(variable.shape)
            if matrix is None or self._overwrite_variable_with_gradient(variable):
                for factors in (
                    self._left_statistics,
                    self._right_statistics,
                    self._left_roots,
                    self._right_roots,
                ):
                    factors.append(None)
                continue
            prefix = str(getattr(variable, "path", variable.name))
            prefix = prefix.replace("/", "_").replace(":", "_")
            for side, size, statistics, roots in (
                ("left", matrix[0], self._left_statistics, self._left_roots),
                ("right", matrix[1], self._right_statistics, self._right_roots),
            ):
                full = size <= self.max_preconditioner_dim
                shape = (size, size) if full else (size,)
                statistics.append(
                    self.add_variable(
                        shape=shape,
                        dtype=variable.dtype,
                        name=f"{prefix}_{side}_statistics",
                    )
                )
                roots.append(
                    self.add_variable(
                        shape=shape,
                        initializer="identity" if full else "ones",
                        dtype=variable.dtype,
                        name=f"{prefix}_{side}_inverse_root",
                    )
                )

    def _accumulate(self, statistic, outer_product):
        if self.beta_2 == 1.0:
            self.assign_add(statistic, outer_product)
        else:
            rate = constant(1.0 - self.beta_2, statistic.dtype)
            self.assign_add(
                statistic, ops.multiply(ops.subtract(outer_product, statistic), rate)
            )

    def _inverse_root(self, statistic):
        dtype = statistic.dtype
        exponent = -1.0 / (self.exponent_override or _MATRIX_ROOT)
        # eigh has no half-precision kernels, and float32 is what keeps a
        # damped root of a badly conditioned statistic meaningful.
        compute_dtype = "float64"
        statistic = ops.cast(statistic, compute_dtype)
        if len(statistic.shape) == 1:
            scale = ops.maximum(ops.max(statistic), _TINY)
            damped = statistic + constant(self.matrix_epsilon, compute_dtype) * scale
            return ops.cast(ops.power(damped, exponent), dtype)
        symmetric = 0.5 * (statistic + ops.transpose(statistic))
        eigenvalues, eigenvectors = ops.eigh(symmetric)
        eigenvalues = ops.maximum(eigenvalues, 0.0)
        scale = ops.maximum(ops.max(eigenvalues), _TINY)
        damped = eigenvalues + constant(self.matrix_epsilon, compute_dtype) * scale
        root = ops.matmul(
            eigenvectors * ops.expand_dims(ops.power(damped, exponent), 0),
            ops.transpose(eigenvectors),
        )
        return ops.cast(root, dtype)

    def _refresh_roots(self, index):
        for statistics, roots in (
            (self._left_statistics, self._left_roots),
            (self._right_statistics, self._right_roots),
        ):
            self.assign(roots[index], self._inverse_root(statistics[index]))

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
        if self.beta_2 == 1.0:
            self.assign_add(v, ops.square(gradient))
            v_hat = v
        else:
            self.assign_add(
                v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2)
            )
            v_hat = ops.divide(v, 1 - ops.power(beta_2, step))
        m_hat = ops.divide(m, 1 - ops.power(beta_1, step))
        adam_step = ops.divide(
            m_hat, ops.add(ops.sqrt(v_hat), constant(self.epsilon, dtype))
        )

        left_statistic = self._left_statistics[index]
        if left_statistic is None:
            self.assign_sub(variable, ops.multiply(lr, adam_step))
            return
        right_statistic = self._right_statistics[index]
        rows, cols = self.matrix_shape(variable.shape)
        g = ops.reshape(gradient, (rows, cols))
        if len(left_statistic.shape) == 2:
            self._accumulate(left_statistic, ops.matmul(g, ops.transpose(g)))
        else:
            self._accumulate(left_statistic, ops.sum(ops.square(g), axis=1))
        if len(right_statistic.shape) == 2:
            self._accumulate(right_statistic, ops.matmul(ops.transpose(g), g))
        else:
            self._accumulate(right_statistic, ops.sum(ops.square(g), axis=0))

        iteration = self.iterations
        since_start = iteration - self.start_preconditioning_step
        preconditioning = since_start >= 0
        ops.cond(
            ops.logical_and(
                preconditioning,
                ops.equal(ops.mod(since_start, self.precondition_every), 0),
            ),
            lambda: self._refresh_roots(index),
            lambda: None,
        )

        left_root = self._left_roots[index]
        right_root = self._right_roots[index]
        direction = ops.reshape(m, (rows, cols))
        if len(left_root.shape) == 2:
            direction = ops.matmul(left_root, direction)
        else:
            direction = direction * ops.expand_dims(left_root, 1)
        if len(right_root.shape) == 2:
            direction = ops.matmul(direction, right_root)
        else:
            direction = direction * ops.expand_dims(right_root, 0)

        adam_norm = ops.sqrt(ops.sum(ops.square(adam_step)))
        direction_norm = ops.sqrt(ops.sum(ops.square(direction)))
        grafted = direction * (
            adam_norm
            / ops.where(direction_norm > 0, direction_norm, ops.ones_like(direction_norm))
        )
        update = ops.where(
            preconditioning, ops.reshape(grafted, variable.shape), adam_step
        )
        self.assign_sub(variable, ops.multiply(lr, update))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "matrix_epsilon": self.matrix_epsilon,
                "precondition_every": self.precondition_every,
                "start_preconditioning_step": self.start_preconditioning_step,
                "max_preconditioner_dim": self.max_preconditioner_dim,
                "exponent_override": self.exponent_override,
            }
        )
        return config
