"""Step-based training of a language model, the way nanoGPT's `train.py` does it, through
`model.fit` (so the train stage runs at plain `fit` speed).

Training is `steps` optimizer steps, each over `batch_size x replicas x accumulation` random
windows (`corpus.random_batches`), run as ONE `model.fit` whose Keras epochs are
`epoch_steps(settings)` steps long, so that every validation point (every `eval_interval` steps and
the last, loss on a fixed set of validation windows, fit's own `validation_data` with a
`validation_freq` list) and every checkpoint falls on an epoch's end. `fit` runs
`steps_per_execution` steps per call into the compiled (optionally XLA) function. The project's
callbacks do the rest: `EarlyStopping` stops on a NaN/inf loss and keeps the last good weights,
`BackupAndRestore` saves the whole training state at epoch ends (every epoch with
`checkpoint_steps`, at most every `checkpoint_seconds` otherwise), so `kill -9` then `--resume`
loses at most that interval. The batch stream is a function of `(seed, step)` and is cut at the
backup's step, so a resumed run sees exactly the batches the interrupted one would have.

Instruction tuning (workbench.hub.sft) trains on packed windows instead (workbench.lm.packing):
batches `(x, y, w)` whose weights Keras takes as `sample_weight`, the loss their weighted mean
(`reduction="mean_with_sample_weight"`), so a weight-0 token counts for nothing.

Optimization is nanoGPT's: AdamW (lr 1e-3, beta_2 0.99, weight decay 0.1 on every parameter of
rank >= 2 only, none on norms and biases), linear warm-up for `warmup_steps` then cosine decay to
`min_learning_rate` at `steps` (Loshchilov & Hutter 2017), global gradient clipping at 1.0.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field

import keras

from workbench.components import build_before_fit
from workbench.errors import WorkbenchError
from workbench.lm.corpus import random_batches, window_starts, windows_dataset
from workbench.lm.packing import (
    PackedWindows, evenly_spaced_rows, packed_batches, packed_windows_dataset)
from workbench.training import learning_rate_for, optimizer_for

# The training state's backup (Keras' BackupAndRestore, under the run directory) and the curves
# measured up to it.
BACKUP_DIR = "backup"
STATE_FILE = "lm_state.json"


def _nanogpt_schedule(recipe, settings):
    """nanoGPT's warm-up + cosine to `settings.min_learning_rate`, in micro-steps."""
    micro = settings.accumulation
    floor = min(settings.min_learning_rate / recipe.learning_rate, 1.0)
    decay_steps = max(1, (settings.steps - settings.warmup_steps) * micro)

    def schedule(peak, total_steps):
        if settings.warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps, alpha=floor, warmup_target=peak,
                warmup_steps=settings.warmup_steps * micro)
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=floor)

    return schedule


def learning_rate_schedule(recipe, settings, replicas=1):
    """The recipe's schedule over `settings.steps` steps (in micro-steps: Keras counts every
    micro-batch), or nanoGPT's warm-up + cosine when the recipe names none."""
    return learning_rate_for(recipe, settings.steps * settings.accumulation, replicas,
                             default_schedule=_nanogpt_schedule(recipe, settings))


def learning_rates(schedule, steps, accumulation=1):
    """The schedule's value at each of `steps` optimizer steps. On JAX the schedule is compiled
    once: called eagerly, its warm-up `cond` compiles anew on every call (about 0.2 s each)."""
    function = schedule
    if keras.backend.backend() == "jax":
        import jax

        function = jax.jit(schedule)
    return [float(keras.ops.convert_to_numpy(function(step * accumulation)))
            for step in range(steps)]


def make_optimizer(recipe, settings, model, replicas=1):
    """The recipe's optimizer with the LM schedule; weight decay only on rank >= 2 weights."""
    config = ({"gradient_accumulation_steps": settings.accumulation}
              if settings.accumulation > 1 else None)
    optimizer = optimizer_for(recipe, settings.steps * settings.accumulation, replicas,
                              default_schedule=_nanogpt_schedule(recipe, settings), config=config)
    if getattr(optimizer, "weight_decay", None) and hasattr(optimizer,
                                                            "exclude_from_weight_decay"):
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    return optimizer


