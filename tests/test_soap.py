"""SOAP against a NumPy transcription of the reference implementation (Vyas et al. 2024,
github.com/nikhilvyas/SOAP), and the Keras optimizer contract (config, save/load and continue,
jit_compile, a `.keras` round trip, the component registry)."""

import math

import keras
import numpy as np
import pytest

from workbench.components import OPTIMIZERS, build_optimizer
from workbench.optimizers import SOAP

TOLERANCE = dict(rtol=1e-6, atol=1e-7)


@pytest.fixture
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
        return [(a @ (x - b).ravel()).reshape(x.shape)
                for x, a, b in zip(values, curvatures, targets)]

    return initial, gradients


def numpy_soap(shapes, lr, beta_1, beta_2, eps, every, max_dim):
    """The reference `SOAP.step` for each variable: the first call initialises, then Adam in the
    rotated space, statistics updated after the step, bases refreshed by power iteration + QR."""
    states = []
    for shape in shapes:
        matrix = SOAP.matrix_shape(shape)
        sides = [None, None] if matrix is None else [
            None if n > max_dim else {"GG": np.zeros((n, n)), "Q": None} for n in matrix]
        states.append({"step": 0, "m": np.zeros(shape), "v": np.zeros(matrix or shape),
                       "matrix": matrix, "sides": sides, "initialised": False})

    def project(x, sides, back=False):
        left, right = sides
        if left is not None:
            x = (left["Q"] if back else left["Q"].T) @ x
        if right is not None:
            x = x @ (right["Q"].T if back else right["Q"])
        return x

    def update_preconditioner(g, state):
        left, right = state["sides"]
        for side, outer in ((left, g @ g.T), (right, g.T @ g)):
            if side is not None:
                side["GG"] = beta_2 * side["GG"] + (1 - beta_2) * outer
        for side in (left, right):
            if side is not None and side["Q"] is None:
                _, vectors = np.linalg.eigh(side["GG"] + 1e-30 * np.eye(len(side["GG"])))
                side["Q"] = vectors[:, ::-1]
        if state["step"] > 0 and state["step"] % every == 0:
            for axis, side in enumerate((left, right)):
                if side is None:
                    continue
                estimated = np.diag(side["Q"].T @ side["GG"] @ side["Q"])
                order = np.argsort(-estimated, kind="stable")
                state["v"] = np.take(state["v"], order, axis=axis)
                side["Q"], _ = np.linalg.qr(side["GG"] @ side["Q"][:, order])

    def step(values, grads, t):
        out = []
        for x, grad, state in zip(values, grads, states):
            g = grad.reshape(state["matrix"]) if state["matrix"] else grad
            if not state["initialised"]:
                state["initialised"] = True
                if state["matrix"]:
                    update_preconditioner(g, state)
                out.append(x)
                continue
            state["step"] += 1
            s = state["step"]
            rotated = project(g, state["sides"]) if state["matrix"] else g
            state["m"] = beta_1 * state["m"] + (1 - beta_1) * grad
            state["v"] = beta_2 * state["v"] + (1 - beta_2) * rotated ** 2
            m = state["m"].reshape(state["matrix"]) if state["matrix"] else state["m"]
            m = project(m, state["sides"]) if state["matrix"] else m
            direction = m / (np.sqrt(state["v"]) + eps)
            if state["matrix"]:
                direction = project(direction, state["sides"], back=True)
            step_size = lr * math.sqrt(1 - beta_2 ** s) / (1 - beta_1 ** s)
            out.append(x - step_size * direction.reshape(x.shape))
            if state["matrix"]:
                update_preconditioner(g, state)
        return out

    return step


# Statistics that are full rank from the first step: the eigenbasis of a rank-deficient
# statistic is only defined up to a rotation of its null space, which differs between LAPACK
# builds, and Adam's second moment in that basis with it. (4, 4) and (2, 2, 4) -> (4, 4): both
# sides rotated; (3,): Adam; (7, 2) with max_preconditioner_dim 4: only the right side rotated.
@pytest.mark.parametrize("max_dim, shapes", [(16, [(4, 4), (3,), (2, 2, 4)]),
                                             (4, [(4, 4), (3,), (7, 2)])],
                         ids=["both_sides", "one_side_too_large"])
