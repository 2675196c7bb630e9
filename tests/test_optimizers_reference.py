"""Each workbench optimizer against a NumPy transcription of its published update.

Runs in float64 on fixed inputs, a few steps, so that the comparison can be
tight (1e-6 relative and absolute tolerance on the final values). Gradients
depend on the current values (a quadratic loss) so that parameter-dependent
terms (trust ratios, Prodigy's <g, x0 - x>) are exercised.
"""

import math

import keras
import numpy as np
import pytest

from workbench.optimizers import LARS
from workbench.optimizers import AdaBelief
from workbench.optimizers import GradientNoise
from workbench.optimizers import Lookahead
from workbench.optimizers import Prodigy
from workbench.optimizers import RAdam
from workbench.optimizers import Shampoo
from workbench.optimizers.gradient_noise import standard_normal
from workbench.optimizers.matrix_roots import newton_inverse_root

TOLERANCE = dict(rtol=1e-6, atol=1e-6)
SHAPES = [(5, 3), (3,), (2, 2, 2, 3)]


@pytest.fixture(autouse=True)
def float64():
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(previous)


def make_problem(shapes, seed=0):
    """Initial values and a gradient function g_i(x) = A_i x_i - b_i."""
    rng = np.random.default_rng(seed)
    initial, targets, curvatures = [], [], []
    for shape in shapes:
        size = math.prod(shape)
        initial.append(rng.normal(size=shape))
        targets.append(rng.normal(size=shape))
        q = rng.normal(size=(size, size))
        curvatures.append(q @ q.T / size + 0.1 * np.eye(size))

    def gradients(values):
        return [
            (a @ (x - b).ravel()).reshape(x.shape)
            for x, a, b in zip(values, curvatures, targets)
        ]

    return initial, gradients


def run_keras(optimizer, initial, gradients, steps, dtype="float64"):
    variables = [
        keras.Variable(x, dtype=dtype, name=f"v{i}")
        for i, x in enumerate(initial)
    ]
    history = []
    for _ in range(steps):
        values = [keras.ops.convert_to_numpy(v) for v in variables]
        # Tensors, not arrays: PyTorch's fused Adam and SGD take only tensors.
        grads = [keras.ops.convert_to_tensor(g, dtype) for g in gradients(values)]
        optimizer.apply(grads, variables)
        history.append([keras.ops.convert_to_numpy(v) for v in variables])
    return history


def run_numpy(step_fn, initial, gradients, steps):
    values = [x.copy() for x in initial]
    history = []
    for t in range(1, steps + 1):
        values = step_fn(values, gradients(values), t)
        history.append([x.copy() for x in values])
    return history


def assert_same_trajectory(actual, expected):
    assert len(actual) == len(expected)
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        for i, (a, e) in enumerate(zip(got, want)):
            np.testing.assert_allclose(
                a, e, err_msg=f"step {step}, variable {i}", **TOLERANCE
            )


# Keras' Adam casts its betas with `ops.cast`, which rounds Python floats
# through float32; betas that float32 represents exactly keep the float64
# comparison meaningful.
ADAM_BETAS = dict(beta_1=0.875, beta_2=1 - 2**-10)


def numpy_adam(lr, beta_1, beta_2, epsilon=1e-7):
    """Keras' Adam (epsilon outside the bias correction)."""
    state = {}

    def step(values, grads, t):
        out = []
        for i, (x, g) in enumerate(zip(values, grads)):
            m, v = state.get(i, (np.zeros_like(x), np.zeros_like(x)))
            m = beta_1 * m + (1 - beta_1) * g
            v = beta_2 * v + (1 - beta_2) * g * g
            state[i] = (m, v)
            alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            out.append(x - alpha * m / (np.sqrt(v) + epsilon))
        return out

    return step


