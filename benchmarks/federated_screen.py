"""Screening federated settings without a federation: the `federated` stage's own client workers
(`workbench.federated.worker.Worker`: the recipe's model, optimizer, schedule and loss, each
client's optimizer state kept from round to round) and the stage's partition, with FedAvg's
weighted mean (or FedAvgM's server momentum) computed in this process, every client in every
round. Seconds per setting instead of minutes, since Flower's polling and process start-up are
left out; the chosen settings are then measured on the real federation with
`python -m workbench.run digits_federated`. Prints one JSON line per setting: test accuracy of
the global model after each round, its accuracy on the clients' pooled training examples, and
central training's test accuracy on those examples (`--verbose`: each round's client update
norms and training accuracy, on stderr).

    python benchmarks/federated_screen.py [--recipe digits_federated] [KEY=VALUE ...]
    python benchmarks/federated_screen.py federated.local_epochs=5 learning_rate=0.1
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def screen(recipe_name, assignments, server_momentum=0.0, server_lr=1.0, central=True,
           fresh_optimizer=False, verbose=False):
    import numpy as np
    import tensorflow as tf

    import keras
    from workbench.context import RunContext
    from workbench.federated.partition import client_dataset, partition_training_split
    from workbench.federated.training import _central, schedule_span
    from workbench.federated.task import local_training_data
    from workbench.federated.worker import Worker
    from workbench.recipe import apply_overrides, load_recipe
    import workbench.supervised  # noqa: F401  (registers the family)
    from workbench.tasks import resolve_task
    from workbench.training import compile_model

    recipe = apply_overrides(load_recipe(recipe_name), list(assignments))
    settings = recipe.federated
    task = resolve_task(recipe)
    data = task.load_data(recipe)
    ctx = RunContext(recipe=recipe, run_dir=None, verbose=0, data=data,
                     strategy=tf.distribute.get_strategy(), task=task)
    partition = partition_training_split(data, recipe, settings, recipe.seed)
    keras.utils.set_random_seed(recipe.seed)
    steps, epochs, per_round = schedule_span(recipe, settings, data)
    model = compile_model(ctx, dataclasses.replace(recipe, epochs=epochs), steps)
    test = data.batches("test", recipe.batch_size)
    workers = [Worker(model, train=local_training_data(data, positions, recipe.batch_size),
                      train_examples=len(positions), batch_size=recipe.batch_size,
                      local_epochs=settings.local_epochs, local_steps=settings.local_steps,
                      seed=recipe.seed + client, schedule_steps_per_round=per_round)
               for client, positions in enumerate(partition.clients)]
    weights = [np.array(w) for w in model.get_weights()]
    velocity = [np.zeros_like(w) for w in weights]
    accuracy = []
    started = time.perf_counter()
    mu = settings.proximal_mu if settings.strategy == "fedprox" else 0.0
    for server_round in range(1, settings.rounds + 1):
        replies = [w.handle("fit", {"weights": weights, "config": {
            "server-round": server_round, "proximal-mu": mu}}) for w in workers]
        if fresh_optimizer:  # FedAvg as published: every round starts from a fresh optimizer
            for w in workers:
                w.optimizer_state.clear()
        sizes = np.array([r["metrics"]["num-examples"] for r in replies], dtype=np.float64)
        if verbose:  # how far each client moved from the global weights, and its fit
            moved = [float(np.sqrt(sum(np.sum((np.asarray(a) - b) ** 2)
                                       for a, b in zip(r["weights"], weights)))) for r in replies]
            print(server_round, "update norms", np.round(moved, 3), "client train acc",
                  np.round([r["metrics"].get("train_accuracy", -1) for r in replies], 3),
                  file=sys.stderr)
        mean = [sum(s * np.asarray(r["weights"][i]) for s, r in zip(sizes, replies)) / sizes.sum()
                for i in range(len(weights))]
        # FedAvgM (Hsu et al. 2019): the mean update as a pseudo-gradient with server momentum.
        for i, (w, m) in enumerate(zip(weights, mean)):
            velocity[i] = server_momentum * velocity[i] + (w - m)
            weights[i] = w - server_lr * velocity[i]
        model.set_weights(weights)
        accuracy.append(round(float(model.evaluate(test, verbose=0, return_dict=True)
                                    ["accuracy"]), 4))
    pooled = np.concatenate(partition.clients)
    train_accuracy = float(model.evaluate(client_dataset(data, pooled).batch(256), verbose=0,
                                          return_dict=True)["accuracy"])
    result = {"recipe": recipe_name, "settings": list(assignments),
              "train_accuracy": round(train_accuracy, 4),
              "fresh_optimizer": fresh_optimizer, "server_momentum": server_momentum,
              "server_lr": server_lr, "test_accuracy": accuracy,
              "seconds": round(time.perf_counter() - started, 1)}
    if central:  # the stage's own baseline: the clients' training parts pooled
        keras.utils.set_random_seed(recipe.seed)
        result["central_same_examples"] = round(
            _central(ctx, recipe, settings, test, partition)["test"]["test_accuracy"], 4)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="digits_federated")
    parser.add_argument("--server-momentum", type=float, default=0.0)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--no-central", action="store_true")
    parser.add_argument("--fresh-optimizer", action="store_true",
                        help="reset every client's optimizer state at the start of each round")
    parser.add_argument("--verbose", action="store_true",
                        help="print each round's client update norms and training accuracy")
    parser.add_argument("assignments", nargs="*", help="--set items of the recipe")
    args = parser.parse_args(argv)
    print(json.dumps(screen(args.recipe, args.assignments, args.server_momentum, args.server_lr,
                            central=not args.no_central,
                            fresh_optimizer=args.fresh_optimizer, verbose=args.verbose)),
          flush=True)


if __name__ == "__main__":
    main()
