import math

import keras
from keras import ops

from workbench.optimizers import matrix_roots
from workbench.optimizers.common import constant

# The preconditioners are L^(-1/p) and R^(-1/p) with p = 2 * rank; every
# variable is preconditioned as a matrix, so p = 4 unless overridden.
_MATRIX_ROOT = 4
ROOT_METHODS = ("auto", "eigh", "newton")


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

    Large layers can be cut into blocks (`block_size`), each with its own
    statistics and roots, as in Anil et al.; the grafting stays per layer.

    Cost: per step, two products with the statistics per block; every
    `precondition_every` steps one inverse root per full statistic. The
    root is computed one of two ways (`root_method`):

    - `"eigh"`: a symmetric eigendecomposition in float64, so that a damped
      root of a badly conditioned statistic stays accurate (float32 eigh
      loses the eigenvalues the damping is meant to keep).
    - `"newton"`: the coupled Newton iteration for `A^(-1/p)` (Guo & Higham,
      2006) in the variable's dtype, as Anil et al. run it in float32 on
      TPUs: matrix products only, self-correcting, and stable in float32.
      The damping's `lambda_max` comes from power iteration.
    - `"auto"` (default): `"eigh"` where float64 is available (TensorFlow and
      PyTorch on CPU/CUDA, JAX with `jax_enable_x64`), `"newton"` where it is
      not (JAX's default float32 mode, TPUs, Apple MPS). After `build`,
      `root_method_in_use` says which one runs.

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
        block_size: Int or `None`. If set, the matrix view is cut into
            blocks of at most `block_size x block_size`, each preconditioned
            on its own (as in Anil et al.): the roots cost
            `O(block_size^3)` per block instead of `O(dim^3)`. Defaults to
            `128`, which keeps a step within about 1.5x Adam's on the CPU;
            `None` gives one block per dimension.
        exponent_override: Int or `None`. Use `L^(-1/p)`, `R^(-1/p)` with
            this `p` instead of `p = 2 * rank = 4`. `p = 2` ("Shampoo^2")
            is the better Kronecker approximation of full-matrix Adagrad
            (Morwani et al., 2024, "A New Perspective on Shampoo's
            Preconditioner"); with
            grafting the overall scale stays Adam's either way. Defaults to
            `None`.
        root_method: `"auto"`, `"eigh"` or `"newton"`: how the inverse
            roots are computed (see above). `"newton"` needs an integer
            root order. Defaults to `"auto"`.
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
        block_size=128,
        exponent_override=None,
        root_method="auto",
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
        if block_size is not None and (
            not isinstance(block_size, int) or block_size < 1
        ):
            raise ValueError(
                f"`block_size` must be an integer >= 1 or None. Received: {block_size!r}"
            )
        if exponent_override is not None and exponent_override <= 0:
            raise ValueError(
                "`exponent_override` must be a positive root order p (the "
                f"preconditioner is L^(-1/p)) or None. Received: {exponent_override!r}"
            )
        if root_method not in ROOT_METHODS:
            raise ValueError(
                f"`root_method` must be one of {', '.join(ROOT_METHODS)}. "
                f"Received: {root_method!r}"
            )
        if root_method == "newton":
            matrix_roots.check_newton_root_order(exponent_override or _MATRIX_ROOT)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.matrix_epsilon = matrix_epsilon
        self.precondition_every = precondition_every
        self.start_preconditioning_step = start_preconditioning_step
        self.max_preconditioner_dim = max_preconditioner_dim
        self.block_size = block_size
        self.exponent_override = exponent_override
        self.root_method = root_method
        self.root_method_in_use = None

    @staticmethod
    def matrix_shape(shape):
        """The `(rows, cols)` a variable is preconditioned as, or `None`."""
        if len(shape) < 2:
            return None
        return (math.prod(shape[:-1]), shape[-1])

    def block_sizes(self, size):
        """How one dimension of the matrix view is cut into blocks."""
        if self.block_size is None or size <= self.block_size:
            return [size]
        sizes = [self.block_size] * (size // self.block_size)
        if size % self.block_size:
            sizes.append(size % self.block_size)
        return sizes

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._float64 = matrix_roots.float64_available()
        self.root_method_in_use = matrix_roots.resolve_root_method(
            self.root_method, self.exponent_override or _MATRIX_ROOT
        )
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        # One (statistic, root) pair per side per block, all blocks of all
        # variables in flat lists; `_first_block[i]` is variable i's offset.
        self._left_statistics, self._right_statistics = [], []
        self._left_roots, self._right_roots = [], []
        self._first_block = []
        for variable in var_list:
            matrix = self.matrix_shape(variable.shape)
            if matrix is None or self._overwrite_variable_with_gradient(variable):
                self._first_block.append(None)
                continue
            self._first_block.append(len(self._left_statistics))
            prefix = str(getattr(variable, "path", variable.name))
            prefix = prefix.replace("/", "_").replace(":", "_")
            row_sizes = self.block_sizes(matrix[0])
            col_sizes = self.block_sizes(matrix[1])
            for i, rows in enumerate(row_sizes):
                for j, cols in enumerate(col_sizes):
                    block = f"_{i}_{j}" if len(row_sizes) * len(col_sizes) > 1 else ""
                    for side, size, statistics, roots in (
                        ("left", rows, self._left_statistics, self._left_roots),
                        ("right", cols, self._right_statistics, self._right_roots),
                    ):
                        full = size <= self.max_preconditioner_dim
                        shape = (size, size) if full else (size,)
                        statistics.append(
                            self.add_variable(
                                shape=shape,
                                dtype=variable.dtype,
                                name=f"{prefix}_{side}_statistics{block}",
                            )
                        )
                        roots.append(
                            self.add_variable(
                                shape=shape,
                                initializer="identity" if full else "ones",
                                dtype=variable.dtype,
                                name=f"{prefix}_{side}_inverse_root{block}",
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
        exponent = -1.0 / (self.exponent_override or _MATRIX_ROOT)
        if len(statistic.shape) == 1:
            return matrix_roots.diagonal_inverse_root(
                statistic, exponent, self.matrix_epsilon,
                "float64" if self._float64 else statistic.dtype,
            )
        if self.root_method_in_use == "newton":
            return matrix_roots.newton_inverse_root(
                statistic, int(self.exponent_override or _MATRIX_ROOT),
                self.matrix_epsilon,
            )
        # float64 where it exists; elsewhere (an explicit "eigh" on JAX
        # without x64) the statistic's own dtype, rather than a silent downcast.
        compute_dtype = "float64" if self._float64 else statistic.dtype
        return matrix_roots.eigh_inverse_root(
            statistic, exponent, self.matrix_epsilon, compute_dtype
        )

    def _refresh_roots(self, blocks, refresh):
        # The cond returns the roots instead of assigning them in a branch:
        # JAX's stateless apply cannot carry an assignment out of a branch,
        # and a cond (not a select) skips the roots' cost between refreshes.
        statistics = [
            ops.convert_to_tensor(s)
            for k in blocks
            for s in (self._left_statistics[k], self._right_statistics[k])
        ]
        roots = [
            ops.convert_to_tensor(r)
            for k in blocks
            for r in (self._left_roots[k], self._right_roots[k])
        ]
        new_roots = ops.cond(
            refresh,
            lambda: [self._inverse_root(s) for s in statistics],
            lambda: roots,
        )
        variables = [
            r for k in blocks for r in (self._left_roots[k], self._right_roots[k])
        ]
        for variable, value in zip(variables, new_roots):
            self.assign(variable, value)

    def _accumulate_block(self, k, g):
        """Adds block k's outer products of the gradient block `g`."""
        left, right = self._left_statistics[k], self._right_statistics[k]
        if len(left.shape) == 2:
            self._accumulate(left, ops.matmul(g, ops.transpose(g)))
        else:
            self._accumulate(left, ops.sum(ops.square(g), axis=1))
        if len(right.shape) == 2:
            self._accumulate(right, ops.matmul(ops.transpose(g), g))
        else:
            self._accumulate(right, ops.sum(ops.square(g), axis=0))

    def _apply_roots(self, k, m):
        """Block k's Shampoo direction `L^(-1/p) m R^(-1/p)`."""
        left_root, right_root = self._left_roots[k], self._right_roots[k]
        if len(left_root.shape) == 2:
            m = ops.matmul(left_root, m)
        else:
            m = m * ops.expand_dims(left_root, 1)
        if len(right_root.shape) == 2:
            return ops.matmul(m, right_root)
        return m * ops.expand_dims(right_root, 0)

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

        first_block = self._first_block[index]
        if first_block is None:
            self.assign_sub(variable, ops.multiply(lr, adam_step))
            return

        rows, cols = self.matrix_shape(variable.shape)
        row_sizes, col_sizes = self.block_sizes(rows), self.block_sizes(cols)
        blocks = range(first_block, first_block + len(row_sizes) * len(col_sizes))
        g = ops.reshape(gradient, (rows, cols))
        momentum = ops.reshape(m, (rows, cols))

        def tiles(x):
            if len(blocks) == 1:
                return [x]
            row_offsets = [sum(row_sizes[:i]) for i in range(len(row_sizes))]
            col_offsets = [sum(col_sizes[:j]) for j in range(len(col_sizes))]
            return [
                ops.slice(x, (r0, c0), (r, c))
                for r0, r in zip(row_offsets, row_sizes)
                for c0, c in zip(col_offsets, col_sizes)
            ]

        for k, g_tile in zip(blocks, tiles(g)):
            self._accumulate_block(k, g_tile)

        iteration = self.iterations
        since_start = iteration - self.start_preconditioning_step
        preconditioning = since_start >= 0
        self._refresh_roots(
            blocks,
            ops.logical_and(
                preconditioning,
                ops.equal(ops.mod(since_start, self.precondition_every), 0),
            ),
        )

        directions = [self._apply_roots(k, t) for k, t in zip(blocks, tiles(momentum))]
        if len(directions) == 1:
            direction = directions[0]
        else:
            per_row = len(col_sizes)
            direction = ops.concatenate(
                [
                    ops.concatenate(directions[i : i + per_row], axis=1)
                    for i in range(0, len(directions), per_row)
                ],
                axis=0,
            )

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
                "block_size": self.block_size,
                "exponent_override": self.exponent_override,
                "root_method": self.root_method,
            }
        )
        return config