def language_model_loss(weighted=False):
    """Next-token cross-entropy; `weighted`, the mean over the tokens' sample weights (the
    trained tokens of packed windows) rather than over every position."""
    if weighted:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                          reduction="mean_with_sample_weight")
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compile_language_model(model, recipe, settings, replicas=1, steps_per_execution=1,
                           weighted=False):
    with _xla_allowed(recipe.jit_compile):
        model.compile(optimizer=make_optimizer(recipe, settings, model, replicas),
                      loss=language_model_loss(weighted),
                      jit_compile=recipe.jit_compile,
                      steps_per_execution=steps_per_execution)
    return model


def validation_windows(tokens, context, count, batch_size):
    """The fixed validation set: `count` windows evenly spaced over `tokens`, batched (`(x, y, w)`
    batches when `tokens` are `PackedWindows`)."""
    if isinstance(tokens, PackedWindows):
        return packed_windows_dataset(tokens, evenly_spaced_rows(len(tokens), count),
                                      batch_size).cache()
    return windows_dataset(tokens, context, window_starts(len(tokens), context, count)).batch(
        batch_size).cache()


def training_stream(train, context, batch_size, seed, first_step=0):
    """Batches of random windows of a token array, or of packed windows with their weights."""
    if isinstance(train, PackedWindows):
        return packed_batches(train, batch_size, seed, first_step)
    return random_batches(train, context, batch_size, seed, first_step)


@dataclass
class TrainingState:
    """Where training is and what it measured; written beside the backup (`STATE_FILE`) so a
    resumed run keeps the curves of the steps done before the interruption."""

    micro_step: int = 0
    eval_steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    # Training seconds (wall-clock less validation, compilation included) at each validation.
    eval_train_seconds: list = field(default_factory=list)
    measured_tokens: int = 0
    measured_seconds: float = 0.0
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    validation_seconds: float = 0.0


def epoch_steps(settings, checkpointing=True):
    """Optimizer steps per Keras epoch: every validation point (each `eval_interval` steps and the
    last step) and, with `checkpoint_steps`, every checkpoint falls on an epoch's end."""
    length = math.gcd(settings.eval_interval, settings.steps)
    if checkpointing and settings.checkpoint_steps:
        length = math.gcd(length, settings.checkpoint_steps)
    return length


def effective_steps_per_execution(settings, checkpointing=True):
    """`steps_per_execution`, lowered to divide an epoch (Keras' `fit` would otherwise run past
    an epoch's end)."""
    return math.gcd(settings.steps_per_execution,
                    epoch_steps(settings, checkpointing) * settings.accumulation)


class _Progress(keras.callbacks.Callback):
    """Times every execution after the run's first (which compiles), and the validations, with
    Python arithmetic only, so it costs nothing measurable per step."""

    def __init__(self, micro_tokens):
        super().__init__()
        self.micro_tokens = micro_tokens
        self.skip_first = True
        self.tokens = 0
        self.seconds = 0.0
        self.validation_seconds = 0.0
        self._previous_end = self._begin = self._test_begin = None
        self._done = 0
        self.fit_started = None

    def on_train_begin(self, logs=None):
        self.fit_started = time.perf_counter()

    def training_seconds(self):
        """Wall-clock since `fit` began, less the validations."""
        return time.perf_counter() - self.fit_started - self.validation_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_end = None
        self._done = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._previous_end is None:
            self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        steps = batch + 1 - self._done
        self._done = batch + 1
        start = self._previous_end if self._previous_end is not None else self._begin
        if self.skip_first:
            self.skip_first = False
        else:
            self.tokens += steps * self.micro_tokens
            self.seconds += now - start
        self._previous_end = now

    def on_test_begin(self, logs=None):
        self._test_begin = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation_seconds += time.perf_counter() - self._test_begin


