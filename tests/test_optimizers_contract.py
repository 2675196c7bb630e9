"""The Keras optimizer contract, for every workbench optimizer.

Each optimizer (the wrappers wrap Adam) must: round-trip its config, save
and load inside a `.keras` model and continue training exactly where it
stopped, honour `clipnorm`, `use_ema`, `gradient_accumulation_steps`,
`jit_compile` and `LossScaleOptimizer`, and train under
`tf.distribute.MirroredStrategy` to the same weights as on one device.

Backend-parametric: the file runs under whichever `KERAS_BACKEND` is set
(`tests/test_backends.py` runs it for JAX and PyTorch in subprocesses); the
MirroredStrategy check is TensorFlow's alone.

Most checks compare two runs that must agree (e.g. accumulation of two
batches of 8 against one batch of 16), so they fail on a wrong result, not
only on a crash. The MirroredStrategy check needs two logical CPU devices,
which must be configured before TensorFlow initialises, so it runs this
file as a script in a subprocess (`python tests/test_optimizers_contract.py
--mirrored`).
"""

import functools
import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from workbench.optimizers import LARS
from workbench.optimizers import AdaBelief
from workbench.optimizers import GradientNoise
from workbench.optimizers import Lookahead
from workbench.optimizers import Prodigy
from workbench.optimizers import Proximal
from workbench.optimizers import RAdam
from workbench.optimizers import SOAP
from workbench.optimizers import Shampoo

# `base` holds `keras.optimizers.Optimizer` arguments (clipnorm, use_ema,
# ...); the wrappers hand them to the Adam they wrap.
FACTORIES = {
    "AdaBelief": lambda **base: AdaBelief(learning_rate=0.01, **base),
    "RAdam": lambda **base: RAdam(learning_rate=0.01, **base),
    "LARS": lambda **base: LARS(learning_rate=0.5, **base),
    # d0 = 1e-3 instead of 1e-6 so that three steps move the weights enough
    # for the comparisons below to mean something.
    "Prodigy": lambda **base: Prodigy(d0=1e-3, **base),
    # Preconditioning from step 1 on rank-deficient statistics: a larger
    # damping keeps float32 rounding (which differs between, say, XLA and
    # graph mode) from being amplified by the inverse root's null space.
    "Shampoo": lambda **base: Shampoo(
        learning_rate=0.01,
        matrix_epsilon=1e-3,
        precondition_every=2,
        start_preconditioning_step=1,
        **base,
    ),
    # Rotations only where the statistics are full rank from the first step (the conv kernel's
    # 3 rows, the dense kernel's 2 columns): a rank-deficient statistic's eigenbasis is defined
    # only up to a rotation of its null space, where Adam's normalisation turns rounding noise
    # into unit-size steps, so two runs that differ by rounding (XLA against graph mode,
    # accumulated against whole batches) could not be compared. Bases refresh every other step.
    "SOAP": lambda **base: SOAP(
        learning_rate=0.01, precondition_every=2, max_preconditioner_dim=3, **base
    ),
    "Lookahead": lambda **base: Lookahead(
        keras.optimizers.Adam(0.01, **base), sync_period=3
    ),
    "GradientNoise": lambda **base: GradientNoise(
        keras.optimizers.Adam(0.01, **base), seed=11
    ),
    "Proximal": lambda **base: Proximal(keras.optimizers.Adam(0.01, **base), mu=0.5),
}
NAMES = sorted(FACTORIES)
DETERMINISTIC = [name for name in NAMES if name != "GradientNoise"]

