import math
import time

import keras

from workbench.callbacks._messages import print_message


@keras.saving.register_keras_serializable(package="workbench")
class EarlyStopping(keras.callbacks.EarlyStopping):
    """Stop training when it stops improving, diverges, or runs out of time.

    Keras' `EarlyStopping` (stop after `patience` epochs without an
    improvement of `min_delta` in `monitor`; Prechelt, 1998, "Early Stopping
    - But When?", in Neural Networks: Tricks of the Trade) with three more
    reasons to stop and a record of which one fired:

    - **Non-finite loss.** The training loss is checked after every batch;
      once it is NaN or infinite the weights are already damaged, so
      training stops at once.
    - **Divergence**, when `divergence_factor` is set: the training loss
      (the running mean Keras reports after each batch, and the epoch
      mean) exceeds `divergence_factor * best`, where `best` is the lowest
      epoch-mean training loss so far. Detection starts after the first
      epoch, when `best` exists, and needs `best > 0`.
    - **Wall-clock budget**, when `max_seconds` is set: checked after every
      batch and epoch, measured from the start of `fit()`.

    Weights kept: after a patience or budget stop, Keras' rule applies
    (`restore_best_weights=True`, the default here, restores the best epoch
    of `monitor`). After a non-finite or diverged loss, the weights are
    restored even with `restore_best_weights=False`: the best epoch's if
    available, otherwise those of the last epoch that ended with a finite,
    non-diverged loss (the weights from the start of `fit()` if none did).
    To have that "last good" copy when no best epoch is recorded
    (`restore_best_weights=False`, or `monitor` not yet available), the
    weights are copied to host memory at the end of every such epoch.

    The reason is a short sentence in `stop_reason` (`None` if training
    ran all its epochs), e.g. `"training loss became nan at epoch 3, batch
    12; restored the weights of epoch 2."`. It is also added as
    `logs["stop_reason"]` to the logs that `on_train_end` passes on, so
    callbacks listed after this one (a run report) can read it; it is not
    put into per-epoch logs, which `History` expects to be numbers.

    Example:

    >>> import numpy as np
    >>> stop = EarlyStopping(monitor="loss", patience=2, max_seconds=3600)
    >>> model = keras.Sequential([
    ...     keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    >>> model.compile(keras.optimizers.SGD(0.0), loss="mse")  # loss stays 1
    >>> history = model.fit(np.ones((8, 2)), np.ones((8, 1)), epochs=10,
    ...                     callbacks=[stop], verbose=0)
    >>> stop.stop_reason
    'no improvement in loss for 2 epochs (best 1 at epoch 1); restored the weights of epoch 1.'

    Args:
        monitor: Quantity to be monitored. Defaults to `"val_loss"`.
        min_delta: Minimum change in the monitored quantity to qualify as an
            improvement.
        patience: Number of epochs with no improvement after which training
            is stopped.
        verbose: 0 or 1. Mode 1 prints a message when the callback acts.
        mode: One of `{"auto", "min", "max"}`: whether the monitored
            quantity should decrease or increase; `"auto"` infers it from
            the name.
        baseline: Baseline value for the monitored quantity; training stops
            if the model does not improve on it within `patience` epochs.
        restore_best_weights: Whether to restore the weights of the epoch
            with the best value of `monitor` when training ends. Defaults to
            `True` (Keras' default is `False`).
        start_from_epoch: Number of epochs to wait before monitoring
            improvement (the loss and budget checks are active from the
            start).
        divergence_factor: `None` (off) or a float > 1: stop when the
            training loss exceeds this multiple of its best epoch value.
            Off by default because a loss that approaches 0 (a near-perfect
            regression) makes any fixed ratio trigger on noise.
        max_seconds: `None` (no budget) or a positive number of seconds of
            training time.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=True,
        start_from_epoch=0,
        divergence_factor=None,
        max_seconds=None,
    ):
        if divergence_factor is not None and divergence_factor <= 1:
            raise ValueError(
                "Argument `divergence_factor` must be None or > 1. "
                f"Received: divergence_factor={divergence_factor}"
            )
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(
                "Argument `max_seconds` must be None or > 0. "
                f"Received: max_seconds={max_seconds}"
            )
        super().__init__(
            monitor=monitor,
            min_delta=min_delta,
            patience=patience,
            verbose=verbose,
            mode=mode,
            baseline=baseline,
            restore_best_weights=restore_best_weights,
            start_from_epoch=start_from_epoch,
        )
        self.divergence_factor = divergence_factor
        self.max_seconds = max_seconds
        self.stop_reason = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.stop_reason = None
        self._stopped_on_bad_loss = False
        self._start_time = time.monotonic()
        self._epoch = 0
        self._best_loss = None
        self._last_good_weights = self.model.get_weights()
        self._last_good_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _loss_problem(self, logs, where):
        loss = (logs or {}).get("loss")
        if loss is None:
            return None
        loss = float(loss)
        if not math.isfinite(loss):
            return f"training loss became {loss} at {where}"
        if (
            self.divergence_factor is not None
            and self._best_loss is not None
            and self._best_loss > 0
            and loss > self.divergence_factor * self._best_loss
        ):
            return (
                f"training loss {loss:.4g} exceeded {self.divergence_factor:g}"
                f" x its best epoch value {self._best_loss:.4g} at {where}"
            )
        return None

    def _budget_problem(self, where):
        if self.max_seconds is None:
            return None
        elapsed = time.monotonic() - self._start_time
        if elapsed <= self.max_seconds:
            return None
        return (
            f"wall-clock budget of {self.max_seconds:g} s used up "
            f"({elapsed:.1f} s) at {where}"
        )

    def _stop(self, reason, bad_loss):
        self.stop_reason = reason
        self._stopped_on_bad_loss = bad_loss
        self.stopped_epoch = self._epoch
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.stop_reason is not None:
            return
        where = f"epoch {self._epoch + 1}, batch {batch + 1}"
        problem = self._loss_problem(logs, where)
        if problem:
            self._stop(problem, bad_loss=True)
            return
        problem = self._budget_problem(where)
        if problem:
            self._stop(problem, bad_loss=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._stopped_on_bad_loss:
            # Keras' bookkeeping would adopt this epoch's damaged weights as
            # the first "best" ones if none were recorded yet.
            return
        if self.stop_reason is None:
            problem = self._loss_problem(logs, f"the end of epoch {epoch + 1}")
            if problem:
                self._stop(problem, bad_loss=True)
                return
        super().on_epoch_end(epoch, logs)
        if self.stop_reason is None and self.stopped_epoch == epoch > 0:
            self.stop_reason = (
                f"no improvement in {self.monitor} for {self.wait} epochs "
                f"(best {float(self.best):.4g} at epoch {self.best_epoch + 1})"
            )
        loss = (logs or {}).get("loss")
        if loss is not None:
            self._best_loss = (
                float(loss)
                if self._best_loss is None
                else min(self._best_loss, float(loss))
            )
        if not (self.restore_best_weights and self.best_weights is not None):
            self._last_good_weights = self.model.get_weights()
            self._last_good_epoch = epoch
        if self.stop_reason is None:
            problem = self._budget_problem(f"the end of epoch {epoch + 1}")
            if problem:
                self._stop(problem, bad_loss=False)

    def _weights_to_keep(self):
        """(weights, description) to restore at the end, or (None, None)."""
        if self.restore_best_weights and self.best_weights is not None:
            return self.best_weights, f"the weights of epoch {self.best_epoch + 1}"
        if self._stopped_on_bad_loss:
            if self._last_good_epoch is None:
                return self._last_good_weights, "the weights from before training"
            return (
                self._last_good_weights,
                f"the weights of epoch {self._last_good_epoch + 1}",
            )
        return None, None

    def on_train_end(self, logs=None):
        weights, description = self._weights_to_keep()
        if weights is not None:
            self.model.set_weights(weights)
        if self.stop_reason is not None:
            if weights is not None:
                self.stop_reason += f"; restored {description}"
            self.stop_reason += "."
            if self.verbose > 0:
                print_message(f"Early stopping: {self.stop_reason}")
            if logs is not None:
                logs["stop_reason"] = self.stop_reason
        elif weights is not None and self.verbose > 0:
            print_message(f"Restored {description}.")

    def get_config(self):
        return {
            "monitor": self.monitor,
            # Keras flips the sign of `min_delta` once it knows the mode.
            "min_delta": abs(self.min_delta),
            "patience": self.patience,
            "verbose": self.verbose,
            "mode": self.mode,
            "baseline": self.baseline,
            "restore_best_weights": self.restore_best_weights,
            "start_from_epoch": self.start_from_epoch,
            "divergence_factor": self.divergence_factor,
            "max_seconds": self.max_seconds,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
