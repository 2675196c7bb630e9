"""The job file a federated run's processes share (`federated/job.json` in the run directory):
the family's plain description of the data and the loader that reads it, which part of the
training split each client holds, the initial model, and the settings. The clients read it to
load their data themselves; nothing but weights and metrics crosses between processes
afterwards.

The loader is named the way Flower names its apps, `"module:attribute"` (for the supervised
family `"workbench.supervised.federation:load_client_data"`): a client resolves it with
`resolve` and calls it with the job's `data`, so the federation never imports a family.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np


def write_job(run_dir, directory, partition, initial_model, *, data, loader, settings,
              batch_size, seed, **extra):
    """Write `partition.npz` and `job.json` under `directory`; returns the job's path.

    Args:
        run_dir: the run's `RunDir` (files are published atomically).
        directory: the federation's folder inside the run directory.
        partition: the clients' `Partition` of the training split.
        initial_model: the compiled initial model's `.keras` file.
        data: the family's JSON-able description of the run's data, handed to `loader`.
        loader: `"module:attribute"` of the family's function that loads the run's data from
            `data` (the same training split, in the same order, as the run loaded).
        settings: the run's `FederatedSettings`.
        batch_size, seed: the run's.
        extra: more JSON-able entries (the server worker's address and key, ...).
    """
    resolve(loader)  # a reference that does not resolve fails here, before any process starts
    directory = Path(directory)
    arrays = {}
    for index, (own, held) in enumerate(zip(partition.clients, partition.holdout)):
        arrays[f"train_{index}"] = np.asarray(own, dtype=np.int64)
        arrays[f"holdout_{index}"] = np.asarray(held, dtype=np.int64)
    with run_dir.atomic(str(directory.relative_to(run_dir.path) / "partition.npz")) as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
    job = {
        "data": data,
        "loader": loader,
        "partition": str((directory / "partition.npz").resolve()),
        "initial_model": str(Path(initial_model).resolve()),
        "settings": dataclasses.asdict(settings),
        "batch_size": batch_size,
        "seed": seed,
        "directory": str(directory.resolve()),
        **extra,
    }
    run_dir.write_text(str(directory.relative_to(run_dir.path) / "job.json"),
                       json.dumps(job, indent=2, default=list))
    return (directory / "job.json").resolve()


def read_job(path):
    return json.loads(Path(path).read_text())


def resolve(reference):
    """The object that `reference` (`"module:attribute"`, Flower's convention) names."""
    module_name, _, attribute = str(reference).partition(":")
    if not module_name or not attribute:
        raise ValueError(f"a loader is named 'module:attribute', got '{reference}'")
    try:
        found = importlib.import_module(module_name)
        for name in attribute.split("."):
            found = getattr(found, name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"the federation's data loader '{reference}' does not resolve: "
                         f"{type(error).__name__}: {error}") from None
    return found


def load_partition(job, client):
    with np.load(job["partition"]) as arrays:
        return arrays[f"train_{client}"], arrays[f"holdout_{client}"]
