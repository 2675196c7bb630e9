"""Step-based training of a language model, the way nanoGPT's `train.py` does it, through
`model.fit` (so the train stage runs at plain `fit` speed).

Training is `steps` optimizer steps, each over `batch_size x replicas x accumulation` random
windows (`corpus.random_batches`). It runs in segments that end at every validation point (every
`eval_interval` steps, loss on a fixed set of validation windows); within a segment `fit` runs
`steps_per_execution` steps per call into the compiled (optionally XLA) function, and a callback
saves the whole training state when `checkpoint_steps` steps or `checkpoint_seconds` seconds have
passed, so `kill -9` then `--resume` loses at most that interval. The batch stream is a function of
`(seed, step)`, so a resumed run sees exactly the batches the interrupted one would have.

Optimization is nanoGPT's: AdamW (lr 1e-3, beta_2 0.99, weight decay 0.1 on every parameter of
rank >= 2 only, none on norms and biases), linear warm-up for `warmup_steps` then cosine decay to
`min_learning_rate` at `steps` (Loshchilov & Hutter 2017), global gradient clipping at 1.0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from workbench.components import build_before_fit
from workbench.errors import WorkbenchError
from workbench.lm.corpus import random_batches, window_starts, windows_dataset

CHECKPOINT_FILE = "lm_checkpoint.npz"


def learning_rate_schedule(recipe, settings, replicas=1):
    """The recipe's schedule over `settings.steps` steps (in micro-steps: Keras counts every
    micro-batch), or nanoGPT's warm-up + cosine when the recipe names none."""
    from workbench import components
    from workbench.distribute import scaled_learning_rate

    peak = scaled_learning_rate(recipe.learning_rate, replicas, recipe.scale_lr)
    micro = settings.accumulation
    if recipe.schedule and recipe.schedule.lower() != "none":
        return components.build_schedule(recipe.schedule, recipe.schedule_config, peak,
                                         settings.steps * micro)
    floor = min(settings.min_learning_rate / recipe.learning_rate, 1.0)
    decay_steps = max(1, (settings.steps - settings.warmup_steps) * micro)
    if settings.warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, alpha=floor, warmup_target=peak,
            warmup_steps=settings.warmup_steps * micro)
    return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=floor)


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
    from workbench import components

    config = dict(recipe.optimizer_config)
    if settings.accumulation > 1:
        config["gradient_accumulation_steps"] = settings.accumulation
    optimizer = components.build_optimizer(
        recipe.optimizer, config, learning_rate_schedule(recipe, settings, replicas))
    if getattr(optimizer, "weight_decay", None) and hasattr(optimizer,
                                                            "exclude_from_weight_decay"):
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    return optimizer


def compile_language_model(model, recipe, settings, replicas=1, steps_per_execution=1):
    with _xla_allowed(recipe.jit_compile):
        model.compile(optimizer=make_optimizer(recipe, settings, model, replicas),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=recipe.jit_compile,
                      steps_per_execution=steps_per_execution)
    return model


def effective_steps_per_execution(settings):
    """`steps_per_execution`, lowered to divide every segment (Keras' `fit` would otherwise run
    past a segment's end)."""
    return math.gcd(settings.steps_per_execution, settings.eval_interval * settings.accumulation,
                    settings.steps * settings.accumulation)


def validation_windows(tokens, context, count, batch_size):
    """The fixed validation set: `count` windows evenly spaced over `tokens`, batched."""
    return windows_dataset(tokens, context, window_starts(len(tokens), context, count)).batch(
        batch_size).cache()


@dataclass
class TrainingState:
    """What a checkpoint holds besides the weights: where training is, and what it measured."""

    micro_step: int = 0
    eval_steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    measured_tokens: int = 0
    measured_seconds: float = 0.0
    train_seconds: float = 0.0
    total_seconds: float = 0.0


def save_checkpoint(run_dir, model, state):
    # Within `fit` the JAX trainer keeps the training state in its own arrays (the model's
    # variables are emptied for speed); a save in the middle of a segment brings them back first.
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
    arrays = {f"w{i}": np.asarray(keras.ops.convert_to_numpy(v))
              for i, v in enumerate(model.weights)}
    arrays.update({f"o{i}": np.asarray(keras.ops.convert_to_numpy(v))
                   for i, v in enumerate(model.optimizer.variables)})
    arrays["state"] = np.frombuffer(json.dumps(state.__dict__).encode(), dtype=np.uint8)
    with run_dir.atomic(CHECKPOINT_FILE) as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)


