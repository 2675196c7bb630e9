"""Epoch-based training with `model.fit` and the project's callbacks: what a task family that
trains by epochs shares (early stopping with the NaN/inf stop, learning rate on plateau,
TensorBoard, the learning-rate log, `BackupAndRestore` for `--resume`, a growing batch size)."""

from __future__ import annotations

import csv
import math

import keras
import numpy as np

from workbench import components
from workbench.builders import build_model, hyperparameters
from workbench.callbacks import BatchSizeSchedule
from workbench.components import build_before_fit
from workbench.context import keras_verbosity
from workbench.distribute import scaled_learning_rate


def learning_rate_for(recipe, total_steps, replicas=1, learning_rate_factor=1.0,
                      default_schedule=None):
    """The recipe's learning rate over a training of `total_steps` optimizer steps: its peak
    (`recipe.learning_rate` times `learning_rate_factor`, scaled once for `replicas` by
    `recipe.scale_lr`), as the recipe's schedule by name, as `default_schedule(peak, total_steps)`
    when the recipe names none and the caller has a default, or constant."""
    peak = scaled_learning_rate(recipe.learning_rate * learning_rate_factor, replicas,
                                recipe.scale_lr)
    if recipe.schedule and recipe.schedule.lower() != "none":
        return components.build_schedule(recipe.schedule, recipe.schedule_config, peak,
                                         max(1, total_steps))
    if default_schedule is not None:
        return default_schedule(peak, max(1, total_steps))
    return peak


def optimizer_for(recipe, total_steps, replicas=1, learning_rate_factor=1.0,
                  default_schedule=None, config=None):
    """The one place a recipe's optimizer settings become an optimizer: `recipe.optimizer` by
    name with `recipe.optimizer_config` (updated by `config`), on `learning_rate_for`'s rate.
    Every path that trains (epochs, steps, fine-tuning after compression, search trials, the
    federation's clients) builds its optimizer here."""
    return components.build_optimizer(
        recipe.optimizer, {**recipe.optimizer_config, **(config or {})},
        learning_rate_for(recipe, total_steps, replicas, learning_rate_factor, default_schedule))


def check_names(recipe, steps_per_epoch):
    """Validate every component name and argument in a recipe before any work starts."""
    # Building is cheap (no variables until the first step) and checks every argument name too.
    optimizer_for(recipe, recipe.epochs * steps_per_epoch)
    if recipe.regularizer:
        components.REGULARIZERS.build(recipe.regularizer, recipe.regularizer_config)