class _Curves(keras.callbacks.Callback):
    """At every validation point: the losses into the `TrainingState`, one line of progress, and
    the state written beside the backup (before it: callbacks run in list order, so a kill
    between the two leaves a state a little ahead of the backup, which a resumed run trims)."""

    def __init__(self, state, settings, epoch_micro, progress, run_dir, say):
        super().__init__()
        self.state, self.settings = state, settings
        self.epoch_micro = epoch_micro
        self.progress, self.run_dir, self.say = progress, run_dir, say
        self.tokens_before = state.measured_tokens
        self.seconds_before = state.measured_seconds
        self.train_seconds_before = state.train_seconds
        self.validation_seconds_before = state.validation_seconds

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = self.state
        state.micro_step = (epoch + 1) * self.epoch_micro
        state.measured_tokens = self.tokens_before + self.progress.tokens
        state.measured_seconds = self.seconds_before + self.progress.seconds
        state.validation_seconds = (self.validation_seconds_before
                                    + self.progress.validation_seconds)
        loss = float(logs.get("loss", float("nan")))
        if "val_loss" in logs and math.isfinite(loss):
            step = state.micro_step // self.settings.accumulation
            state.eval_steps.append(step)
            state.train_loss.append(loss)
            state.val_loss.append(float(logs["val_loss"]))
            state.eval_train_seconds.append(self.train_seconds_before
                                            + self.progress.training_seconds())
            rate = (state.measured_tokens / state.measured_seconds
                    if state.measured_seconds else 0.0)
            self.say(f"  step {step:>6d}/{self.settings.steps}  loss {loss:.4f}  "
                     f"val_loss {state.val_loss[-1]:.4f}  {rate:,.0f} tokens/s")
        if self.run_dir is not None:
            self.run_dir.write_text(STATE_FILE, json.dumps(state.__dict__))


def _resumed_state(run_dir, micro_per_epoch, settings, say):
    """The epoch the backup (Keras' `BackupAndRestore`) ends at, and the state up to it."""
    metadata = run_dir / BACKUP_DIR / "training_metadata.json"
    if not metadata.is_file():
        return 0, TrainingState()
    epoch = int(json.loads(metadata.read_text())["epoch"])
    state = TrainingState()
    if (run_dir / STATE_FILE).is_file():
        state = TrainingState(**json.loads((run_dir / STATE_FILE).read_text()))
    micro_step = epoch * micro_per_epoch
    kept = [i for i, step in enumerate(state.eval_steps)
            if step * settings.accumulation <= micro_step]
    state.eval_steps = [state.eval_steps[i] for i in kept]
    state.train_loss = [state.train_loss[i] for i in kept]
    state.val_loss = [state.val_loss[i] for i in kept]
    state.eval_train_seconds = [state.eval_train_seconds[i] for i in kept
                                if i < len(state.eval_train_seconds)]
    if state.eval_train_seconds:
        state.train_seconds = state.eval_train_seconds[-1]
    state.micro_step = micro_step
    say(f"  resuming at step {micro_step // settings.accumulation} from the last checkpoint")
    return epoch, state