def numpy_sgd(lr):
    def step(values, grads, t):
        return [x - lr * g for x, g in zip(values, grads)]

    return step


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adabelief_matches_paper_algorithm(amsgrad):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-16
    initial, gradients = make_problem(SHAPES)
    state = {}

    def step(values, grads, t):
        out = []
        for i, (x, g) in enumerate(zip(values, grads)):
            m, s, s_max = state.get(i, (0 * x, 0 * x, 0 * x))
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
            if amsgrad:
                s_max = np.maximum(s_max, s)
                s = s_max
            state[i] = (m, s, s_max)
            m_hat = m / (1 - b1**t)
            s_hat = s / (1 - b2**t)
            out.append(x - lr * m_hat / (np.sqrt(s_hat) + eps))
        return out

    optimizer = AdaBelief(learning_rate=lr, amsgrad=amsgrad)
    assert_same_trajectory(
        run_keras(optimizer, initial, gradients, 6),
        run_numpy(step, initial, gradients, 6),
    )


@pytest.mark.parametrize("beta_2, threshold", [(0.999, 5.0), (0.9, 6.0)])
def test_radam_matches_paper_algorithm(beta_2, threshold):
    lr, b1, eps, steps = 0.01, 0.9, 1e-7, 12
    initial, gradients = make_problem(SHAPES)
    rho_inf = 2 / (1 - beta_2) - 1
    state, rectified_steps = {}, []

    def step(values, grads, t):
        out = []
        rho_t = rho_inf - 2 * t * beta_2**t / (1 - beta_2**t)
        rectified = rho_t >= threshold
        rectified_steps.append(rectified)
        for i, (x, g) in enumerate(zip(values, grads)):
            m, v = state.get(i, (0 * x, 0 * x))
            m = b1 * m + (1 - b1) * g
            v = beta_2 * v + (1 - beta_2) * g * g
            state[i] = (m, v)
            m_hat = m / (1 - b1**t)
            if rectified:
                r = math.sqrt(
                    (rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                )
                adaptive = math.sqrt(1 - beta_2**t) / (np.sqrt(v) + eps)
                out.append(x - lr * r * m_hat * adaptive)
            else:
                out.append(x - lr * m_hat)
        return out

    optimizer = RAdam(learning_rate=lr, beta_2=beta_2, sma_threshold=threshold)
    expected = run_numpy(step, initial, gradients, steps)
    # Both regimes must be exercised for the comparison to mean anything.
    assert any(rectified_steps) and not all(rectified_steps)
    assert_same_trajectory(run_keras(optimizer, initial, gradients, steps), expected)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_paper_algorithm(nesterov):
    lr, mu, eta, wd = 0.5, 0.9, 0.001, 0.01
    initial, gradients = make_problem(SHAPES)
    state = {}

    def step(values, grads, t):
        out = []
        for i, (x, g) in enumerate(zip(values, grads)):
            v = state.get(i, 0 * x)
            if x.ndim <= 1:  # bias-like: plain momentum SGD
                update = lr * g
            else:
                w_norm, g_norm = np.linalg.norm(x), np.linalg.norm(g)
                trust = eta * w_norm / (g_norm + wd * w_norm)
                update = lr * trust * (g + wd * x)
            v = mu * v + update
            state[i] = v
            out.append(x - (mu * v + update if nesterov else v))
        return out

    optimizer = LARS(
        learning_rate=lr,
        momentum=mu,
        trust_coefficient=eta,
        weight_decay=wd,
        nesterov=nesterov,
    )
    assert_same_trajectory(
        run_keras(optimizer, initial, gradients, 5),
        run_numpy(step, initial, gradients, 5),
    )


def test_lars_without_exclusion_adapts_vectors_too():
    initial, gradients = make_problem([(4,)])
    optimizer = LARS(learning_rate=1.0, exclude_bias_and_norm=False)
    (after,) = run_keras(optimizer, initial, gradients, 1)[0]
    g = gradients(initial)[0]
    trust = 0.001 * np.linalg.norm(initial[0]) / np.linalg.norm(g)
    np.testing.assert_allclose(after, initial[0] - trust * g, **TOLERANCE)


def numpy_prodigy(
    lr=1.0,
    beta_1=0.9,
    beta_2=0.999,
    beta_3=None,
    eps=1e-8,
    weight_decay=0.0,
    decouple=True,
    use_bias_correction=False,
    safeguard_warmup=False,
    d0=1e-6,
    d_coef=1.0,
    growth_rate=math.inf,
):
    """A transcription of `prodigyopt.Prodigy.step` (one parameter group)."""
    beta_3 = math.sqrt(beta_2) if beta_3 is None else beta_3
    group = dict(d=d0, d_max=d0, d_numerator=0.0, k=0)
    state = {}

    def step(values, grads, t):
        d, d_max, k = group["d"], group["d_max"], group["k"]
        bias = (
            math.sqrt(1 - beta_2 ** (k + 1)) / (1 - beta_1 ** (k + 1))
            if use_bias_correction
            else 1.0
        )
        dlr = d * lr * bias
        d_numerator = group["d_numerator"] * beta_3
        d_denom = 0.0
        grads = list(grads)
        for i, (x, g) in enumerate(zip(values, grads)):
            if weight_decay and not decouple:
                g = g + weight_decay * x
                grads[i] = g
            if i not in state:
                state[i] = dict(s=0 * x, p0=x.copy(), m=0 * x, v=0 * x)
            st = state[i]
            d_numerator += (d / d0) * dlr * np.dot(g.ravel(), (st["p0"] - x).ravel())
            st["m"] = beta_1 * st["m"] + d * (1 - beta_1) * g
            st["v"] = beta_2 * st["v"] + d * d * (1 - beta_2) * g * g
            rate = (d / d0) * d if safeguard_warmup else (d / d0) * dlr
            st["s"] = beta_3 * st["s"] + rate * g
            d_denom += np.abs(st["s"]).sum()
        if d_denom == 0:
            return values
        d_hat = d_coef * d_numerator / d_denom
        if d == d0:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * growth_rate)
        group.update(d=d, d_max=d_max, d_numerator=d_numerator, k=k + 1)
        out = []
        for i, x in enumerate(values):
            st = state[i]
            denom = np.sqrt(st["v"]) + d * eps
            if weight_decay and decouple:
                x = x - weight_decay * dlr * x
            out.append(x - dlr * st["m"] / denom)
        return out

    return step, group


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(weight_decay=0.1),
        dict(
            weight_decay=0.05,
            decouple=False,
            use_bias_correction=True,
            safeguard_warmup=True,
            growth_rate=1.5,
            d_coef=2.0,
            beta_3=0.95,
        ),
    ],
    ids=["defaults", "decoupled_decay", "all_options"],
)
def test_prodigy_matches_reference_implementation(options):
    initial, gradients = make_problem(SHAPES)
    step, group = numpy_prodigy(**options)
    expected = run_numpy(step, initial, gradients, 8)
    optimizer = Prodigy(**options)
    actual = run_keras(optimizer, initial, gradients, 8)
    assert_same_trajectory(actual, expected)
    # d must actually have moved for the test to cover the estimate.
    assert group["d"] > 1.2e-6
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(optimizer.d)), group["d"], rtol=1e-6)


