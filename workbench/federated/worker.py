"""The Keras side of federated clients (and of the server's evaluation).

A `Worker` holds one Keras model and one client's data (or the server's validation split) and
answers `fit` (train the received global weights locally, return the new ones) and `evaluate`.
The clients' workers are built in the process that runs their ClientApp
(`workbench.federated.task.client_workers`); the warm executor (workbench.federated.executor)
holds them for the whole run. The server's evaluation (a `Worker` on the validation split) runs
in the stage's own process and answers the ServerApp over an authenticated local connection
(`serve`).
"""

from __future__ import annotations

import math
import threading
import time
from multiprocessing.connection import Listener

import keras
import numpy as np

# Test-only fault injection for the robustness comparison: "CLIENT:KIND:FACTOR", KIND being
# `scale` (the update times FACTOR) or `sign_flip` (the update times -FACTOR).
FAULT_ENV = "WORKBENCH_FEDERATED_FAULT"


class Worker:
    """Trains and evaluates one Keras model on one client's data (or the server's split)."""

    def __init__(self, model, train=None, holdout=None, train_examples=0, batch_size=32,
                 local_epochs=1, local_steps=0, seed=0, fault=None, lock=None,
                 schedule_steps_per_round=None):
        from workbench.optimizers import Proximal

        self.model = model
        self.train = train
        self.holdout = holdout
        self.train_examples = int(train_examples)
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self.local_steps = local_steps
        self.seed = seed
        self.fault = fault
        self.lock = lock or threading.Lock()  # shared by the workers that share a model
        # The schedule's steps per round: an average client's (the stage compiles the
        # recipe's schedule over rounds x this), else this client's own.
        self.schedule_steps_per_round = schedule_steps_per_round or (
            local_steps or local_epochs * max(1, math.ceil(self.train_examples / batch_size)))
        optimizer = model.optimizer
        if train is not None and not isinstance(optimizer, Proximal):
            # FedProx's proximal term around the recipe's own optimizer; mu = 0 unless the
            # strategy sends one, which leaves the step unchanged.
            optimizer = Proximal(optimizer, mu=0.0)
            model.compile(optimizer=optimizer, loss=model.loss, metrics=_metrics_of(model),
                          jit_compile=getattr(model, "jit_compile", False))
        if train is not None:
            if not getattr(optimizer, "built", False):
                optimizer.build(model.trainable_variables)
            # Each client keeps its own optimizer state (step count, moments) from round to
            # round, as a client process that stays up would: the recipe's schedule follows
            # the client's own steps, and Adam's bias correction matches its moments. (Zeroed
            # moments under a running step count would multiply Adam's first steps.)
            self.initial_state = [np.array(v.numpy()) for v in optimizer.variables]
            self.optimizer_state = {}  # per run: runs of several strategies may share a worker
            self.schedule = _offset_schedule(optimizer)

    def handle(self, op, payload):
        with self.lock:
            if op == "evaluate":
                self._set_weights(payload["weights"])
                return self._evaluate(self.holdout, "")
            if op == "fit":
                return self._fit(payload["weights"], payload.get("config", {}),
                                 payload.get("run", 0))
        raise ValueError(f"unknown request '{op}'")

    def _set_weights(self, weights):
        self.model.set_weights([np.asarray(w) for w in weights])

    def _evaluate(self, dataset, prefix):
        if dataset is None:
            return {}
        values = self.model.evaluate(dataset, verbose=0, return_dict=True)
        return {f"{prefix}{name}": float(value) for name, value in values.items()}

    def _fit(self, weights, config, run=0):
        started = time.perf_counter()
        self._set_weights(weights)
        metrics = self._evaluate(self.holdout, "holdout_")
        optimizer = self.model.optimizer
        for variable, value in zip(optimizer.variables,
                                   self.optimizer_state.get(run, self.initial_state)):
            variable.assign(value)
        server_round = int(config.get("server-round", 1)) + int(config.get("round-offset", 0))
        if self.schedule is not None:
            self.schedule.offset.assign((server_round - 1) * self.schedule_steps_per_round
                                        - int(optimizer.iterations.numpy()))
        optimizer.set_mu(float(config.get("proximal-mu", 0.0)))
        optimizer.set_anchor()
        seed = self.seed + 1000 * server_round
        if self.local_steps:
            history = self.model.fit(self.train(seed).repeat(), epochs=1,
                                     steps_per_epoch=self.local_steps, verbose=0, shuffle=False)
        else:
            # The client's dataset reshuffles itself every epoch.
            history = self.model.fit(self.train(seed), epochs=self.local_epochs, verbose=0,
                                     shuffle=False)
        new = self.model.get_weights()
        self.optimizer_state[run] = [np.array(v.numpy()) for v in optimizer.variables]
        if self.fault is not None:
            kind, factor = self.fault
            sign = -1.0 if kind == "sign_flip" else 1.0
            new = [np.asarray(g) + sign * factor * (n - np.asarray(g))
                   for g, n in zip(weights, new)]
        metrics.update({f"train_{name}": float(values[-1])
                        for name, values in history.history.items()})
        metrics.update({"num-examples": self.train_examples, "unit-weight": 1,
                        "local-seconds": time.perf_counter() - started})
        return {"weights": new, "metrics": metrics}


def _offset_schedule(optimizer):
    """Make the (inner) optimizer's schedule read `iterations + offset`; None for a constant
    learning rate. Workers that share a model share the one schedule."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    if isinstance(schedule, OffsetSchedule):
        return schedule
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return None
    offset = OffsetSchedule(schedule)
    inner.learning_rate = offset
    return offset


class OffsetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule(step + offset)`. A client's optimizer counts its own steps (for its moments'
    bias correction), while the recipe's schedule should follow the federation's progress: the
    worker sets the offset each round so that the schedule starts the round where an average
    client would be, whatever this client's data size or the rounds it sat out."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.offset = keras.Variable(0, dtype="int64", trainable=False, name="schedule_offset")

    def __call__(self, step):
        return self.schedule(keras.ops.add(keras.ops.cast(step, "int64"), self.offset))

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule)}


def _metrics_of(model):
    """The compiled metrics of a loaded model, for recompiling it with another optimizer."""
    config = model.get_compile_config() or {}
    return config.get("metrics")


def serve(worker, port, authkey, ready=None):
    """Answer requests until the process is stopped: one request per connection."""
    with Listener(("127.0.0.1", port), authkey=authkey) as listener:
        if ready is not None:
            ready.set()
        while True:
            try:
                connection = listener.accept()
            except OSError:
                return
            except Exception:  # a peer without the key, or one that hung up: keep serving
                continue
            with connection:
                try:
                    op, payload = connection.recv()
                    connection.send(("ok", worker.handle(op, payload)))
                except EOFError:
                    continue
                except Exception as error:  # reported to the ClientApp, which fails its reply
                    connection.send(("error", f"{type(error).__name__}: {error}"))


def serve_in_thread(worker, authkey):
    """The server-side worker in the calling process: `(port, thread)`."""
    from workbench.federated.federation import free_port

    port = free_port()
    ready = threading.Event()
    thread = threading.Thread(target=serve, args=(worker, port, authkey, ready), daemon=True)
    thread.start()
    ready.wait(10)
    return port, thread


def parse_fault(text, client):
    if not text:
        return None
    target, kind, factor = text.split(":")
    if int(target) != client:
        return None
    if kind not in ("scale", "sign_flip"):
        raise ValueError(f"unknown fault kind '{kind}' (scale, sign_flip)")
    return kind, float(factor)