def test_soap_matches_numpy_reference(float64, max_dim, shapes):
    settings = dict(lr=0.01, beta_1=0.9, beta_2=0.95, eps=1e-8, every=3, max_dim=max_dim)
    initial, gradients = make_problem(shapes)
    optimizer = SOAP(learning_rate=settings["lr"], beta_1=settings["beta_1"],
                     beta_2=settings["beta_2"], epsilon=settings["eps"],
                     precondition_every=settings["every"], max_preconditioner_dim=max_dim)
    variables = [keras.Variable(x, dtype="float64", name=f"v{i}") for i, x in enumerate(initial)]
    reference = numpy_soap(shapes, **settings)
    expected = [x.copy() for x in initial]
    for t in range(1, 11):  # bases refreshed at steps 3, 6, 9
        grads = gradients([v.numpy() for v in variables])
        optimizer.apply(grads, variables)
        expected = reference(expected, gradients(expected), t)
        for got, want in zip(variables, expected):
            np.testing.assert_allclose(got.numpy(), want, **TOLERANCE, err_msg=f"step {t}")
    assert optimizer._sides[1] is None
    assert optimizer._sides[0][0] is not None and optimizer._sides[2][1] is not None
    assert (optimizer._sides[2][0] is None) == (max_dim < 7)


def test_soap_differs_from_adam_and_first_step_only_initialises(float64):
    """Guards the reference test against a rotation that does nothing."""
    initial, gradients = make_problem([(5, 3)])
    soap = SOAP(learning_rate=0.01, beta_1=0.9, beta_2=0.95, precondition_every=1)
    adam = keras.optimizers.Adam(learning_rate=0.01, beta_1=0.9, beta_2=0.95, epsilon=1e-8)
    a = keras.Variable(initial[0], dtype="float64")
    b = keras.Variable(initial[0], dtype="float64")
    soap.apply(gradients([a.numpy()]), [a])
    np.testing.assert_array_equal(a.numpy(), initial[0])
    for _ in range(4):
        soap.apply(gradients([a.numpy()]), [a])
        adam.apply(gradients([b.numpy()]), [b])
    assert np.abs(a.numpy() - b.numpy()).max() > 1e-4


def test_matrix_shape_is_the_most_square_split():
    assert SOAP.matrix_shape((128, 4, 32)) == (128, 128)
    assert SOAP.matrix_shape((4, 32, 128)) == (128, 128)
    assert SOAP.matrix_shape((7,)) is None


def test_config_round_trips_every_constructor_argument():
    optimizer = SOAP(0.02, 0.8, 0.9, 0.7, 1e-6, 7, 64, name="so", clipnorm=2.0, weight_decay=0.1)
    config = optimizer.get_config()
    clone = SOAP.from_config(config)
    assert clone.get_config() == config
    for key, value in dict(learning_rate=0.02, beta_1=0.8, beta_2=0.9, shampoo_beta=0.7,
                           epsilon=1e-6, precondition_every=7, max_preconditioner_dim=64,
                           clipnorm=2.0, weight_decay=0.1).items():
        assert config[key] == pytest.approx(value), key


def _model():
    # Square kernels whose gradient over a batch of 16 is full rank, for the reason given above
    # the reference test: otherwise XLA and graph mode may pick different null-space bases.
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(4)])


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype("float32")
    return x, (np.tanh(x) @ rng.normal(size=(4, 4))).astype("float32")