class _StartsWhereTheBackupEnds(keras.callbacks.Callback):
    """The batch stream was cut for the epoch the backup said; Keras' restore must agree (it
    falls back to the previous backup when the last one is unreadable)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_train_begin(self, logs=None):
        restored = int(getattr(self.model, "_initial_epoch", 0) or 0)
        if restored != self.epoch:
            raise WorkbenchError(
                f"the training backup restored epoch {restored}, but its metadata said "
                f"{self.epoch}; start the run again without --resume")


def train_language_model(model, corpus_train, corpus_val, recipe, settings, *, strategy=None,
                         run_dir=None, resume=False, say=print, extra_callbacks=()):
    """Train a compiled `model` for `settings.steps` steps in one `model.fit` of Keras epochs of
    `epoch_steps(settings)` steps; return the `TrainingState` (curves, tokens/s) and the reason
    training stopped early, if it did. `corpus_train` and `corpus_val` are token arrays (random
    windows are cut from them) or `PackedWindows` (whose weights become `sample_weight`)."""
    from workbench import components

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    micro_batch = recipe.batch_size * replicas
    micro = settings.accumulation
    checkpointing = run_dir is not None and bool(settings.checkpoint_steps
                                                 or settings.checkpoint_seconds)
    epoch_micro = epoch_steps(settings, checkpointing) * micro
    epochs = settings.steps * micro // epoch_micro
    # Validate at every eval_interval-th step and at the last (Keras counts epochs from 1).
    validation_epochs = [e for e in range(1, epochs + 1)
                         if (e * epoch_micro) % (settings.eval_interval * micro) == 0
                         or e == epochs]
    val_data = validation_windows(corpus_val, settings.context, settings.eval_windows,
                                  settings.eval_batch_size)
    first_epoch, state = 0, TrainingState()
    if resume and run_dir is not None:
        first_epoch, state = _resumed_state(run_dir, epoch_micro, settings, say)
    progress = _Progress(micro_batch * settings.context)
    stopping = components.CALLBACKS.build("early_stopping", {
        # Never stops for patience: it stops on a NaN/inf loss and keeps the last good weights.
        "monitor": "loss", "patience": epochs + 1, "restore_best_weights": False})
    callbacks = [progress, _Curves(state, settings, epoch_micro, progress,
                                   run_dir if checkpointing else None, say), stopping]
    if checkpointing:
        callbacks.append(components.CALLBACKS.build("backup_and_restore", {
            "backup_dir": str(run_dir / BACKUP_DIR), "double_checkpoint": True,
            # Every epoch ends on a checkpoint step when checkpoint_steps is set.
            "min_interval_seconds": 0.0 if settings.checkpoint_steps
            else settings.checkpoint_seconds}))
        callbacks.append(_StartsWhereTheBackupEnds(first_epoch))
    callbacks += list(extra_callbacks)
    batches = training_stream(corpus_train, settings.context, micro_batch, recipe.seed,
                              first_step=first_epoch * epoch_micro)
    with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        build_before_fit(model, batches)
    started = time.perf_counter()
    with _xla_allowed(recipe.jit_compile), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(batches, steps_per_epoch=epoch_micro, epochs=epochs,
                  validation_data=val_data, validation_freq=validation_epochs, verbose=0,
                  shuffle=False, callbacks=callbacks)
    elapsed = time.perf_counter() - started
    state.train_seconds += elapsed - progress.validation_seconds
    state.total_seconds = elapsed
    if checkpointing and (run_dir / STATE_FILE).is_file():
        (run_dir / STATE_FILE).unlink()  # the backup is gone too (Keras deletes it at the end)
    stop_reason = stopping.stop_reason
    if stop_reason:
        good = state.eval_steps[-1] if state.eval_steps else 0
        stop_reason = f"{stop_reason} (the last validated step was {good})"
    return state, stop_reason


@contextlib.contextmanager
def _xla_allowed(jit_compile):
    """Keras turns `jit_compile` off while TensorFlow's op determinism is on (the run turns it on
    for reproducible runs): some ops have no deterministic XLA kernel. This model's ops (matmuls,
    softmax, layer norm, gathers) compile to deterministic CPU code, so determinism is lifted
    while it trains with XLA, and restored afterwards."""
    import keras

    if not jit_compile or keras.backend.backend() != "tensorflow":
        yield
        return
    from tensorflow.python.framework import config

    was_on = config.is_op_determinism_enabled()
    if was_on:
        config.disable_op_determinism()
    try:
        yield
    finally:
        if was_on:
            config.enable_op_determinism()


def check_context(model, context):
    """A model that reads fewer tokens than the data's windows cannot train or score them."""
    from workbench.lm.model import model_context

    length = model_context(model)
    if length is not None and length != context:
        raise WorkbenchError(
            f"lm.context is {context} but model '{model.name}' reads {length} tokens; set "
            f"--set lm.context={length} (or build the model for {context})")
