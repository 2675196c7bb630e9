import math
import time

import keras
import matplotlib.image
import numpy as np
import pytest
from keras import ops

from workbench.callbacks import BatchSizeSchedule
from workbench.callbacks import EarlyStopping
from workbench.callbacks import LRFinder
from workbench.callbacks import ReduceLROnPlateau
from workbench.schedules import ScaledSchedule


def _regression(seed=0, n=128):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.1).astype("float32")
    return x, y


def _linear_model(optimizer, seed=0, jit_compile="auto"):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer, loss="mse", jit_compile=jit_compile)
    return model


class _RecordWeights(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.at_begin = self.model.get_weights()
        self.at_epoch_end = []

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append(self.model.get_weights())


class _AtEpochBegin(keras.callbacks.Callback):
    """Runs `action(model)` at the start of one epoch."""

    def __init__(self, epoch, action):
        super().__init__()
        self.epoch, self.action = epoch, action

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.action(self.model)


class _ReadTrainEndLogs(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.logs = dict(logs or {})


def _poison_kernel(model):
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


def _assert_weights_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


# -- ReduceLROnPlateau ----------------------------------------------------


@keras.saving.register_keras_serializable(package="workbench_tests")
def prediction_as_loss(y_true, y_pred):
    return ops.mean(y_pred)


def _unit_gradient_model(learning_rate):
    # The loss is the prediction itself on inputs of 1, so d loss / d w = 1
    # at every step and SGD moves w by exactly the learning rate it applies.
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros"),
    ])
    model.compile(
        keras.optimizers.SGD(learning_rate),
        loss=prediction_as_loss,
        jit_compile=True,
    )
    return model


def test_keras_callback_cannot_reduce_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)
    model = _unit_gradient_model(schedule)
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", mode="max", patience=1
    )
    with pytest.raises(TypeError, match="not settable"):
        model.fit(np.ones((4, 1)), np.zeros((4, 1)), batch_size=1, epochs=3,
                  callbacks=[reduce_lr], verbose=0)


def test_reduces_what_the_optimizer_applies_under_a_schedule(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=4, decay_rate=0.5
    )
    model = _unit_gradient_model(schedule)
    x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
    # A first fit traces the train step with the bare schedule; the
    # callback must not be defeated by that cached graph.
    model.fit(x, y, batch_size=1, epochs=1, verbose=0)
    offset = 4

    # mode="max" on a falling loss: no epoch ever improves, so with
    # patience=1 every epoch from the second on asks for a reduction.
    reduce_lr = ReduceLROnPlateau(
        monitor="loss", mode="max", factor=0.2, patience=1, min_lr=1e-3
    )
    weights = _RecordWeights()
    history = model.fit(x, y, batch_size=1, epochs=5, verbose=0,
                        callbacks=[reduce_lr, weights])

    def scheduled(t):
        return 0.1 * 0.5 ** (t / 4)

    # Scale in force during each epoch. End of epoch 2: 0.025 -> 0.005.
    # End of epoch 3: 0.2 * 0.1 * 0.5**4 = 0.00125 -> clamped to min_lr
    # 0.001, scale 0.16. After that the rate is at most min_lr: no change.
    scales = [1.0, 1.0, 0.2, 0.16, 0.16]
    kernel = [float(w[0].squeeze())
              for w in [weights.at_begin] + weights.at_epoch_end]
    for epoch, scale in enumerate(scales):
        steps = offset + 4 * epoch + np.arange(4)
        applied = kernel[epoch] - kernel[epoch + 1]
        expected = scale * scheduled(steps).sum()
        assert applied == pytest.approx(expected, rel=1e-4, abs=1e-7), epoch

    # Logged rate: the effective one at the end of each epoch.
    logged = history.history["learning_rate"]
    ends = offset + 4 * np.arange(1, 6)
    np.testing.assert_allclose(logged, np.array(scales) * scheduled(ends),
                               rtol=1e-5)

    path = tmp_path / "reduced.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer._learning_rate, ScaledSchedule)
    assert loaded.optimizer._learning_rate.scale == pytest.approx(0.16)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        float(model.optimizer.learning_rate)
    )
    # A further fit reuses the wrapper rather than stacking another.
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[reduce_lr])
    assert isinstance(model.optimizer._learning_rate.schedule,
                      keras.optimizers.schedules.ExponentialDecay)


