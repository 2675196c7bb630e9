import keras
from keras import ops


@keras.saving.register_keras_serializable(package="workbench")
class GroupLasso(keras.regularizers.Regularizer):
    """Group lasso (L2,1 norm) over output units: prunes whole units.

    Each output unit of a layer (a column of a `Dense` kernel of shape
    `(inputs, units)`, a filter of a `Conv2D` kernel of shape
    `(height, width, in_channels, filters)`) is one group: all weights
    sharing the index on the kernel's last axis. The penalty is the sum of
    the groups' Euclidean norms:

    ```python
    penalty = strength * sum_j sqrt(sum_i w[..., i, j] ** 2)
    ```

    The norm is not differentiable at zero, and like the L1 norm on single
    weights it pulls entire groups to exactly zero instead of shrinking
    them evenly; at the optimum a group is zero unless the data gradient on
    it exceeds `strength` in norm (Yuan & Lin, 2006, "Model selection and
    estimation in regression with grouped variables", JRSS B 68(1); for
    filters: Wen et al., 2016, "Learning Structured Sparsity in Deep Neural
    Networks", https://arxiv.org/abs/1608.03665). Whole zero units can then
    be removed from the layer, which shrinks it rather than just making it
    sparse.

    Yuan & Lin weight each group by `sqrt(group size)`; every group of one
    kernel has the same size, so that only rescales `strength`.

    Gradient-based optimizers approach the zero groups but oscillate around
    them with an amplitude of about `learning_rate * strength`; decaying the
    learning rate lets them settle. Zero groups get a zero (sub)gradient
    here, never a NaN.

    Example:

    >>> regularizer = GroupLasso(0.1)
    >>> kernel = keras.ops.convert_to_tensor([[3.0, 0.0], [4.0, 1.0]])
    >>> round(float(regularizer(kernel)), 4)  # 0.1 * (5 + 1)
    0.6
    >>> layer = keras.layers.Dense(16, kernel_regularizer=GroupLasso(1e-3))

    Args:
        strength: Non-negative Python float, the penalty's coefficient.
    """

    def __init__(self, strength=0.01):
        if strength < 0:
            raise ValueError(
                f"Argument `strength` must be >= 0. Received: strength={strength}"
            )
        self.strength = float(strength)

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        if len(x.shape) < 2:
            # A bias or a scale vector: every entry is its own unit.
            squares = ops.square(x)
        else:
            squares = ops.sum(
                ops.square(ops.reshape(x, (-1, x.shape[-1]))), axis=0
            )
        # sqrt has an infinite derivative at 0; substituting 1 under the
        # root for empty groups gives them a zero gradient instead of NaN.
        nonzero = squares > 0
        norms = ops.where(
            nonzero, ops.sqrt(ops.where(nonzero, squares, 1.0)), 0.0
        )
        return self.strength * ops.sum(norms)

    def get_config(self):
        return {"strength": self.strength}
