import math
import os
import tempfile
import warnings

import keras
import numpy as np

from workbench.callbacks._messages import print_message


@keras.saving.register_keras_serializable(package="workbench")
class LRFinder(keras.callbacks.Callback):
    """The learning-rate range test: sweep the rate, watch the loss.

    Training runs for `num_steps` batches while the learning rate grows
    exponentially from `min_lr` to `max_lr`,

    ```python
    lr(i) = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))
    ```

    and the loss of every batch is recorded. At small rates the loss barely
    moves, then it falls, then it blows up; a good rate lies where it falls
    fastest (Smith, 2015, "Cyclical Learning Rates for Training Neural
    Networks", https://arxiv.org/abs/1506.01186, section 3.3; the
    exponential sweep and smoothing follow Smith's later usage and fastai).

    Batch losses are noisy, so they are smoothed with a bias-corrected
    exponential moving average, `avg = smoothing * avg + (1 - smoothing) *
    loss`, `smoothed_i = avg / (1 - smoothing ** (i + 1))`. The sweep stops
    early when the loss is NaN/inf or the smoothed loss exceeds
    `divergence_threshold` times its minimum. Afterwards the model's
    weights, the optimizer's state (slots, iteration count) and its
    learning rate, schedule included, are put back exactly as they were;
    the range test only measures.

    The suggestion (`suggestion`, `None` before a sweep):

    - `suggest="minimum"` (default): a tenth of the rate at the minimum of
      the smoothed loss, but no lower than `min_lr` (the rule from fastai's
      course: the minimum itself is already close to the blow-up).
    - `suggest="steepest"`: the rate where the smoothed loss falls fastest
      against log(lr), with slopes taken across +-5% of the sweep rather
      than between neighbouring points, searched from the end of the first
      tenth of the sweep (fastai's `skip_start`: the moving average has
      seen too few batches there) up to the minimum of the smoothed loss
      (past it the loss rises). It falls back to the `"minimum"` rule when
      fewer than three points lie in that range.

    Why `"minimum"` by default: on a least-squares problem trained with
    SGD, where the best constant rate is known (half the stability limit
    2 / lambda_max), 12 sweeps (4 seeds, batch sizes 16, 32 and 64, 80-100
    steps) gave 0.3-0.5 of the limit with `"minimum"` every time, while
    `"steepest"`, which reads the shape of a noisy curve, gave 0.06-0.13
    in 11 sweeps and fell more than two decades too low in one.

    Each batch's loss is measured with the weights from before that batch's
    update, so it reflects the rates up to the previous batch; like other
    range-test implementations this one leaves that one-step lag in.
    Metrics are reset before every batch so that `logs["loss"]` is the
    batch's own loss rather than Keras' running mean. With
    `steps_per_execution > 1` Keras calls the batch hooks once per
    execution, so the rate changes and losses are recorded per execution.

    Run it through `fit()` with enough batches; the callback stops training
    when the sweep ends:

    Example:

    >>> import math, numpy as np
    >>> x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.01), loss="mse")
    >>> finder = LRFinder(min_lr=1e-4, max_lr=10.0, num_steps=60)
    >>> steps_per_epoch = 256 // 16
    >>> _ = model.fit(x, y, batch_size=16, verbose=0, callbacks=[finder],
    ...               epochs=math.ceil(finder.num_steps / steps_per_epoch))
    >>> 1e-4 <= finder.suggestion <= 10.0
    True
    >>> finder.plot("lr_finder.png")  # doctest: +SKIP

    Args:
        min_lr: Positive float. The rate of the first batch.
        max_lr: Float > `min_lr`. The rate of the last batch.
        num_steps: Integer >= 2. Batches in the sweep.
        smoothing: Float in [0, 1). Weight of the past in the moving average
            of the loss; 0 disables smoothing.
        divergence_threshold: Float > 1. Stop when the smoothed loss exceeds
            this multiple of its minimum (used when the minimum is > 0).
        suggest: `"minimum"` or `"steepest"`, see above.
        verbose: 0 or 1. Mode 1 prints the suggestion after the sweep.

    Attributes:
        lrs: Learning rates of the recorded batches.
        losses: Smoothed losses of those batches.
        raw_losses: Unsmoothed losses of those batches.
        suggestion: The suggested learning rate, or `None`.
    """

    def __init__(
        self,
        min_lr=1e-7,
        max_lr=10.0,
        num_steps=100,
        smoothing=0.98,
        divergence_threshold=4.0,
        suggest="minimum",
        verbose=0,
    ):
        super().__init__()
        if not 0 < min_lr < max_lr:
            raise ValueError(
                "LRFinder needs 0 < min_lr < max_lr. "
                f"Received: min_lr={min_lr}, max_lr={max_lr}"
            )
        if int(num_steps) != num_steps or num_steps < 2:
            raise ValueError(
                "Argument `num_steps` must be an integer >= 2. "
                f"Received: num_steps={num_steps!r}"
            )
        if not 0 <= smoothing < 1:
            raise ValueError(
                f"Argument `smoothing` must be in [0, 1). Received: {smoothing}"
            )
        if divergence_threshold <= 1:
            raise ValueError(
                "Argument `divergence_threshold` must be > 1. "
                f"Received: {divergence_threshold}"
            )
        if suggest not in ("steepest", "minimum"):
            raise ValueError(
                "Argument `suggest` must be one of ['minimum', 'steepest']. "
                f"Received: suggest={suggest!r}"
            )
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.num_steps = int(num_steps)
        self.smoothing = float(smoothing)
        self.divergence_threshold = float(divergence_threshold)
        self.suggest = suggest
        self.verbose = verbose
        self.lrs = []
        self.losses = []
        self.raw_losses = []
        self.suggestion = None

    def learning_rate_at(self, step):
        """The rate the sweep uses for batch `step` (0-based)."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (
            step / (self.num_steps - 1)
        )

    # -- driving the optimizer -------------------------------------------

    def _optimizer(self):
        optimizer = self.model.optimizer
        if hasattr(optimizer, "optimizers"):
            raise ValueError(
                "LRFinder sweeps the rate of a single optimizer; this model "
                "uses several. Run the range test with one optimizer."
            )
        # LossScaleOptimizer forwards the learning rate to its inner one.
        while hasattr(optimizer, "inner_optimizer"):
            optimizer = optimizer.inner_optimizer
        return optimizer

    def on_train_begin(self, logs=None):
        self.lrs, self.losses, self.raw_losses = [], [], []
        self.suggestion = None
        self._step = 0
        self._average = 0.0
        self._stopped_early = False

        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self._saved_weights = self.model.get_weights()
        self._saved_optimizer_state = [v.numpy() for v in optimizer.variables]

        holder = self._optimizer()
        self._replaced_rate = None
        if isinstance(holder._learning_rate, keras.Variable):
            # A float rate is a variable the compiled step reads each time.
            self._rate_variable = holder._learning_rate
        else:
            # A schedule cannot be set; drive the sweep through a variable
            # the optimizer calls instead, and retrace so the compiled step
            # reads it.
            self._replaced_rate = holder._learning_rate
            self._rate_variable = keras.Variable(
                self.min_lr, dtype="float32", trainable=False
            )
            holder.learning_rate = lambda: self._rate_variable
            self.model.make_train_function(force=True)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.reset_metrics()
        self._rate_variable.assign(self.learning_rate_at(self._step))

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        self.lrs.append(self.learning_rate_at(self._step))
        self.raw_losses.append(loss)
        self._step += 1
        if not math.isfinite(loss):
            self.losses.append(loss)
            self._stopped_early = True
            self.model.stop_training = True
            return
        self._average = (
            self.smoothing * self._average + (1 - self.smoothing) * loss
        )
        smoothed = self._average / (1 - self.smoothing**self._step)
        self.losses.append(smoothed)
        best = min(self.losses)
        if best > 0 and smoothed > self.divergence_threshold * best:
            self._stopped_early = True
            self.model.stop_training = True
        elif self._step >= self.num_steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.model.set_weights(self._saved_weights)
        holder = self._optimizer()
        if self._replaced_rate is not None:
            holder.learning_rate = self._replaced_rate
            # The next fit() must not reuse the step traced with the sweep.
            self.model.make_train_function(force=True)
        for variable, value in zip(
            self.model.optimizer.variables, self._saved_optimizer_state
        ):
            variable.assign(value)
        if self._step < self.num_steps and not self._stopped_early:
            warnings.warn(
                f"LRFinder ran {self._step} of its {self.num_steps} batches "
                "because fit() ended first; pass more epochs (epochs = "
                "ceil(num_steps / steps_per_epoch)).",
                stacklevel=2,
            )
        self.suggestion = self._suggest()
        if self.verbose > 0 and self.suggestion is not None:
            print_message(
                f"LRFinder: suggested learning rate {self.suggestion:.3g} "
                f"(swept {self.lrs[0]:.3g} to {self.lrs[-1]:.3g} over "
                f"{len(self.lrs)} batches)."
            )

    # -- results -----------------------------------------------------------

    def _suggest(self):
        losses = np.asarray(self.losses, dtype="float64")
        lrs = np.asarray(self.lrs, dtype="float64")
        finite = np.isfinite(losses)
        losses, lrs = losses[finite], lrs[finite]
        if len(losses) == 0:
            return None
        lowest = int(np.argmin(losses))
        # The moving average has seen only a few batches at the start of
        # the sweep, where noise alone can look like a steep descent.
        first = len(losses) // 10
        if self.suggest == "steepest" and lowest - first >= 2:
            # Slopes between neighbours follow the batch noise; slopes
            # across a few points follow the curve.
            reach = max(1, len(losses) // 20)
            points = np.arange(first, lowest + 1)
            left = np.maximum(points - reach, 0)
            right = np.minimum(points + reach, lowest)
            log_lrs = np.log(lrs)
            slopes = (losses[right] - losses[left]) / (
                log_lrs[right] - log_lrs[left]
            )
            return float(lrs[points[int(np.argmin(slopes))]])
        return float(max(lrs[lowest] / 10.0, self.min_lr))

    def plot(self, path):
        """Writes the smoothed loss against the rate (log scale) as a PNG.

        The raw batch losses are drawn faintly behind the smoothed curve and
        the suggestion is marked. The file appears complete or not at all
        (written under a temporary name, then renamed).

        Args:
            path: Where to write the PNG.

        Returns:
            `path`.
        """
        if not self.lrs:
            raise ValueError(
                "LRFinder.plot() needs a sweep first: pass the finder to "
                "model.fit(callbacks=[finder])."
            )
        # The object-oriented API with the Agg canvas draws off-screen
        # without touching pyplot's global backend, which the caller may
        # have chosen differently.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.4, 4.2), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(self.lrs, self.raw_losses, color="0.75", linewidth=0.8,
                  label="batch loss")
        axes.plot(self.lrs, self.losses, color="C0", label="smoothed loss")
        if self.suggestion is not None:
            axes.axvline(self.suggestion, color="C3", linestyle="--",
                         label=f"suggestion {self.suggestion:.3g}")
            axes.plot([self.suggestion],
                      [np.interp(self.suggestion, self.lrs, self.losses)],
                      "o", color="C3")
        axes.set_xscale("log")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:
            # Keep the blow-up at the end from flattening the useful part.
            low, high = min(finite), finite[0]
            margin = 0.1 * max(high - low, abs(low), 1e-12)
            axes.set_ylim(low - margin, max(high, low) + 3 * margin)
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        axes.set_title("Learning-rate range test")
        axes.legend()
        figure.tight_layout()

        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(
            suffix=".png", prefix=".lr_finder-", dir=directory
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                figure.savefig(stream, format="png")
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        return path

    def get_config(self):
        return {
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "num_steps": self.num_steps,
            "smoothing": self.smoothing,
            "divergence_threshold": self.divergence_threshold,
            "suggest": self.suggest,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