def numpy_shampoo(
    lr, beta_1, beta_2, epsilon, matrix_epsilon, every, start, max_dim, p, block
):
    state = {}

    def inverse_root(stat):
        if stat.ndim == 1:
            damping = matrix_epsilon * max(stat.max(), 1e-30)
            return (stat + damping) ** (-1 / p)
        w, q = np.linalg.eigh(0.5 * (stat + stat.T))
        w = np.maximum(w, 0.0)
        damping = matrix_epsilon * max(w.max(), 1e-30)
        return (q * (w + damping) ** (-1 / p)) @ q.T

    def cuts(n):
        if block is None or n <= block:
            return [slice(0, n)]
        return [slice(i, min(i + block, n)) for i in range(0, n, block)]

    def new_factor(n):
        return (np.zeros((n, n)), np.eye(n)) if n <= max_dim else (np.zeros(n), np.ones(n))

    def step(values, grads, t):
        iteration = t - 1
        out = []
        for i, (x, g) in enumerate(zip(values, grads)):
            if i not in state:
                st = state[i] = dict(m=0 * x, v=0 * x, blocks=[])
                if x.ndim >= 2:
                    rows, cols = math.prod(x.shape[:-1]), x.shape[-1]
                    for r in cuts(rows):
                        for c in cuts(cols):
                            L, PL = new_factor(r.stop - r.start)
                            R, PR = new_factor(c.stop - c.start)
                            st["blocks"].append(dict(r=r, c=c, L=L, R=R, PL=PL, PR=PR))
            st = state[i]
            st["m"] = beta_1 * st["m"] + (1 - beta_1) * g
            st["v"] = beta_2 * st["v"] + (1 - beta_2) * g * g
            m_hat = st["m"] / (1 - beta_1**t)
            v_hat = st["v"] / (1 - beta_2**t)
            adam = m_hat / (np.sqrt(v_hat) + epsilon)
            if x.ndim < 2:
                out.append(x - lr * adam)
                continue
            G = g.reshape(-1, x.shape[-1])
            M = st["m"].reshape(G.shape)
            D = np.zeros_like(G)
            refresh = iteration >= start and (iteration - start) % every == 0
            for b in st["blocks"]:
                r, c = b["r"], b["c"]
                Gb = G[r, c]
                left = Gb @ Gb.T if b["L"].ndim == 2 else (Gb**2).sum(axis=1)
                right = Gb.T @ Gb if b["R"].ndim == 2 else (Gb**2).sum(axis=0)
                b["L"] = beta_2 * b["L"] + (1 - beta_2) * left
                b["R"] = beta_2 * b["R"] + (1 - beta_2) * right
                if refresh:
                    b["PL"], b["PR"] = inverse_root(b["L"]), inverse_root(b["R"])
                Db = b["PL"] @ M[r, c] if b["PL"].ndim == 2 else b["PL"][:, None] * M[r, c]
                D[r, c] = Db @ b["PR"] if b["PR"].ndim == 2 else Db * b["PR"][None, :]
            if iteration >= start:
                update = D * np.linalg.norm(adam) / np.linalg.norm(D)
                out.append(x - lr * update.reshape(x.shape))
            else:
                out.append(x - lr * adam)
        return out

    return step


