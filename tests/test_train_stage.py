"""Train-stage features selected from a recipe: lr_find, batch-size growth, schedules on plateau."""

import json
import math

import pytest


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_lr_find_stage_plots_and_hands_its_suggestion_to_train(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("digits", "--stages", "lr_find,train", "--epochs", "1", "--quiet",
                 "--set", "lr_find.num_steps=60", "--out", out)
    assert result.returncode == 0, result.stderr
    report = _report(out)
    found = report["stages"]["lr_find"]
    assert found["batches"] >= 10
    assert found["swept_from"] <= found["suggestion"] <= found["swept_to"]
    assert report["config"]["learning_rate"] == pytest.approx(found["suggestion"])
    assert (out / "lr_find.png").stat().st_size > 10_000


@pytest.mark.slow
def test_batch_growth_trains_in_phases_with_fewer_steps(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("digits", "--stages", "train", "--epochs", "4", "--quiet",
                 "--set", "batch_growth.epochs=2", "--set", "batch_growth.factor=4",
                 "--set", "early_stopping.enabled=false", "--out", out)
    assert result.returncode == 0, result.stderr
    train = _report(out)["stages"]["train"]
    assert train["batch_sizes"] == [16, 64] and train["epochs_run"] == 4
    # 1257 training images: 79 steps per epoch at 16, 20 at 64.
    assert train["steps"] == 2 * 79 + 2 * 20


@pytest.mark.slow
def test_plateau_reduction_with_a_schedule_scales_the_schedule(cli, tmp_path):
    """Keras' ReduceLROnPlateau cannot change a schedule; the workbench's scales it. With a
    `min_delta` no epoch can meet, every epoch ends with a reduction by `factor`."""
    common = ["digits", "--stages", "train", "--epochs", "4", "--quiet",
              "--set", "schedule=exponential_decay", "--set", "schedule_config.decay_rate=0.5",
              "--set", "learning_rate=0.002", "--set", "early_stopping.enabled=false"]
    plain = cli(*common, "--set", "plateau.enabled=false", "--out", tmp_path / "plain")
    reduced = cli(*common, "--set", "plateau.patience=0", "--set", "plateau.factor=0.1",
                  "--set", "plateau.min_delta=1000", "--set", "plateau.min_lr=0",
                  "--out", tmp_path / "reduced")
    assert plain.returncode == 0 and reduced.returncode == 0, reduced.stderr
    base = _report(tmp_path / "plain")["history"]["learning_rate"]
    scaled = _report(tmp_path / "reduced")["history"]["learning_rate"]
    ratios = [s / b for s, b in zip(scaled, base)]
    # Epoch 1 sets the first best; epoch 2 misses it and reduces at its end (the rate logged
    # for an epoch is the one it trained with), and so on: 1, 1, 0.1, 0.01 times the schedule.
    assert ratios == pytest.approx([1.0, 1.0, 0.1, 0.01], rel=1e-5), ratios
    # The loss of the reduced run shows the smaller steps were really taken.
    assert _report(tmp_path / "reduced")["history"]["loss"][-1] > \
        _report(tmp_path / "plain")["history"]["loss"][-1]


def test_a_diverging_run_stops_with_a_reason_and_keeps_good_weights(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("digits", "--stages", "train,evaluate", "--epochs", "4", "--set", "optimizer=sgd",
                 "--set", "learning_rate=1e8", "--set", "early_stopping.enabled=false",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    assert "stopped early: training loss became" in result.stdout
    report = _report(out)
    assert report["stages"]["train"]["epochs_run"] < 4
    assert "restored" in report["stages"]["train"]["stop_reason"]
    # The kept weights are finite: evaluation gives a real loss, not NaN.
    assert math.isfinite(report["stages"]["evaluate"]["test_loss"])


def _event_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return set(events.Tags()["tensors"])


@pytest.mark.parametrize("update_freq", ["epoch", 1])
def test_epoch_tensorboard_writes_batch_summaries_only_when_asked(tmp_path, update_freq):
    """The train stage's TensorBoard skips Keras' per-batch summary calls at update_freq="epoch"
    (they have no writer there), and keeps them when per-batch summaries are asked for."""
    import keras
    import numpy as np

    from workbench.training import EpochTensorBoard

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    import tensorflow as tf

    batch_calls = []

    class CountingSummary:
        """tf.summary, counting the per-batch scalar calls (Keras' TensorBoard makes them
        whether or not a writer is active)."""

        def __getattr__(self, name):
            return getattr(tf.summary, name)

        def scalar(self, name, *args, **kwargs):
            if name.startswith("batch_"):
                batch_calls.append(name)
            return tf.summary.scalar(name, *args, **kwargs)

    board = EpochTensorBoard(log_dir=str(tmp_path), write_graph=False, profile_batch=0,
                             update_freq=update_freq)
    board._summary_module = CountingSummary()
    model.fit(np.ones((32, 3)), np.ones((32, 1)), batch_size=8, epochs=2, verbose=0,
              callbacks=[board])
    tags = _event_tags(tmp_path / "train")
    assert "epoch_loss" in tags
    if update_freq == "epoch":
        assert batch_calls == [] and "batch_loss" not in tags
    else:
        assert len(batch_calls) == 8 and "batch_loss" in tags  # 2 epochs x 4 batches
