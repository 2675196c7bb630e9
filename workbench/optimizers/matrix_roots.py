"""Damped inverse p-th roots of symmetric PSD statistics, for Shampoo.

Two ways to compute `(A + epsilon * lambda_max(A) I)^(-1/p)`:

- `eigh_inverse_root`: a symmetric eigendecomposition in float64. Exact up to
  float64 rounding; the choice wherever float64 exists (CPU, CUDA, TensorFlow
  and PyTorch by default, JAX with `jax_enable_x64`).
- `newton_inverse_root`: the coupled Newton iteration of Guo & Higham (2006),
  "A Schur-Newton Method for the Matrix p-th Root and its Inverse", in the
  form Anil et al. (2020, https://arxiv.org/abs/2002.09018) run in float32
  on TPUs. It needs only matrix products, so it is stable in float32 (it
  corrects its own rounding every iteration, where a float32 eigh loses the
  small eigenvalues outright) and it is what accelerators do fastest.

`float64_available()` says whether the first can run here.
"""

import contextlib

import keras
from keras import ops

from workbench.optimizers.common import constant

# Floor of the damping's scale, for statistics that are still all zero.
TINY = 1e-30
# Newton: stop when max|M - I| is below this, or after this many iterations
# (a condition number of 1e6 needs about 20 at p = 4).
NEWTON_TOLERANCE = 1e-6
NEWTON_MAX_ITERATIONS = 100
# Power iterations for lambda_max in the Newton path: the Rayleigh quotient
# lies between the two largest eigenvalues from the first step on, so a close
# second eigenvalue costs little accuracy in the damping's scale.
POWER_ITERATIONS = 24