@pytest.mark.parametrize(
    "exponent_override, block_size, max_dim",
    [(None, None, 6), (2, None, 6), (None, 3, 2)],
    ids=["p4", "p2", "blocks_of_3"],
)
def test_shampoo_matches_numpy_reference(exponent_override, block_size, max_dim):
    # (5, 3): full L and R; (3,): Adam; (2, 2, 2, 3): rank 4, seen as (8, 3);
    # (7, 2): with max_preconditioner_dim=6, diagonal L and full R. With
    # blocks of 3 and max_preconditioner_dim=2, blocks mix full and diagonal.
    shapes = SHAPES + [(7, 2)]
    settings = dict(
        lr=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-7, matrix_epsilon=1e-4,
        every=3, start=2, max_dim=max_dim, p=exponent_override or 4,
        block=block_size,
    )
    initial, gradients = make_problem(shapes)
    optimizer = Shampoo(
        learning_rate=settings["lr"],
        beta_1=settings["beta_1"],
        beta_2=settings["beta_2"],
        epsilon=settings["epsilon"],
        matrix_epsilon=settings["matrix_epsilon"],
        precondition_every=settings["every"],
        start_preconditioning_step=settings["start"],
        max_preconditioner_dim=max_dim,
        block_size=block_size,
        exponent_override=exponent_override,
    )
    steps = 9  # roots computed at iterations 2, 5, 8
    assert_same_trajectory(
        run_keras(optimizer, initial, gradients, steps),
        run_numpy(numpy_shampoo(**settings), initial, gradients, steps),
    )
    if block_size is None:
        diagonal_left = optimizer._left_statistics[optimizer._first_block[3]]
        assert tuple(diagonal_left.shape) == (7,)
    else:
        # (5, 3) -> row blocks 3 + 2; (8, 3) -> 3 + 3 + 2; (7, 2) -> 3 + 3 + 1.
        assert len(optimizer._left_statistics) == 2 + 3 + 3


