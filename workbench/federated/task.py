"""What a federated client loads: its data, the model, and the Keras workers that train them
(Flower's quickstart apps keep this in their `task.py`, beside `server_app.py` and
`client_app.py`).

A client process reads the job file (workbench.federated.jobs) and loads the run's data through
the loader the task family named there (`job["loader"]`, `"module:attribute"`, called with the
family's plain data description `job["data"]`): the same source, options and seed as the run,
so the same training split in the same order. It keeps its own positions of that split
(workbench.federated.partition) and loads the initial model the family compiled
(`initial.keras`: the recipe's model with its optimizer, loss, metrics and regularizer). No
Recipe and no family is imported here.

TensorFlow is imported inside the functions: the ClientApp sets the process up first.
"""

from __future__ import annotations

import os
import threading

from workbench.federated.jobs import load_partition, read_job, resolve

# {client: Worker} of the clients whose tasks this process runs (the warm executor fills it).
LOCAL_WORKERS: dict = {}


def worker_of(node):
    """The worker of the SuperNode whose `node_config` is `node` (`client`, `job`); loaded here
    for this one message when the process is Flower's own per-message ClientApp process."""
    client = int(node["client"])
    if client not in LOCAL_WORKERS:
        from workbench.quiet import configure_environment

        configure_environment(debug=False)
        LOCAL_WORKERS.update(client_workers(read_job(node["job"]), [client]))
    return LOCAL_WORKERS[client]


def load_data(job):
    """The run's data, through the family's loader named in the job."""
    return resolve(job["loader"])(job["data"])


def load_model(job):
    """The initial model the family compiled: the recipe's model, optimizer, loss, metrics."""
    from workbench import components

    return components.load_model(job["initial_model"])


def local_training_data(data, positions, batch_size):
    """`train(seed)`: a client's training examples (`positions`), batched and shuffled anew
    with `seed` every epoch."""
    import tensorflow as tf

    from workbench.federated.partition import client_dataset

    own = client_dataset(data, positions)
    size = max(1, len(positions))

    def train(seed):
        return own.shuffle(size, seed=seed, reshuffle_each_iteration=True) \
            .batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return train


def client_workers(job, clients):
    """The workers of `clients` of the run described by `job` (the stage's job.json), in this
    process: the run's data is loaded once and one model (with the recipe's optimizer, loss and
    regularizer) serves them all in turn, each client training from the weights it is sent."""
    import tensorflow as tf

    from workbench.federated.partition import client_dataset
    from workbench.federated.worker import FAULT_ENV, Worker, parse_fault

    data = load_data(job)
    settings = job["settings"]
    batch_size = job["batch_size"]
    model = load_model(job)
    lock = threading.Lock()
    workers = {}
    for client in clients:
        positions, holdout = load_partition(job, client)
        train = local_training_data(data, positions, batch_size)
        held = (client_dataset(data, holdout).batch(batch_size).prefetch(tf.data.AUTOTUNE)
                if len(holdout) else None)
        workers[client] = Worker(model, train=train, holdout=held, train_examples=len(positions),
                                 batch_size=batch_size, local_epochs=settings["local_epochs"],
                                 local_steps=settings["local_steps"], seed=job["seed"] + client,
                                 fault=parse_fault(os.environ.get(FAULT_ENV, ""), client),
                                 lock=lock,
                                 schedule_steps_per_round=job.get("schedule_steps_per_round"))
    return workers