def test_matches_keras_with_a_float_learning_rate():
    x, y = _regression()
    arguments = dict(monitor="loss", mode="max", factor=0.5, patience=1,
                     cooldown=1, min_lr=0.004, min_delta=0.0)
    runs = []
    for callback in (keras.callbacks.ReduceLROnPlateau(**arguments),
                     ReduceLROnPlateau(**arguments)):
        model = _linear_model(keras.optimizers.SGD(0.05))
        history = model.fit(x, y, batch_size=32, epochs=8, shuffle=False,
                            verbose=0, callbacks=[callback])
        runs.append((history.history["learning_rate"], model.get_weights()))
    (keras_lrs, keras_weights), (our_lrs, our_weights) = runs
    assert keras_lrs[-1] == pytest.approx(0.004)  # min_lr was reached
    assert our_lrs == pytest.approx(keras_lrs)
    for ours, theirs in zip(our_weights, keras_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


# -- EarlyStopping ----------------------------------------------------------


def _fit_with(callbacks, epochs=6, learning_rate=0.05):
    x, y = _regression()
    model = _linear_model(keras.optimizers.SGD(learning_rate))
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False,
                        verbose=0, callbacks=callbacks)
    return model, history


def test_nan_loss_stops_at_once_and_restores_the_best_weights():
    stop = EarlyStopping(monitor="loss", patience=100)
    weights, report = _RecordWeights(), _ReadTrainEndLogs()
    model, history = _fit_with(
        [_AtEpochBegin(2, _poison_kernel), weights, stop, report]
    )
    assert len(history.history["loss"]) == 3
    assert math.isnan(history.history["loss"][-1])
    # The loss fell in both clean epochs, so the second is the best.
    assert history.history["loss"][1] < history.history["loss"][0]
    _assert_weights_equal(model.get_weights(), weights.at_epoch_end[1])
    assert stop.stop_reason == (
        "training loss became nan at epoch 3, batch 1; "
        "restored the weights of epoch 2."
    )
    assert report.logs["stop_reason"] == stop.stop_reason


def test_nan_in_the_first_epoch_restores_the_starting_weights():
    stop = EarlyStopping(monitor="loss", patience=100)
    weights = _RecordWeights()
    model, _ = _fit_with([weights, _AtEpochBegin(0, _poison_kernel), stop])
    _assert_weights_equal(model.get_weights(), weights.at_begin)
    assert stop.stop_reason.endswith("restored the weights from before training.")


def _blow_up(model):
    kernel = model.layers[0].kernel
    kernel.assign(kernel * 50.0)


def test_divergence_stops_and_keeps_the_last_good_weights():
    # Control: without a divergence factor the explosion is trained through.
    unguarded = EarlyStopping(monitor="loss", patience=100)
    _, history = _fit_with([_AtEpochBegin(3, _blow_up), unguarded])
    assert len(history.history["loss"]) == 6
    assert unguarded.stop_reason is None

    stop = EarlyStopping(monitor="loss", patience=100, divergence_factor=10,
                         restore_best_weights=False)
    weights = _RecordWeights()
    model, history = _fit_with([_AtEpochBegin(3, _blow_up), weights, stop])
    assert len(history.history["loss"]) == 4
    assert stop.stop_reason.startswith("training loss ")
    assert "exceeded 10 x its best epoch value" in stop.stop_reason
    assert "at epoch 4, batch 1" in stop.stop_reason
    _assert_weights_equal(model.get_weights(), weights.at_epoch_end[2])
    assert stop.stop_reason.endswith("restored the weights of epoch 3.")


