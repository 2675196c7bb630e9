import math

import keras
from keras import ops

from workbench.optimizers.common import constant

# Added to a statistic before its first eigendecomposition, so that an
# all-zero gradient still gives a valid (identity-like) basis.
_TINY = 1e-30


@keras.saving.register_keras_serializable(package="workbench")
class SOAP(keras.optimizers.Optimizer):
    """SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

    From [Vyas et al., 2024](https://arxiv.org/abs/2409.11321), "SOAP:
    Improving and Stabilizing Shampoo using Adam". For a variable seen as a
    matrix `W` (rows x cols) with gradient `G`, SOAP keeps Shampoo's two
    Kronecker statistics,

    ```
    L_t = beta_s L_{t-1} + (1 - beta_s) G_t G_t^T       (rows x rows)
    R_t = beta_s R_{t-1} + (1 - beta_s) G_t^T G_t       (cols x cols)
    ```

    and their eigenbases `Q_L`, `Q_R`, and runs Adam in the rotated space:

    ```
    G'  = Q_L^T G Q_R
    M   = beta_1 M + (1 - beta_1) G               (first moment, original space)
    V   = beta_2 V + (1 - beta_2) G' * G'         (second moment, rotated space)
    N   = Q_L ((Q_L^T M Q_R) / (sqrt(V) + epsilon)) Q_R^T
    W  -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * N
    ```

    Every `precondition_every` steps the bases are refreshed by one step of
    power iteration and a QR decomposition, `Q_L <- QR(L Q_L)` (the paper's
    Algorithm 4), after sorting the columns of `Q_L` (and the rows of `V`)
    by the estimated eigenvalues `diag(Q_L^T L Q_L)`, descending; the first
    bases come from an eigendecomposition of the first step's statistics. As
    in the reference implementation, the first step only initialises the
    statistics and bases and leaves the variable unchanged, and the bias
    correction counts from the second step. With `Q_L = Q_R = I` the update
    is Adam's.

    A dimension larger than `max_preconditioner_dim` is not rotated (its
    basis is the identity); 1-D and scalar variables (biases, normalization
    parameters) take Adam's update. Variables of rank > 2 are seen as the
    most nearly square matrix `(prod(shape[:k]), prod(shape[k:]))`, so an
    attention kernel `(hidden, heads, head_dim)` becomes
    `(hidden, heads * head_dim)`.

    Cost: per step and side, three products with the basis (the gradient
    and the momentum rotated in, the direction rotated back) and one for
    the statistic; every `precondition_every` steps one more matrix product
    and one QR per side. The refresh (and the first step's
    eigendecomposition) sits in a conditional, not a select, so the steps
    in between do not compute it on any backend.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Defaults to `0.003` (the paper's rate).
        beta_1: Float, decay of the first moment. Defaults to `0.95`.
        beta_2: Float, decay of the rotated second moment. Defaults to
            `0.95`.
        shampoo_beta: Float in `[0, 1)` or `None`, decay of the Kronecker
            statistics; `None` uses `beta_2` (as the paper does). Defaults
            to `None`.
        epsilon: Float added to `sqrt(V)`. Defaults to `1e-8`.
        precondition_every: Int >= 1, steps between two refreshes of the
            eigenbases. Defaults to `10`.
        max_preconditioner_dim: Int, the largest dimension that gets a
            rotation. Defaults to `10000`.
        **kwargs: The `keras.optimizers.Optimizer` arguments: `name`,
            `weight_decay` (decoupled, as in AdamW), `clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`.

    Example:

    >>> import keras, numpy as np
    >>> from workbench.optimizers import SOAP
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile(optimizer=SOAP(learning_rate=0.01), loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0)
    """

    def __init__(
        self,
        learning_rate=0.003,
        beta_1=0.95,
        beta_2=0.95,
        shampoo_beta=None,
        epsilon=1e-8,
        precondition_every=10,
        max_preconditioner_dim=10000,
        name=None,
        **kwargs,
    ):
        if shampoo_beta is not None and not 0.0 <= shampoo_beta < 1.0:
            raise ValueError(
                f"`shampoo_beta` must be in [0, 1) or None. Received: {shampoo_beta!r}"
            )
        if not isinstance(precondition_every, int) or precondition_every < 1:
            raise ValueError(
                "`precondition_every` must be an integer >= 1. Received: "
                f"{precondition_every!r}"
            )
        if max_preconditioner_dim < 1:
            raise ValueError(
                "`max_preconditioner_dim` must be >= 1. Received: "
                f"{max_preconditioner_dim!r}"
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.shampoo_beta = shampoo_beta
        self.epsilon = epsilon
        self.precondition_every = precondition_every
        self.max_preconditioner_dim = max_preconditioner_dim

    @staticmethod
    def matrix_shape(shape):
        """The `(rows, cols)` a variable is rotated as (most nearly square), or `None`."""
        if len(shape) < 2:
            return None
        splits = [
            (math.prod(shape[:k]), math.prod(shape[k:])) for k in range(1, len(shape))
        ]
        return min(splits, key=lambda rc: abs(math.log(rc[0] / rc[1])))

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        # Per variable: [(statistic, basis) or None for rows, same for cols],
        # or None for variables that take Adam's update.
        self._sides = []
        for variable in var_list:
            matrix = self.matrix_shape(variable.shape)
            if matrix is None or self._overwrite_variable_with_gradient(variable):
                self._sides.append(None)
                continue
            prefix = str(getattr(variable, "path", variable.name))
            prefix = prefix.replace("/", "_").replace(":", "_")
            sides = []
            for side, size in zip(("left", "right"), matrix):
                if size > self.max_preconditioner_dim:
                    sides.append(None)
                    continue
                statistic = self.add_variable(
                    shape=(size, size), dtype=variable.dtype,
                    name=f"{prefix}_{side}_statistics",
                )
                basis = self.add_variable(
                    shape=(size, size), initializer="identity", dtype=variable.dtype,
                    name=f"{prefix}_{side}_basis",
                )
                sides.append((statistic, basis))
            self._sides.append(sides)

    @staticmethod
    def _rotate(x, sides, transpose):
        """`Q_L^T x Q_R` (into the eigenbasis), or `Q_L x Q_R^T` with `transpose=False`."""
        left, right = sides
        if left is not None:
            q = ops.transpose(left[1]) if transpose else left[1]
            x = ops.matmul(q, x)
        if right is not None:
            q = right[1] if transpose else ops.transpose(right[1])
            x = ops.matmul(x, q)
        return x

    @staticmethod
    def _initial_bases(statistics):
        """The eigenbases of the first statistics, eigenvalues descending."""
        bases = []
        for statistic in statistics:
            size = statistic.shape[0]
            symmetric = 0.5 * (statistic + ops.transpose(statistic))
            symmetric = symmetric + constant(_TINY, statistic.dtype) * ops.eye(size)
            _, vectors = ops.eigh(symmetric)
            # eigh sorts eigenvalues ascending; the refresh keeps them descending.
            bases.append(ops.flip(vectors, axis=1))
        return bases

    @staticmethod
    def _refreshed_bases(statistics, bases, axes, velocity):
        """One power-iteration + QR step per side; `velocity` is permuted along."""
        new_bases = []
        for statistic, basis, axis in zip(statistics, bases, axes):
            # One product serves both the eigenvalue estimates diag(Q^T L Q) and the power
            # iteration: L Q[:, order] is (L Q)[:, order].
            power = ops.matmul(statistic, basis)
            estimated = ops.sum(basis * power, axis=0)
            order = ops.flip(ops.argsort(estimated), axis=0)
            velocity = ops.take(velocity, order, axis=axis)
            q, _ = ops.qr(ops.take(power, order, axis=1))
            new_bases.append(q)
        return velocity, new_bases

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        iteration = self.iterations
        # The first step only initialises; Adam's step count starts after it.
        step = ops.cast(iteration, dtype)
        beta_1 = constant(self.beta_1, dtype)
        beta_2 = constant(self.beta_2, dtype)
        shampoo_beta = self.beta_2 if self.shampoo_beta is None else self.shampoo_beta
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        sides = self._sides[index]
        first = ops.equal(iteration, 0)

        if sides is None:
            g = gradient
        else:
            rows, cols = self.matrix_shape(variable.shape)
            g = ops.reshape(gradient, (rows, cols))
        rotated = g if sides is None else self._rotate(g, sides, transpose=True)

        keep = ops.cast(first, dtype)
        self.assign(
            m, m + ops.multiply(ops.subtract(gradient, m), (1 - beta_1) * (1 - keep))
        )
        new_v = ops.reshape(v, rotated.shape) + ops.multiply(
            ops.subtract(ops.square(rotated), ops.reshape(v, rotated.shape)),
            (1 - beta_2) * (1 - keep),
        )
        momentum = ops.reshape(m, g.shape)
        if sides is not None:
            momentum = self._rotate(momentum, sides, transpose=True)
        direction = ops.divide(
            momentum, ops.add(ops.sqrt(new_v), constant(self.epsilon, dtype))
        )
        if sides is not None:
            direction = self._rotate(direction, sides, transpose=False)
        safe_step = ops.maximum(step, 1.0)
        step_size = ops.sqrt(1 - ops.power(beta_2, safe_step)) / (
            1 - ops.power(beta_1, safe_step)
        )
        update = ops.reshape(direction, variable.shape) * step_size * (1 - keep)
        self.assign_sub(variable, ops.multiply(lr, update))

        if sides is None:
            self.assign(v, new_v)
            return
        rate = constant(1.0 - shampoo_beta, dtype)
        axes, statistics, bases = [], [], []
        for axis, (side, outer) in enumerate(zip(
            sides, (ops.matmul(g, ops.transpose(g)), ops.matmul(ops.transpose(g), g))
        )):
            if side is None:
                continue
            statistic = side[0] + (outer - side[0]) * rate
            self.assign(side[0], statistic)
            axes.append(axis)
            statistics.append(statistic)
            bases.append(ops.convert_to_tensor(side[1]))

        # The conds return the new bases instead of assigning them in a branch: JAX's
        # stateless apply cannot carry an assignment out of a branch, and a cond (not a
        # select) skips the QR's and eigh's cost between refreshes.
        refresh = ops.logical_and(
            ops.logical_not(first), ops.equal(ops.mod(iteration, self.precondition_every), 0)
        )
        new_v, bases = ops.cond(
            refresh,
            lambda: self._refreshed_bases(statistics, bases, axes, new_v),
            lambda: (new_v, bases),
        )
        bases = ops.cond(first, lambda: self._initial_bases(statistics), lambda: bases)
        self.assign(v, ops.reshape(new_v, v.shape))
        for axis, basis in zip(axes, bases):
            self.assign(sides[axis][1], basis)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "shampoo_beta": self.shampoo_beta,
                "epsilon": self.epsilon,
                "precondition_every": self.precondition_every,
                "max_preconditioner_dim": self.max_preconditioner_dim,
            }
        )
        return config