# Every constructor argument set away from its default, for the config test.
NON_DEFAULTS = {
    "AdaBelief": lambda: AdaBelief(0.02, 0.8, 0.99, 1e-12, True, name="ab"),
    "RAdam": lambda: RAdam(0.02, 0.8, 0.99, 1e-6, 6.0, name="ra"),
    "LARS": lambda: LARS(0.3, 0.8, 0.002, 1e-4, 1e-9, True, False, name="la"),
    "Prodigy": lambda: Prodigy(
        0.5, 0.8, 0.99, 0.9, 1e-7, 0.1, False, True, True, 1e-5, 2.0, 1.02,
        name="pr",
    ),
    "Shampoo": lambda: Shampoo(
        0.02, 0.8, 1.0, 1e-6, 1e-5, 7, 3, 64, 16, 2, name="sh", clipnorm=2.0
    ),
    "SOAP": lambda: SOAP(0.02, 0.8, 0.9, 0.5, 1e-6, 3, 64, name="so", clipnorm=2.0),
    "Lookahead": lambda: Lookahead(
        keras.optimizers.SGD(0.3, momentum=0.5), 7, 0.25, name="lk"
    ),
    "GradientNoise": lambda: GradientNoise(
        keras.optimizers.Adam(0.02, use_ema=True), 0.3, 0.6, 5, name="gn"
    ),
    "Proximal": lambda: Proximal(keras.optimizers.SGD(0.3, momentum=0.5), 0.2, name="px"),
}

BATCH = 16
SAMPLES = 48
BACKEND = keras.backend.backend()


@functools.cache
def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 4, 4, 1)).astype("float32")
    y = (x.reshape(SAMPLES, -1) @ rng.normal(size=(16, 2))).astype("float32")
    return x, y