class _BatchClock(keras.callbacks.Callback):
    """Sleeps after every batch and records the time since fit() began."""

    def __init__(self, sleep):
        super().__init__()
        self.sleep = sleep

    def on_train_begin(self, logs=None):
        self.start, self.elapsed = time.monotonic(), []

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.sleep)
        self.elapsed.append(time.monotonic() - self.start)


def test_wall_clock_budget_stops_training():
    stop = EarlyStopping(monitor="loss", patience=100, max_seconds=1.0)
    clock = _BatchClock(sleep=0.2)
    _, history = _fit_with([clock, stop], epochs=20)
    # 80 batches would take over 16 s. The budget is checked after every
    # batch and epoch, so training ends at the first check past 1 s: at
    # most one batch (0.2 s) after the last one that ended within it.
    assert len(clock.elapsed) < 80
    assert clock.elapsed[-1] > 1.0 - 0.25
    assert len(clock.elapsed) == 1 or clock.elapsed[-2] <= 1.0 + 0.05
    assert stop.stop_reason.startswith("wall-clock budget of 1 s used up")
    assert len(history.history["loss"]) <= 2


def test_patience_stop_gives_keras_reason_and_best_weights():
    stop = EarlyStopping(monitor="loss", patience=2)
    weights = _RecordWeights()
    # After epoch 2 the learning rate drops to zero: no further improvement.
    freeze = _AtEpochBegin(2, lambda m: m.optimizer.learning_rate.assign(0.0))
    model, history = _fit_with([freeze, weights, stop], epochs=10)
    # Epoch 3 still improves on epoch 2's running mean (the weights moved
    # during epoch 2, not during 3); epochs 4 and 5 do not.
    assert len(history.history["loss"]) == 5
    _assert_weights_equal(model.get_weights(), weights.at_epoch_end[2])
    best = history.history["loss"][2]
    assert stop.stop_reason == (
        f"no improvement in loss for 2 epochs (best {best:.4g} at epoch 3); "
        "restored the weights of epoch 3."
    )


def test_early_stopping_rejects_bad_limits():
    with pytest.raises(ValueError, match="divergence_factor"):
        EarlyStopping(divergence_factor=0.5)
    with pytest.raises(ValueError, match="max_seconds"):
        EarlyStopping(max_seconds=0)


# -- LRFinder ---------------------------------------------------------------


def test_lr_finder_sweeps_suggests_and_restores(tmp_path):
    x, y = _regression(n=256)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.5)
    model = _linear_model(optimizer)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # some optimizer state
    before = model.get_weights()
    optimizer_state = [keras.ops.convert_to_numpy(v).copy() for v in optimizer.variables]

    finder = LRFinder(min_lr=1e-4, max_lr=100.0, num_steps=80)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[finder])

    lrs = np.array(finder.lrs)
    assert lrs[0] == pytest.approx(1e-4)
    ratio = (100.0 / 1e-4) ** (1 / 79)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], ratio, rtol=1e-9)
    # Plain SGD on this quadratic diverges above 2 / (largest Hessian
    # eigenvalue); the sweep must notice the blow-up and stop early.
    design = np.hstack([x, np.ones((len(x), 1), "float32")])
    stable_below = 2 / np.linalg.eigvalsh(2 * design.T @ design / len(x)).max()
    assert len(lrs) < 80 and lrs[-1] > stable_below
    assert len(finder.losses) == len(finder.raw_losses) == len(lrs)
    # The best constant rate for SGD here is stable_below / 2.
    assert 0.05 * stable_below < finder.suggestion < stable_below

    _assert_weights_equal(model.get_weights(), before)
    for variable, value in zip(optimizer.variables, optimizer_state):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)

    path = finder.plot(tmp_path / "lr_finder.png")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100
    assert not list(tmp_path.glob(".lr_finder-*"))  # no temporary left over