def test_shampoo_newton_root_in_float32_follows_the_float64_reference():
    # The float32 path for devices without float64. Its accuracy floor is float32's rounding
    # of the statistics themselves (about 6e-8 * lambda_max, against a damping of
    # matrix_epsilon * lambda_max), hence a tolerance of 1e-3 rather than 1e-6.
    shapes = [(5, 3), (3,), (8, 6)]
    settings = dict(
        lr=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-7, matrix_epsilon=1e-4,
        every=3, start=2, max_dim=6, p=4, block=None,
    )
    initial, gradients = make_problem(shapes)
    optimizer = Shampoo(
        learning_rate=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-7, matrix_epsilon=1e-4,
        precondition_every=3, start_preconditioning_step=2, max_preconditioner_dim=6,
        root_method="newton",
    )
    steps = 9
    got = run_keras(optimizer, initial, gradients, steps, dtype="float32")
    want = run_numpy(numpy_shampoo(**settings), initial, gradients, steps)
    assert optimizer.root_method_in_use == "newton"
    for step, (g, w) in enumerate(zip(got, want), start=1):
        for a, e in zip(g, w):
            np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-4, err_msg=f"step {step}")


@pytest.mark.parametrize("rank", [3, 12], ids=["rank_deficient", "full_rank"])
def test_newton_inverse_root_matches_eigh(rank):
    rng = np.random.default_rng(rank)
    g = rng.normal(size=(12, rank))
    statistic = (g @ g.T).astype("float32")
    exact = statistic.astype("float64")
    w, q = np.linalg.eigh(exact)
    w = np.maximum(w, 0.0)
    for p, epsilon in ((4, 1e-4), (2, 1e-6)):
        want = (q * (w + epsilon * w.max()) ** (-1 / p)) @ q.T
        got = keras.ops.convert_to_numpy(
            newton_inverse_root(keras.ops.convert_to_tensor(statistic), p, epsilon)
        )
        error = np.linalg.norm(got - want) / np.linalg.norm(want)
        # Full rank: float32 rounding only. Rank deficient: the null space's eigenvalues are
        # the damping itself, which float32 holds to ~6e-8 / epsilon relative.
        assert error < (1e-4 if rank == 12 else 2e-3 if epsilon == 1e-4 else 5e-2), (p, error)