def load_checkpoint(run_dir, model):
    """Restore weights and optimizer state saved by `save_checkpoint`; the `TrainingState`, or
    `None` when there is no checkpoint."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        weights = [saved[f"w{i}"] for i in range(len(model.weights))]
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        optimizer_values = [saved[f"o{i}"] for i in range(len(model.optimizer.variables))]
        state = TrainingState(**json.loads(saved["state"].tobytes().decode()))
    for variable, value in zip(model.weights, weights):
        variable.assign(value)
    for variable, value in zip(model.optimizer.variables, optimizer_values):
        variable.assign(value)
    return state


class _Progress(keras.callbacks.Callback):
    """Times every execution after the run's first (which compiles) and saves checkpoints. Only
    Python arithmetic per call, so it costs nothing measurable per step."""

    def __init__(self, segment_start, micro_tokens, save, every_steps, every_seconds,
                 skip_first):
        super().__init__()
        self.segment_start = segment_start
        self.micro_tokens = micro_tokens
        self.save = save
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.skip_first = skip_first
        self.tokens = 0
        self.seconds = 0.0
        self.last_save_time = time.monotonic()
        self.last_save_step = segment_start
        self._previous_end = None
        self._begin = None
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
        micro_step = self.segment_start + batch + 1
        if self.save is not None and (
                (self.every_steps and micro_step - self.last_save_step >= self.every_steps)
                or (self.every_seconds and time.monotonic() - self.last_save_time
                    >= self.every_seconds)):
            self.save(micro_step)
            self.last_save_step = micro_step
            self.last_save_time = time.monotonic()


def train_language_model(model, corpus_train, corpus_val, recipe, settings, *, strategy=None,
                         run_dir=None, resume=False, say=print, extra_callbacks=()):
    """Train a compiled `model` for `settings.steps` steps; return the `TrainingState` (curves,
    tokens/s) and the reason training stopped early, if it did."""
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    micro_batch = recipe.batch_size * replicas
    micro = settings.accumulation
    total_micro = settings.steps * micro
    segment_micro = settings.eval_interval * micro
    tokens_per_micro = micro_batch * settings.context
    val_data = validation_windows(corpus_val, settings.context, settings.eval_windows,
                                  settings.eval_batch_size)
    state = None
    if resume and run_dir is not None:
        state = load_checkpoint(run_dir, model)
        if state is not None:
            say(f"  resuming at step {state.micro_step // micro} from the last checkpoint")
    state = state or TrainingState()

    def save(micro_step):
        if run_dir is not None:
            save_checkpoint(run_dir, model, dataclasses.replace(state, micro_step=micro_step))

    checkpointing = run_dir is not None and (settings.checkpoint_steps or
                                             settings.checkpoint_seconds)
    first_execution = first_segment = True
    last_good = None
    stop_reason = None
    started = time.perf_counter()
    while state.micro_step < total_micro:
        step_in_segment = state.micro_step % segment_micro
        length = min(segment_micro - step_in_segment, total_micro - state.micro_step)
        progress = _Progress(state.micro_step, tokens_per_micro,
                             save if checkpointing else None,
                             settings.checkpoint_steps * micro, settings.checkpoint_seconds,
                             skip_first=first_execution)
        first_execution = False
        batches = random_batches(corpus_train, settings.context, micro_batch, recipe.seed,
                                 first_step=state.micro_step)
        if first_segment:
            with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
                build_before_fit(model, batches)
        first_segment = False
        segment_started = time.perf_counter()
        with _xla_allowed(recipe.jit_compile), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            history = model.fit(batches, steps_per_epoch=length, epochs=1, verbose=0,
                                shuffle=False, callbacks=[progress, *extra_callbacks])
        state.train_seconds += time.perf_counter() - segment_started
        state.measured_tokens += progress.tokens
        state.measured_seconds += progress.seconds
        state.micro_step += length
        loss = float(history.history["loss"][-1])
        if not math.isfinite(loss):
            stop_reason = (f"the training loss became {loss} before step "
                           f"{state.micro_step // micro}; the weights of step "
                           f"{state.eval_steps[-1] if state.eval_steps else 0} are kept")
            if last_good is not None:
                model.set_weights(last_good)
            break
        with _xla_allowed(recipe.jit_compile):
            val_loss = float(model.evaluate(val_data, verbose=0, return_dict=True)["loss"])
        step = state.micro_step // micro
        state.eval_steps.append(step)
        state.train_loss.append(loss)
        state.val_loss.append(val_loss)
        last_good = model.get_weights()
        rate = state.measured_tokens / state.measured_seconds if state.measured_seconds else 0.0
        say(f"  step {step:>6d}/{settings.steps}  loss {loss:.4f}  val_loss {val_loss:.4f}  "
            f"{rate:,.0f} tokens/s")
        if checkpointing:
            save(state.micro_step)
    state.total_seconds = time.perf_counter() - started
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