def test_lr_finder_steepest_rule_on_a_known_curve():
    # A smooth drop centred at lr = 1e-2 (steepest there in log(lr)),
    # a minimum near 1, then a blow-up.
    finder = LRFinder(min_lr=1e-5, max_lr=10.0, num_steps=121,
                      suggest="steepest")
    lrs = np.logspace(-5, 1, 121)
    log_lr = np.log10(lrs)
    finder.lrs = list(lrs)
    finder.losses = list(1 - np.tanh(2 * (log_lr + 2)) + np.exp(3 * log_lr))
    assert finder._suggest() == pytest.approx(1e-2, rel=0.15)
    finder.suggest = "minimum"
    lowest = lrs[int(np.argmin(finder.losses))]
    assert finder._suggest() == pytest.approx(lowest / 10)


def test_lr_finder_drives_and_restores_a_schedule():
    x, y = _regression(n=256)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    model = _linear_model(keras.optimizers.Adam(schedule))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    finder = LRFinder(min_lr=1e-3, max_lr=1.0, num_steps=12, smoothing=0.0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[finder])
    assert len(finder.lrs) == 12
    assert model.optimizer._learning_rate is schedule
    assert int(model.optimizer.iterations) == 8
    # With smoothing off, each recorded loss is the batch's own loss, not
    # Keras' running mean over the epoch.
    assert finder.losses == finder.raw_losses
    # Training afterwards follows the schedule again, not the sweep.
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(
        float(schedule(16))
    )


def test_lr_finder_warns_when_fit_ends_before_the_sweep():
    finder = LRFinder(min_lr=1e-3, max_lr=1.0, num_steps=50)
    with pytest.warns(UserWarning, match="ran 4 of its 50 batches"):
        _fit_with([finder], epochs=1)
    assert finder.suggestion is not None


# -- BatchSizeSchedule --------------------------------------------------------


def test_batch_size_schedule_values_phases_and_cap():
    schedule = BatchSizeSchedule(factor=2, epochs=[3, 1], max_batch_size=300)
    sizes = [schedule.batch_size_at(e, 100) for e in range(6)]
    assert sizes == [100, 200, 200, 300, 300, 300]
    assert schedule.phases(total_epochs=5, base_batch_size=100) == [
        (0, 1, 100), (1, 3, 200), (3, 5, 300)
    ]


def test_batch_size_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="factor"):
        BatchSizeSchedule(0, [1])
    with pytest.raises(ValueError, match="distinct non-negative"):
        BatchSizeSchedule(2, [1, 1])


# -- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        ReduceLROnPlateau(monitor="val_accuracy", factor=0.3, patience=4,
                          verbose=1, mode="max", min_delta=0.01, cooldown=2,
                          min_lr=1e-5),
        EarlyStopping(monitor="loss", min_delta=0.1, patience=3, mode="min",
                      baseline=2.0, restore_best_weights=False,
                      start_from_epoch=1, divergence_factor=5.0,
                      max_seconds=60),
        LRFinder(min_lr=1e-6, max_lr=1.0, num_steps=40, smoothing=0.9,
                 divergence_threshold=5.0, suggest="minimum", verbose=1),
        BatchSizeSchedule(factor=5, epochs=[60, 120], max_batch_size=4096),
    ],
    ids=lambda obj: type(obj).__name__,
)
def test_config_round_trip(obj):
    config = keras.saving.serialize_keras_object(obj)
    assert config["registered_name"] == f"workbench>{type(obj).__name__}"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(obj)
    assert restored.get_config() == obj.get_config()


def test_config_survives_keras_flipping_min_delta():
    stop = EarlyStopping(monitor="loss", min_delta=0.5, patience=1)
    _fit_with([stop], epochs=2)
    assert stop.get_config()["min_delta"] == 0.5
