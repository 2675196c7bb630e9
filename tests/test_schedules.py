"""Schedules against closed forms, compiled as the optimizer compiles them, on any backend.

Runs under whichever `KERAS_BACKEND` is set; `tests/test_backends.py` runs it for JAX and
PyTorch in subprocesses.
"""

import keras
import numpy as np
import pytest

from workbench.schedules import CyclicalLearningRate
from workbench.schedules import InverseTimePowerDecay
from workbench.schedules import OneCycle
from workbench.schedules import ScaledSchedule
from workbench.schedules import StepDecay
from workbench.schedules import Warmup
from workbench.schedules import WarmupStableDecay

STEPS = np.array([0, 1, 7, 49, 50, 51, 99, 100, 101, 150, 299, 300, 301, 999])


def _np_cyclical(t, low, high, step_size, mode, gamma):
    cycle = np.floor(1 + t / (2 * step_size))
    x = np.abs(t / step_size - 2 * cycle + 1)
    scale = {
        "triangular": np.ones_like(t),
        "triangular2": 1 / 2.0 ** (cycle - 1),
        "exp_range": gamma**t,
    }[mode]
    return low + (high - low) * np.maximum(0, 1 - x) * scale


def _np_one_cycle(t, peak, total, pct, div, final_div, cosine):
    def ramp(a, b, p):
        w = 0.5 * (1 - np.cos(np.pi * p)) if cosine else p
        return a + (b - a) * w

    warm = pct * total
    return np.where(
        t < warm,
        ramp(peak / div, peak, t / warm),
        ramp(peak, peak / final_div, np.clip((t - warm) / (total - warm), 0, 1)),
    )


def _np_wsd(t, peak, total, warmup, frac, final, shape, initial):
    decay = round(frac * total)
    start = total - decay
    p = np.clip((t - start) / decay, 0, 1)
    w = 0.5 * (1 - np.cos(np.pi * p)) if shape == "cosine" else p
    out = np.where(t < start, peak, peak + (final - peak) * w)
    return np.where(t < warmup, initial + (peak - initial) * t / warmup, out)