@pytest.mark.slow
def test_save_load_continues_training_and_jit_matches_graph(tmp_path):
    x, y = _data()

    def fit(model, epochs, jit=False):
        if not model.compiled:
            model.compile(optimizer=SOAP(learning_rate=0.01, precondition_every=2), loss="mse",
                          jit_compile=jit)
        model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
        return model

    straight = fit(_model(), 3)
    first = fit(_model(), 1)
    first.save(tmp_path / "m.keras")
    resumed = fit(keras.models.load_model(tmp_path / "m.keras", safe_mode=True), 2)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jitted = fit(_model(), 3, jit=True)
    for a, b in zip(straight.get_weights(), jitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(straight.get_weights()[0], _model().get_weights()[0])


def test_registered_by_name():
    assert OPTIMIZERS.get("soap") is SOAP
    optimizer = build_optimizer("soap", {"precondition_every": 5}, 0.002)
    assert isinstance(optimizer, SOAP) and optimizer.precondition_every == 5


def test_docstring_example_runs():
    import doctest

    import workbench.optimizers.soap as module

    result = doctest.testmod(module, raise_on_error=True)
    assert result.attempted > 0


def test_soap_trains_with_ema_accumulation_and_jit_compile():
    """The options Keras' optimizer base gives every optimizer, through a compiled `fit` (on JAX,
    the stateless apply path: the bases are assigned outside the refresh's `cond`)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 3))).astype("float32")
    losses = {}
    for name, options in (("ema", dict(use_ema=True, ema_momentum=0.9)),
                          ("accumulation", dict(gradient_accumulation_steps=2))):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
        model.compile(optimizer=SOAP(learning_rate=0.05, precondition_every=2, **options),
                      loss="mse", jit_compile=True)
        history = model.fit(x, y, batch_size=8, epochs=6, verbose=0, shuffle=False)
        losses[name] = history.history["loss"]
        steps = 6 * 64 // 8 // options.get("gradient_accumulation_steps", 1)
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == steps
    for name, curve in losses.items():
        assert curve[-1] < 0.5 * curve[0], (name, curve)


def _decompositions_by_place(optimizer, gradients, variables):
    """{op: set of bools}: whether each eigh/QR op sits inside a conditional's branch."""
    found = {}
    if keras.backend.backend() == "jax":
        import jax

        def apply(optimizer_values, values, grads):
            return optimizer.stateless_apply(optimizer_values, grads, values)

        def walk(jaxpr, inside):
            for eqn in jaxpr.eqns:
                branch = inside or eqn.primitive.name == "cond"
                if eqn.primitive.name in ("eigh", "qr"):
                    found.setdefault(eqn.primitive.name, set()).add(branch)
                for param in eqn.params.values():
                    for sub in param if isinstance(param, (tuple, list)) else [param]:
                        sub = getattr(sub, "jaxpr", None)
                        if sub is not None:
                            walk(getattr(sub, "jaxpr", sub), branch)

        closed = jax.make_jaxpr(apply)([v.value for v in optimizer.variables],
                                       [v.value for v in variables], gradients)
        walk(closed.jaxpr, False)
    else:
        import tensorflow as tf

        graph = tf.function(lambda: optimizer.apply(gradients, variables)
                            ).get_concrete_function().graph
        names = {"SelfAdjointEigV2": "eigh", "Qr": "qr"}
        for op in graph.get_operations():
            if op.type in names:
                found.setdefault(names[op.type], set()).add(False)
        for function in graph.as_graph_def().library.function:  # the cond branches
            for node in function.node_def:
                if node.op in names:
                    found.setdefault(names[node.op], set()).add(True)
    return found


@pytest.mark.skipif(keras.backend.backend() not in ("tensorflow", "jax"),
                    reason="inspects a traced TensorFlow graph or JAX jaxpr")
def test_decompositions_run_only_inside_the_refresh_branches():
    """The eigh (first step) and the QR (every `precondition_every` steps) are in conditional
    branches, so the steps in between do not compute them (as a select would)."""
    optimizer = SOAP(precondition_every=3)
    variables = [keras.Variable(np.ones((4, 3), "float32")), keras.Variable(np.ones(3, "float32"))]
    optimizer.build(variables)
    gradients = [keras.ops.ones((4, 3)), keras.ops.ones((3,))]
    assert _decompositions_by_place(optimizer, gradients, variables) == {
        "eigh": {True}, "qr": {True}}