def float64_available():
    """Whether float64 arithmetic is available on this backend and device.

    False for JAX without `jax_enable_x64` (the default) or on a TPU, for
    PyTorch on Apple's MPS, and for TensorFlow when a TPU is attached.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return bool(jax.config.jax_enable_x64) and jax.default_backend() != "tpu"
    if backend == "torch":
        return ops.zeros(()).device.type != "mps"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("TPU")
    return True


def check_newton_root_order(root_order):
    if root_order != int(root_order):
        raise ValueError(
            "The Newton root needs an integer root order p (the root is "
            f"A^(-1/p)); received p={root_order!r}. Use an integer "
            "exponent_override, or root_method='eigh' where float64 exists "
            "(JAX: enable jax_enable_x64)."
        )


def resolve_root_method(requested, root_order):
    """`"eigh"` or `"newton"` for a requested `"auto"`, `"eigh"` or `"newton"`."""
    if requested != "auto":
        return requested
    if float64_available():
        return "eigh"
    check_newton_root_order(root_order)
    return "newton"


@contextlib.contextmanager
def full_precision_matmul():
    """Float32 products in float32, not TF32/bf16 passes.

    JAX on GPUs and TPUs multiplies float32 matrices with reduced-precision
    passes by default; the Newton iteration's accuracy is that of its
    products.
    """
    if keras.backend.backend() == "jax":
        import jax

        with jax.default_matmul_precision("highest"):
            yield
    else:
        yield


def diagonal_inverse_root(statistic, exponent, epsilon, compute_dtype):
    """`(d + epsilon * max(d))^exponent` for a diagonal statistic `d`."""
    dtype = statistic.dtype
    statistic = ops.cast(statistic, compute_dtype)
    scale = ops.maximum(ops.max(statistic), TINY)
    damped = statistic + constant(epsilon, compute_dtype) * scale
    return ops.cast(ops.power(damped, exponent), dtype)


def eigh_inverse_root(statistic, exponent, epsilon, compute_dtype="float64"):
    """`(A + epsilon * lambda_max I)^exponent` through `eigh`, in `compute_dtype`.

    float32 eigh has absolute errors of order 1e-7 * lambda_max, which is the
    size of the small eigenvalues the damping is meant to keep; hence float64.
    """
    dtype = statistic.dtype
    statistic = ops.cast(statistic, compute_dtype)
    symmetric = 0.5 * (statistic + ops.transpose(statistic))
    eigenvalues, eigenvectors = ops.eigh(symmetric)
    eigenvalues = ops.maximum(eigenvalues, 0.0)
    scale = ops.maximum(ops.max(eigenvalues), TINY)
    damped = eigenvalues + constant(epsilon, compute_dtype) * scale
    root = ops.matmul(
        eigenvectors * ops.expand_dims(ops.power(damped, exponent), 0),
        ops.transpose(eigenvectors),
    )
    return ops.cast(root, dtype)


def largest_eigenvalue(matrix):
    """lambda_max of a symmetric PSD matrix by power iteration."""
    size = matrix.shape[0]

    def step(_, vector):
        product = ops.matmul(matrix, vector)
        return product / ops.maximum(ops.sqrt(ops.sum(ops.square(product))), TINY)

    # A loop rather than unrolled products: one small body to compile.
    vector = ops.fori_loop(
        0, POWER_ITERATIONS, step, ops.ones((size, 1), dtype=matrix.dtype) / size**0.5
    )
    return ops.sum(vector * ops.matmul(matrix, vector))


def _integer_power(matrix, p):
    """matrix^p for an integer p >= 1, by repeated squaring."""
    result, square = None, matrix
    while p:
        if p & 1:
            result = square if result is None else ops.matmul(result, square)
        p >>= 1
        if p:
            square = ops.matmul(square, square)
    return result


def newton_inverse_root(statistic, p, epsilon):
    """`(A + epsilon * lambda_max I)^(-1/p)` by the coupled Newton iteration.

    With `A_d` the damped matrix and `z = (1 + p) / (2 ||A_d||_F)`, start
    from `M_0 = z A_d`, `H_0 = z^(1/p) I` and iterate

    ```
    T_k = ((p + 1) I - M_k) / p
    M_{k+1} = T_k^p M_k,    H_{k+1} = H_k T_k
    ```

    `M_k -> I` and `H_k -> A_d^(-1/p)`, quadratically once close. It stops at
    `max|M - I| < 1e-6`, after 100 iterations, or when the error grows by
    more than 1.2x (rounding has taken over), keeping the last good `H`.
    `p` must be a positive integer.
    """
    dtype = statistic.dtype
    size = statistic.shape[0]
    identity = ops.eye(size, dtype=dtype)
    with full_precision_matmul():
        # Work on A / s with s its largest entry, and scale the root back by s^(-1/p): a
        # statistic of 1e-20 (a layer with tiny gradients) or 0 (embedding rows never used)
        # would otherwise underflow float32 in ||A||_F and turn z into inf.
        norm = ops.maximum(ops.max(ops.abs(statistic)), TINY)
        symmetric = 0.5 * (statistic + ops.transpose(statistic)) / norm
        # As in the eigh path, the damping's scale is floored at TINY (in A's units).
        scale = ops.maximum(largest_eigenvalue(symmetric), TINY / norm)
        damped = symmetric + constant(epsilon, dtype) * scale * identity
        z = (1.0 + p) / (2.0 * ops.sqrt(ops.sum(ops.square(damped))))
        m = damped * z
        h = identity * ops.power(z, 1.0 / p)
        error = ops.max(ops.abs(m - identity))

        def keep_going(i, m, h, previous_h, error, improving):
            return ops.logical_and(
                ops.logical_and(i < NEWTON_MAX_ITERATIONS, error > NEWTON_TOLERANCE),
                improving,
            )

        def step(i, m, h, previous_h, error, improving):
            t = ((p + 1.0) * identity - m) / p
            new_m = ops.matmul(_integer_power(t, p), m)
            new_h = ops.matmul(h, t)
            new_error = ops.max(ops.abs(new_m - identity))
            return i + 1, new_m, new_h, h, new_error, new_error < 1.2 * error

        _, _, h, previous_h, _, improving = ops.while_loop(
            keep_going,
            step,
            (
                ops.convert_to_tensor(0, dtype="int32"),
                m,
                h,
                h,
                error,
                ops.convert_to_tensor(True),
            ),
        )
        return ops.where(improving, h, previous_h) * ops.power(norm, -1.0 / p)
