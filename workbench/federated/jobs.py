"""The job file a federated run's processes share (`federated/job.json` in the run directory):
where the data comes from, which part of it each client holds, the initial model, and the
settings. The workers read it to load their client's data themselves; nothing but weights and
metrics crosses between processes afterwards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


def write_job(run_dir, directory, recipe, partition, initial_model, **extra):
    """Write `partition.npz` and `job.json` under `directory`; returns the job's path."""
    from workbench.federated.partition import data_options_for

    directory = Path(directory)
    arrays = {}
    for index, (own, held) in enumerate(zip(partition.clients, partition.holdout)):
        arrays[f"train_{index}"] = np.asarray(own, dtype=np.int64)
        arrays[f"holdout_{index}"] = np.asarray(held, dtype=np.int64)
    with run_dir.atomic(str(directory.relative_to(run_dir.path) / "partition.npz")) as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
    job = {
        "data": {"source": recipe.data, "options": data_options_for(recipe),
                 "seed": recipe.seed, "task": recipe.task},
        "partition": str((directory / "partition.npz").resolve()),
        "initial_model": str(Path(initial_model).resolve()),
        "settings": dataclasses.asdict(recipe.federated),
        "batch_size": recipe.batch_size,
        "seed": recipe.seed,
        "directory": str(directory.resolve()),
        **extra,
    }
    run_dir.write_text(str(directory.relative_to(run_dir.path) / "job.json"),
                       json.dumps(job, indent=2, default=list))
    return (directory / "job.json").resolve()


def load_job_data(job):
    """The run's data, loaded the way the run loaded it (same source, options and seed, so the
    same training split in the same order)."""
    from workbench.recipe import Recipe
    from workbench.tasks import task_class

    spec = job["data"]
    recipe = Recipe(name="federated-client", model=None, data=spec["source"],
                    data_options=dict(spec["options"]), task=spec["task"], seed=spec["seed"])
    return task_class(spec["task"])(spec["task"]).load_data(recipe)


def load_partition(job, client):
    with np.load(job["partition"]) as arrays:
        return arrays[f"train_{client}"], arrays[f"holdout_{client}"]