CASES = [
    (
        InverseTimePowerDecay(0.1, decay_rate=0.05, power=0.75),
        lambda t: 0.1 / (1 + 0.05 * t) ** 0.75,
    ),
    (StepDecay(0.2, step_size=50, factor=0.3), lambda t: 0.2 * 0.3 ** (t // 50)),
    (
        Warmup(0.01, warmup_steps=100, initial_learning_rate=0.001),
        lambda t: np.where(t < 100, 0.001 + 0.009 * t / 100, 0.01),
    ),
    (
        Warmup(StepDecay(0.1, 30, 0.5), warmup_steps=50),
        lambda t: np.where(
            t < 50, 0.1 * t / 50, 0.1 * 0.5 ** (np.maximum(t - 50, 0) // 30)
        ),
    ),
    (
        WarmupStableDecay(1e-3, 1000, warmup_steps=50, decay_fraction=0.7),
        lambda t: _np_wsd(t, 1e-3, 1000, 50, 0.7, 0.0, "linear", 0.0),
    ),
    (
        WarmupStableDecay(
            1e-3, 400, 100, 0.25, final_learning_rate=1e-5,
            decay_shape="cosine", initial_learning_rate=1e-4,
        ),
        lambda t: _np_wsd(t, 1e-3, 400, 100, 0.25, 1e-5, "cosine", 1e-4),
    ),
    (
        OneCycle(0.5, total_steps=500, pct_start=0.2),
        lambda t: _np_one_cycle(t, 0.5, 500, 0.2, 25.0, 1e4, True),
    ),
    (
        OneCycle(0.5, 300, 0.25, div_factor=10, final_div_factor=100,
                 anneal_strategy="linear"),
        lambda t: _np_one_cycle(t, 0.5, 300, 0.25, 10, 100, False),
    ),
]
CASES += [
    (
        CyclicalLearningRate(1e-3, 1e-2, 40, mode=mode, gamma=0.995),
        lambda t, mode=mode: _np_cyclical(t, 1e-3, 1e-2, 40, mode, 0.995),
    )
    for mode in ("triangular", "triangular2", "exp_range")
]
IDS = [f"{type(s).__name__}-{i}" for i, (s, _) in enumerate(CASES)]


@pytest.mark.parametrize("schedule,closed_form", CASES, ids=IDS)
def test_values_match_closed_form(schedule, closed_form):
    got = np.array([float(schedule(int(t))) for t in STEPS])
    np.testing.assert_allclose(got, closed_form(STEPS.astype(np.float64)),
                               rtol=1e-5, atol=1e-9)


def compiled_values(schedule, steps):
    """The schedule at integer `steps`, compiled the way the backend compiles a train step."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # The optimizer hands schedules its int64 `iterations` variable inside an XLA-compiled
        # train step; the schedule must trace there.
        compiled = tf.function(
            lambda t: tf.map_fn(schedule, t, fn_output_signature=tf.float32), jit_compile=True
        )
        return compiled(tf.constant(steps, dtype=tf.int64)).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.jit(jax.vmap(schedule))(jax.numpy.asarray(steps)))
    # PyTorch runs the train step eagerly: the schedule sees an int64 tensor.
    return np.array([
        float(keras.ops.convert_to_numpy(schedule(keras.ops.convert_to_tensor(t, "int64"))))
        for t in steps
    ])


@pytest.mark.parametrize("schedule,closed_form", CASES, ids=IDS)
def test_values_when_compiled_with_an_integer_step_tensor(schedule, closed_form):
    got = compiled_values(schedule, STEPS)
    np.testing.assert_allclose(got, closed_form(STEPS.astype(np.float64)),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("schedule", [c[0] for c in CASES], ids=IDS)
def test_serialize_round_trip(schedule):
    config = keras.optimizers.schedules.serialize(schedule)
    assert config["registered_name"] == f"workbench>{type(schedule).__name__}"
    restored = keras.optimizers.schedules.deserialize(config)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    for t in (0, 75, 400):
        assert float(restored(t)) == pytest.approx(float(schedule(t)))


def test_warmup_ramps_to_the_inner_schedule_start_and_shifts_it():
    inner = keras.optimizers.schedules.PiecewiseConstantDecay([5], [1.0, 0.5])
    schedule = Warmup(inner, warmup_steps=4)
    got = [float(schedule(t)) for t in range(12)]
    np.testing.assert_allclose(
        got, [0.0, 0.25, 0.5, 0.75] + [1.0] * 6 + [0.5] * 2
    )


def test_warmup_without_warmup_steps_is_the_inner_schedule():
    inner = StepDecay(0.1, 10, 0.5)
    schedule = Warmup(inner, warmup_steps=0)
    for t in (0, 9, 10, 35):
        assert float(schedule(t)) == pytest.approx(float(inner(t)))


def test_wsd_rejects_phases_longer_than_the_run():
    with pytest.raises(ValueError, match="must fit in total_steps"):
        WarmupStableDecay(1e-3, total_steps=100, warmup_steps=60,
                          decay_fraction=0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OneCycle(0.1, 100, anneal_strategy="cosine"),
        lambda: CyclicalLearningRate(0.1, 1.0, 10, mode="triangle"),
        lambda: WarmupStableDecay(0.1, 100, decay_shape="exp"),
    ],
)
def test_unknown_choice_names_the_choices(make):
    with pytest.raises(ValueError, match="must be one of"):
        make()


def test_scaled_schedule_scales_and_serializes_its_current_scale():
    schedule = ScaledSchedule(StepDecay(0.1, 10, 0.5))
    schedule.set_scale(0.25)
    assert float(schedule(10)) == pytest.approx(0.25 * 0.05)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert restored.scale == pytest.approx(0.25)
    assert float(restored(10)) == pytest.approx(0.25 * 0.05)


def test_nested_schedules_survive_model_save_and_load(tmp_path):
    schedule = Warmup(
        OneCycle(0.05, total_steps=40, anneal_strategy="linear"),
        warmup_steps=3,
        initial_learning_rate=1e-4,
    )
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.models.load_model(path)
    loaded_schedule = loaded.optimizer._learning_rate
    assert isinstance(loaded_schedule, Warmup)
    assert isinstance(loaded_schedule.schedule, OneCycle)
    assert loaded_schedule.get_config() == schedule.get_config()
    assert int(loaded.optimizer.iterations) == 8
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        float(model.optimizer.learning_rate)
    )
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        float(schedule(8))
    )