def test_newton_inverse_root_of_zero_and_tiny_statistics():
    # An embedding's statistic is all zero for rows never used, and a layer with tiny gradients
    # has a statistic near 1e-20, whose squares underflow float32: the root must stay finite
    # and equal the float64 eigh root, (damped A)^(-1/4) with the damping floored at 1e-30.
    for statistic in (np.zeros((6, 6)), 1e-20 * np.diag([1.0, 2.0, 3.0, 0.0, 0.0, 0.0])):
        w, q = np.linalg.eigh(statistic)
        damping = 1e-6 * max(w.max(), 1e-30)
        want = (q * (np.maximum(w, 0) + damping) ** -0.25) @ q.T
        got = keras.ops.convert_to_numpy(
            newton_inverse_root(keras.ops.convert_to_tensor(statistic, "float32"), 4, 1e-6)
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_shampoo_rejects_an_unknown_root_method():
    with pytest.raises(ValueError, match="root_method"):
        Shampoo(root_method="cholesky")
    with pytest.raises(ValueError, match="integer"):
        Shampoo(exponent_override=2.5, root_method="newton")


def test_shampoo_direction_differs_from_adam():
    """Guards the reference test against a preconditioner that does nothing."""
    initial, gradients = make_problem([(5, 3)])
    shampoo = Shampoo(learning_rate=0.01, precondition_every=1,
                      start_preconditioning_step=1)
    adam_like = Shampoo(learning_rate=0.01, start_preconditioning_step=10**6)
    a = run_keras(shampoo, initial, gradients, 4)[-1][0]
    b = run_keras(adam_like, initial, gradients, 4)[-1][0]
    assert np.abs(a - b).max() > 1e-4


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_lookahead_composes_with_inner_step(inner):
    k, alpha, steps = 3, 0.5, 10
    initial, gradients = make_problem(SHAPES)
    if inner == "sgd":
        inner_optimizer, inner_step = keras.optimizers.SGD(0.05), numpy_sgd(0.05)
    else:
        inner_optimizer = keras.optimizers.Adam(0.05, **ADAM_BETAS)
        inner_step = numpy_adam(0.05, **ADAM_BETAS)
    slow = [x.copy() for x in initial]

    def step(values, grads, t):
        nonlocal slow
        fast = inner_step(values, grads, t)
        if t % k == 0:
            slow = [s + alpha * (f - s) for s, f in zip(slow, fast)]
            fast = [s.copy() for s in slow]
        return fast

    optimizer = Lookahead(inner_optimizer, sync_period=k, slow_step_size=alpha)
    assert_same_trajectory(
        run_keras(optimizer, initial, gradients, steps),
        run_numpy(step, initial, gradients, steps),
    )
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == steps


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_gradient_noise_composes_with_inner_step(inner):
    eta, gamma, seed, steps = 0.3, 0.55, 7, 4
    initial, gradients = make_problem(SHAPES)
    # The same seed generator, drawn in the same order, gives the N(0, 1)
    # samples the optimizer draws; the reference has to get sigma_t and the
    # composition right. Their distribution is checked in the test below.
    replay = keras.random.SeedGenerator(seed)

    def noisy_grads(values, t):
        sigma = math.sqrt(eta / t**gamma)  # t is 1-based: (1 + (t - 1))
        return [
            g + sigma * keras.ops.convert_to_numpy(standard_normal(g.shape, "float64", replay))
            for g in gradients(values)
        ]

    if inner == "sgd":
        inner_optimizer, inner_step = keras.optimizers.SGD(0.05), numpy_sgd(0.05)
    else:
        inner_optimizer = keras.optimizers.Adam(0.05, **ADAM_BETAS)
        inner_step = numpy_adam(0.05, **ADAM_BETAS)

    def step(values, grads, t):
        return inner_step(values, noisy_grads(values, t), t)

    optimizer = GradientNoise(inner_optimizer, eta=eta, gamma=gamma, seed=seed)
    assert_same_trajectory(
        run_keras(optimizer, initial, gradients, steps),
        run_numpy(step, initial, gradients, steps),
    )


def test_gradient_noise_variance_follows_annealing_schedule():
    eta, gamma = 0.5, 0.55
    variable = keras.Variable(np.zeros(40000), dtype="float64")
    optimizer = GradientNoise(keras.optimizers.SGD(1.0), eta=eta, gamma=gamma, seed=3)
    zero = np.zeros(40000)
    for t in range(4):
        before = keras.ops.convert_to_numpy(variable)
        optimizer.apply([keras.ops.convert_to_tensor(zero)], [variable])
        noise = before - keras.ops.convert_to_numpy(variable)
        expected_std = math.sqrt(eta / (1 + t) ** gamma)
        # 40000 samples: the standard deviation is within 2% w.h.p.
        assert abs(noise.std() / expected_std - 1) < 0.02
        assert abs(noise.mean()) < 0.05 * expected_std