def build_model():
    """A tiny model with a conv kernel (rank 4), a matrix and biases."""
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(3, 3, padding="same", activation="tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.set_weights(initial_weights())
    return model


@functools.cache
def initial_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(3, 3, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    return tuple(model.get_weights())


def train(optimizer, epochs=1, batch_size=BATCH, jit_compile=False, model=None):
    model = model or build_model()
    if not model.compiled:
        model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    x, y = dataset()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model


@functools.cache
def baseline_weights(name):
    """Weights after one epoch (3 steps of 16) with no optional features."""
    return tuple(train(FACTORIES[name]()).get_weights())


def assert_weights_close(actual, expected, rtol=1e-5, atol=1e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def assert_trained(model):
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert any(
        not np.allclose(w, w0) for w, w0 in zip(weights, initial_weights())
    )


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_every_constructor_argument(name):
    optimizer = NON_DEFAULTS[name]()
    config = optimizer.get_config()
    arguments = [
        p
        for p in inspect.signature(type(optimizer).__init__).parameters
        if p not in ("self", "kwargs")
    ]
    assert set(arguments) <= set(config), set(arguments) - set(config)

    clone = type(optimizer).from_config(config)
    assert clone.get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(revived) is type(optimizer)
    assert revived.get_config() == config


@pytest.mark.parametrize("name", NAMES)
def test_save_load_and_continue_training(name, tmp_path):
    model = train(FACTORIES[name]())
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    saved_state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    loaded_state = [keras.ops.convert_to_numpy(v) for v in loaded.optimizer.variables]
    assert len(saved_state) == len(loaded_state)
    for a, b in zip(saved_state, loaded_state):
        np.testing.assert_array_equal(a, b)

    # Continuing from the file must be indistinguishable from never stopping.
    train(None, model=model)
    train(None, model=loaded)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 2 * SAMPLES // BATCH
    assert_weights_close(loaded.get_weights(), model.get_weights())


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_state_holds_none_of_the_model_weights(name):
    # Restoring `optimizer.variables` (a federated client's kept state, a checkpoint) must
    # never write old values into the model's weights.
    model = train(FACTORIES[name]())
    weights = {id(v) for v in model.variables}
    assert not [v.path for v in model.optimizer.variables if id(v) in weights]
    state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    trained = [np.array(w) for w in model.get_weights()]
    model.set_weights(initial_weights())
    for variable, value in zip(model.optimizer.variables, state):
        variable.assign(value)
    assert_weights_close(model.get_weights(), initial_weights())
    assert any(not np.allclose(a, b) for a, b in zip(trained, initial_weights()))


@pytest.mark.parametrize("name", NAMES)
def test_clipnorm_clips_each_gradient_before_the_update(name):
    clip = 0.05
    rng = np.random.default_rng(1)
    values = [rng.normal(size=(6, 4)), rng.normal(size=(4,))]
    grads = [10 * rng.normal(size=(6, 4)), 10 * rng.normal(size=(4,))]
    clipped = [g * clip / max(np.linalg.norm(g), clip) for g in grads]

    if name == "GradientNoise":
        # The noise goes in before the inner optimizer clips; without noise
        # the two runs below must agree exactly.
        def make(**base):
            return GradientNoise(keras.optimizers.Adam(0.01, **base), eta=0.0)

    elif name == "Proximal":
        # The proximal term, too, joins the gradient before the inner optimizer clips it.
        def make(**base):
            return Proximal(keras.optimizers.Adam(0.01, **base), mu=0.0)

    else:
        make = FACTORIES[name]

    results = []
    for optimizer, gradients in (
        (make(clipnorm=clip), grads),
        (make(), clipped),
    ):
        variables = [keras.Variable(v.astype("float32")) for v in values]
        for _ in range(3):
            # Tensors, not arrays: PyTorch's fused Adam takes only tensors.
            optimizer.apply(
                [keras.ops.convert_to_tensor(g, "float32") for g in gradients], variables
            )
        results.append([keras.ops.convert_to_numpy(v) for v in variables])
    assert_weights_close(results[0], results[1])


@pytest.mark.parametrize("name", NAMES)
def test_use_ema_leaves_the_average_in_the_model(name):
    optimizer = FACTORIES[name](use_ema=True, ema_momentum=0.5)
    model = train(optimizer, epochs=2)
    # The EMA lives in the optimizer that does the update (the inner one for
    # wrappers); `fit` ends by writing it into the model.
    updater = getattr(optimizer, "inner_optimizer", optimizer)
    averages = [keras.ops.convert_to_numpy(v) for v in updater._model_variables_moving_average]
    assert_weights_close(model.get_weights(), averages, rtol=0, atol=0)
    assert_trained(model)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_accumulation_matches_a_batch_twice_as_large(name):
    optimizer = FACTORIES[name](gradient_accumulation_steps=2)
    model = train(optimizer, batch_size=BATCH // 2)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == SAMPLES // BATCH
    if name in DETERMINISTIC:
        # The mean of two half-batch gradients is the full-batch gradient.
        assert_weights_close(model.get_weights(), baseline_weights(name))
    else:
        assert_trained(model)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_jit_compile_fit_matches_graph_fit(name):
    model = train(FACTORIES[name](), jit_compile=True)
    assert_weights_close(
        model.get_weights(), baseline_weights(name), rtol=1e-4, atol=1e-5
    )


def test_gradient_noise_under_jit_compile():
    # XLA's Philox does not reproduce the graph kernel's draws, so check the
    # plumbing without noise, and that the noise is there with it.
    quiet = train(
        GradientNoise(keras.optimizers.Adam(0.01), eta=0.0), jit_compile=True
    )
    adam = train(keras.optimizers.Adam(0.01))
    assert_weights_close(quiet.get_weights(), adam.get_weights(), rtol=1e-4, atol=1e-5)
    noisy = train(FACTORIES["GradientNoise"](), jit_compile=True)
    assert_trained(noisy)
    assert np.abs(noisy.get_weights()[0] - quiet.get_weights()[0]).max() > 1e-4


def test_state_copied_from_the_weights_is_taken_once():
    # Keras builds the optimizer while tracing the train step; the copies
    # must hold the weights before the first update, not be refreshed on
    # every batch.
    prodigy = FACTORIES["Prodigy"]()
    train(prodigy, epochs=2)
    for x0, w0 in zip(prodigy._initial_values, initial_weights()):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x0), w0)
    lookahead = Lookahead(keras.optimizers.Adam(0.01), sync_period=100)
    train(lookahead, epochs=2)
    for slow, w0 in zip(lookahead._slow_weights, initial_weights()):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(slow), w0)


@pytest.mark.parametrize("name", NAMES)
def test_loss_scale_optimizer_wrapping_matches_unscaled(name):
    optimizer = keras.optimizers.LossScaleOptimizer(FACTORIES[name]())
    model = train(optimizer)
    # Scaling by a power of two and back is exact in floating point.
    assert_weights_close(model.get_weights(), baseline_weights(name))


def test_wrappers_reject_arguments_that_belong_to_the_inner_optimizer():
    with pytest.raises(ValueError, match="set it on the optimizer it wraps"):
        Lookahead(keras.optimizers.Adam(), clipnorm=1.0)
    with pytest.raises(ValueError, match="wraps a Keras optimizer"):
        GradientNoise("not-an-optimizer")
    assert isinstance(Lookahead("adam").inner_optimizer, keras.optimizers.Adam)


def test_wrappers_compose_and_round_trip(tmp_path):
    def stack(eta):
        return Lookahead(
            GradientNoise(keras.optimizers.SGD(0.1), eta=eta, seed=3), sync_period=2
        )

    quiet, plain = train(stack(0.0)), train(Lookahead(keras.optimizers.SGD(0.1), sync_period=2))
    assert_weights_close(quiet.get_weights(), plain.get_weights())

    model = train(stack(0.01))
    model.save(tmp_path / "stacked.keras")
    loaded = keras.models.load_model(tmp_path / "stacked.keras")
    inner = loaded.optimizer.inner_optimizer
    assert isinstance(inner, GradientNoise)
    assert isinstance(inner.inner_optimizer, keras.optimizers.SGD)
    train(None, model=model)
    train(None, model=loaded)
    assert_weights_close(loaded.get_weights(), model.get_weights())


def test_wrapper_learning_rate_is_the_inner_one():
    inner = keras.optimizers.Adam(0.01)
    wrapped = Lookahead(inner)
    wrapped.learning_rate = 0.005
    assert float(np.asarray(inner.learning_rate)) == pytest.approx(0.005)
    assert float(np.asarray(wrapped.learning_rate)) == pytest.approx(0.005)


MIRRORED_TEST = "test_trains_the_same_under_mirrored_strategy"


@pytest.fixture(scope="module", autouse=True)
def mirrored_run(request):
    """Starts the MirroredStrategy subprocess as soon as the module starts.

    Tracing train steps is mostly single-threaded Python, so the subprocess
    runs alongside the other tests instead of after them.
    """
    selected = BACKEND == "tensorflow" and any(
        item.name == MIRRORED_TEST and item.module is request.module
        for item in request.session.items
    )
    if not selected:
        yield None
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        [sys.executable, __file__, "--mirrored"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_trains_the_same_under_mirrored_strategy(mirrored_run):
    """Two logical CPUs, global batch split in two, vs one device."""
    stdout, stderr = mirrored_run.communicate(timeout=300)
    assert mirrored_run.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(report) == NAMES
    for name, result in report.items():
        assert result["replicas"] == 2, name
        assert result["max_abs_difference"] < 1e-5, (name, result)
        assert result["moved"] > 1e-3, (name, result)


@pytest.mark.parametrize(
    "module",
    ["adabelief", "gradient_noise", "lars", "lookahead", "prodigy", "radam", "shampoo"],
)
def test_docstring_example_runs(module):
    import doctest
    import importlib

    module = importlib.import_module(f"workbench.optimizers.{module}")
    result = doctest.testmod(module, raise_on_error=True)
    assert result.attempted > 0


def mirrored_main():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report = {}
    for name in NAMES:
        single = train(FACTORIES[name]())
        with strategy.scope():
            model = build_model()
            model.compile(optimizer=FACTORIES[name](), loss="mse")
        train(None, model=model)
        difference = max(
            float(np.abs(a - b).max())
            for a, b in zip(model.get_weights(), single.get_weights())
        )
        moved = max(
            float(np.abs(a - b).max())
            for a, b in zip(model.get_weights(), initial_weights())
        )
        report[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "max_abs_difference": difference,
            "moved": moved,
        }
    print(json.dumps(report))


if __name__ == "__main__" and "--mirrored" in sys.argv:
    mirrored_main()
