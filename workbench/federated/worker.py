"""The warm Keras side of one federated client (or of the server's evaluation).

`python -m workbench.federated.worker JOB CLIENT PORT` loads the run's data source, keeps its
client's part of the training split (workbench.federated.partition), loads the run's initial
model with the recipe's optimizer, loss and regularizer (`initial.keras`), and then answers the
ClientApp's requests on 127.0.0.1:PORT (an authenticated `multiprocessing.connection`): `fit`
trains the received global weights locally and returns the new ones, `evaluate` measures them.
The server's evaluation (`Worker` with the validation split) runs in the stage's own process.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np

# Test-only fault injection for the robustness comparison: "CLIENT:KIND:FACTOR", KIND being
# `scale` (the update times FACTOR) or `sign_flip` (the update times -FACTOR).
FAULT_ENV = "WORKBENCH_FEDERATED_FAULT"


class Worker:
    """Trains and evaluates one Keras model on one client's data (or the server's split)."""

    def __init__(self, model, train=None, holdout=None, train_examples=0, batch_size=32,
                 local_epochs=1, local_steps=0, seed=0, fault=None):
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
        self.lock = threading.Lock()
        self.steps_per_round = (local_steps or local_epochs * max(
            1, math.ceil(self.train_examples / batch_size))) if train is not None else 0
        optimizer = model.optimizer
        if train is not None and not isinstance(optimizer, Proximal):
            # FedProx's proximal term around the recipe's own optimizer; mu = 0 unless the
            # strategy sends one, which leaves the step unchanged.
            optimizer = Proximal(optimizer, mu=0.0)
            model.compile(optimizer=optimizer, loss=model.loss, metrics=_metrics_of(model),
                          jit_compile=getattr(model, "jit_compile", False))
        if train is not None:
            optimizer.build(model.trainable_variables)
            # Clients start every round from the optimizer's initial state (moments at zero),
            # with the step count of the global round so the recipe's schedule runs on.
            self.initial_optimizer_state = [np.array(v.numpy()) for v in optimizer.variables]

    def handle(self, op, payload):
        with self.lock:
            if op == "ping":
                return {"ok": True}
            if op == "evaluate":
                self._set_weights(payload["weights"])
                return self._evaluate(self.holdout, "")
            if op == "fit":
                return self._fit(payload["weights"], payload.get("config", {}))
        raise ValueError(f"unknown request '{op}'")

    def _set_weights(self, weights):
        self.model.set_weights([np.asarray(w) for w in weights])

    def _evaluate(self, dataset, prefix):
        if dataset is None:
            return {}
        values = self.model.evaluate(dataset, verbose=0, return_dict=True)
        return {f"{prefix}{name}": float(value) for name, value in values.items()}

    def _fit(self, weights, config):
        started = time.perf_counter()
        self._set_weights(weights)
        metrics = self._evaluate(self.holdout, "holdout_")
        optimizer = self.model.optimizer
        for variable, value in zip(optimizer.variables, self.initial_optimizer_state):
            variable.assign(value)
        server_round = int(config.get("server-round", 1)) + int(config.get("round-offset", 0))
        optimizer.iterations.assign((server_round - 1) * self.steps_per_round)
        optimizer.set_mu(float(config.get("proximal-mu", 0.0)))
        optimizer.set_anchor()
        seed = self.seed + 1000 * server_round
        if self.local_steps:
            history = self.model.fit(self.train(seed).repeat(), epochs=1,
                                     steps_per_epoch=self.local_steps, verbose=0)
        else:
            history = self.model.fit(self.train(seed), epochs=self.local_epochs, verbose=0)
        new = self.model.get_weights()
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


def client_worker(job, client):
    """The worker of client `client` of the run described by `job` (the stage's job.json)."""
    from workbench import components
    from workbench.federated.partition import client_dataset
    from workbench.federated.jobs import load_job_data, load_partition

    data = load_job_data(job)
    positions, holdout = load_partition(job, client)
    settings = job["settings"]
    batch_size = job["batch_size"]
    model = components.load_model(job["initial_model"])
    import tensorflow as tf

    own = client_dataset(data, positions)

    def train(seed):
        return own.shuffle(max(1, len(positions)), seed=seed, reshuffle_each_iteration=True) \
            .batch(batch_size).prefetch(tf.data.AUTOTUNE)

    held = (client_dataset(data, holdout).batch(batch_size).prefetch(tf.data.AUTOTUNE)
            if len(holdout) else None)
    return Worker(model, train=train, holdout=held, train_examples=len(positions),
                  batch_size=batch_size, local_epochs=settings["local_epochs"],
                  local_steps=settings["local_steps"], seed=job["seed"] + client,
                  fault=parse_fault(os.environ.get(FAULT_ENV, ""), client))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    job_path, client, port = argv[0], int(argv[1]), int(argv[2])
    from workbench.run import configure_environment

    configure_environment(debug=False)
    import keras

    job = json.loads(Path(job_path).read_text())
    keras.utils.set_random_seed(job["seed"] + client)
    worker = client_worker(job, client)
    authkey = bytes.fromhex(job["authkey"])
    print(f"worker of client {client}: {worker.train_examples} training examples, serving on "
          f"127.0.0.1:{port}", flush=True)
    serve(worker, port, authkey)


if __name__ == "__main__":
    main()