class LearningRateLog(keras.callbacks.Callback):
    """Records the learning rate of every step without a per-step hook: within an epoch the rate
    is either constant or the schedule's value at that step, so it is read once per epoch."""

    def __init__(self):
        super().__init__()
        self.values = []
        self._first_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._first_step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        last_step = int(optimizer.iterations.numpy())
        steps = np.arange(self._first_step, last_step)
        rate = getattr(optimizer, "_learning_rate", None)
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            values = keras.ops.convert_to_numpy(rate(steps))
            values = np.broadcast_to(values, steps.shape)
        else:
            values = np.full(steps.shape, float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        self.values.extend(float(v) for v in values)
        if logs is not None and "learning_rate" not in logs:
            # Every run's history then has the rate, not only runs with a plateau callback.
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with its per-epoch summaries only. Keras' own writes a scalar
    per log entry after every training batch even with `update_freq="epoch"`, where no writer is
    active and each call does nothing but still costs about 0.7 ms of host time: on a small model
    that was most of the train stage's overhead over a plain `fit`."""

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq != "epoch" or self._should_trace:
            super().on_train_batch_end(batch, logs)


def standard_callbacks(recipe, ctx):
    """Early stopping, learning rate on plateau, TensorBoard, and the learning-rate log."""
    callbacks = []
    stopping = recipe.early_stopping
    # Always present: with early stopping off it never stops for patience and keeps the final
    # weights, but a NaN/inf loss still stops training with the last good weights.
    callbacks.append(components.CALLBACKS.build("early_stopping", {
        "monitor": stopping.monitor, "min_delta": stopping.min_delta,
        "patience": stopping.patience if stopping.enabled else recipe.epochs + 1,
        "restore_best_weights": stopping.enabled}))
    plateau = recipe.plateau
    if plateau.enabled:
        callbacks.append(components.CALLBACKS.build("reduce_lr_on_plateau", {
            "monitor": plateau.monitor, "factor": plateau.factor, "patience": plateau.patience,
            "min_lr": plateau.min_lr, "min_delta": plateau.min_delta,
            "verbose": 1 if ctx.verbose else 0}))
    callbacks.append(EpochTensorBoard(
        log_dir=str(ctx.run_dir / "tensorboard"), write_graph=False, profile_batch=0))
    return callbacks


# Keras runs batch-end callbacks on a worker thread, off the training loop's critical path, only
# when every callback is marked `async_safe`; one unmarked batch hook makes every step wait for
# the host. These are safe there: TensorBoard (epoch-level writes, no graph, no profiling) and
# BackupAndRestore (saving per epoch) do nothing per batch, and EarlyStopping's per-batch NaN
# check only reads the logs and sets `stop_training`, which Keras reads at the next step; Keras
# drains the thread before `on_epoch_end`, so epoch-level decisions see every batch.
ASYNC_SAFE_CALLBACKS = ("TensorBoard", "EpochTensorBoard", "BackupAndRestore", "EarlyStopping")


def mark_async_safe(callbacks):
    for callback in callbacks:
        if type(callback).__name__ in ASYNC_SAFE_CALLBACKS and getattr(
                callback, "save_freq", "epoch") == "epoch":
            callback.async_safe = True
    return callbacks


def compile_model(ctx, recipe, steps_per_epoch):
    """Build and compile the recipe's model under the run's strategy, with the task's loss and
    metrics. `recipe.batch_size` is per replica; the learning rate follows the replica count by
    `recipe.scale_lr` (distribute.py)."""
    replicas = ctx.strategy.num_replicas_in_sync
    with ctx.strategy.scope():
        model = build_model(recipe, hyperparameters(ctx), ctx.data.info)
        if recipe.regularizer:
            components.apply_regularizer(model, recipe.regularizer, recipe.regularizer_config)
        model.compile(optimizer=optimizer_for(recipe, recipe.epochs * steps_per_epoch, replicas),
                      jit_compile=recipe.jit_compile, **ctx.task.compile_args(recipe))
    return model


def batch_phases(recipe, global_batch):
    """`(first_epoch, end_epoch, batch_size)` per `fit` call: one phase, or one per batch size
    when `recipe.batch_growth` grows the batch (workbench.callbacks.BatchSizeSchedule)."""
    growth = recipe.batch_growth
    if not growth.epochs:
        return [(0, recipe.epochs, global_batch)]
    schedule = BatchSizeSchedule(
        growth.factor, growth.epochs, growth.max_batch_size)
    return schedule.phases(recipe.epochs, global_batch)


def fit(ctx, extra_callbacks=(), backup=False):
    """Build, compile and fit the recipe's model; return `(model, history, callbacks)`.

    With `backup`, `BackupAndRestore` saves the training state under the run directory, and a
    resumed run continues from the last saved epoch (single-phase training only: a growing batch
    size runs one `fit` per phase)."""
    recipe = ctx.recipe
    data = ctx.require_data("train")
    global_batch = recipe.batch_size * ctx.strategy.num_replicas_in_sync
    phases = batch_phases(recipe, global_batch)
    total_steps = sum((end - start) * math.ceil(data.info.sizes["train"] / batch)
                      for start, end, batch in phases)
    model = compile_model(ctx, recipe, steps_per_epoch=max(1, round(total_steps / recipe.epochs)))
    callbacks = [*standard_callbacks(recipe, ctx), LearningRateLog(), *extra_callbacks]
    if backup and len(phases) == 1:
        callbacks.insert(0, components.CALLBACKS.build("backup_and_restore", {
            "backup_dir": str(ctx.run_dir / "backup"), "double_checkpoint": True,
            "min_interval_seconds": recipe.backup_interval_seconds}))
        # Per-epoch metrics on disk, so a resumed run's curves start at epoch 1. Written before
        # the backup (callbacks run in list order): a kill between the two then leaves a row for
        # an epoch that is trained again, which the report drops, rather than a missing row.
        callbacks.insert(0, keras.callbacks.CSVLogger(str(ctx.run_dir / "history.csv"),
                                                      append=True))
    mark_async_safe(callbacks)
    with ctx.strategy.scope():
        build_before_fit(model, data.batches("train", phases[0][2]))
    history = keras.callbacks.History()
    history.history, history.epoch = {}, []
    for start, end, batch in phases:
        if len(phases) > 1:
            ctx.say(f"  epochs {start + 1}-{end}: batch size {batch}")
        train_data = data.batches("train", batch, shuffle=True, seed=recipe.seed)
        val_data = data.batches("val", batch)
        phase = model.fit(train_data, validation_data=val_data, initial_epoch=start, epochs=end,
                          callbacks=callbacks, verbose=keras_verbosity(ctx.verbose),
                          shuffle=False)  # the dataset reshuffles itself every epoch
        history.epoch += phase.epoch
        for key, values in phase.history.items():
            history.history.setdefault(key, []).extend(values)
        if model.stop_training:
            break
    ctx.results.setdefault("train", {})["batch_sizes"] = [batch for _, _, batch in phases]
    return model, history, callbacks


def epochs_before(ctx, key, resumed_from):
    """`key`'s values for the epochs an interrupted run finished before `resumed_from`."""
    path = ctx.run_dir / "history.csv"
    if not resumed_from or not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) < resumed_from]
    return [float(row[key]) for row in rows if row.get(key) not in (None, "")]
