"""The federation's training, for a task family's `federated`: the recipe's model trained
across clients on a real Flower federation, every strategy asked for on the same federation,
and the same model trained centrally on the same budget, for comparison.

The family hands it what it decides: the loss and metrics (`ctx.task.compile_args`, compiled
into the initial model the clients load), and its data's plain description with the loader
that reads it in a client's process (workbench.federated.jobs). The result is plain
(`FederatedResult`); the family turns it into what its stage takes. The global model of
`federated.strategy` becomes the run's model, so `evaluate`, `export`, `verify` and the
compression stages work after `federated` unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FEDERATED_DIR = "federated"


@dataclass
class FederatedResult:
    """What `federated` returns: the main strategy's global model, its curves (none per epoch:
    the rounds are in `results`), and the results for the report."""

    model: Any
    history: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)


def strategies_of(settings):
    """The strategies to run, the recipe's own first, without repeats."""
    names = [settings.strategy]
    names += [name for name in settings.compare if name not in names]
    return names


def federated(ctx, partition, data_spec, loader):
    """Train on the federation; returns a `FederatedResult` with the main strategy's global
    model.

    Args:
        ctx: the run's `RunContext` (its recipe, data, task and run directory).
        partition: the clients' `Partition` of the training split (workbench.federated.checks).
        data_spec: the family's JSON-able description of the run's data, for `loader`.
        loader: `"module:attribute"` of the family's function that loads the run's data from
            `data_spec` in a client's process (the same training split in the same order).
    """
    from workbench.federated import federation as flower
    from workbench.federated.jobs import write_job
    from workbench.federated.partition import stats_markdown, stats_rows
    from workbench.federated.worker import Worker, serve_in_thread
    from workbench.training import compile_model

    recipe, settings = ctx.recipe, ctx.recipe.federated
    directory = ctx.run_dir / FEDERATED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    data = ctx.data
    class_names = getattr(data.info, "class_names", None)
    ctx.say(f"  {settings.clients} clients, partition {settings.partition}"
            + (f" (alpha {settings.alpha})" if settings.partition == "dirichlet" else "")
            + f", {settings.rounds} rounds of {_local_budget(settings)}, strategies "
            + ", ".join(strategies_of(settings)))
    ctx.say(_indent(stats_markdown(partition, class_names)))

    steps, epochs, per_round = schedule_span(recipe, settings, data)
    model = compile_model(ctx, dataclasses.replace(recipe, epochs=epochs), steps)
    with ctx.run_dir.atomic(f"{FEDERATED_DIR}/initial.keras") as temp:
        model.save(temp)
    initial_weights = directory / "initial_weights.npz"
    with ctx.run_dir.atomic(f"{FEDERATED_DIR}/initial_weights.npz") as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, **{f"w{i}": w for i, w in enumerate(model.get_weights())})

    authkey = secrets.token_hex(16)
    val = data.batches("val", recipe.batch_size)
    server_port, _ = serve_in_thread(Worker(model, holdout=val), bytes.fromhex(authkey))
    job_path = write_job(ctx.run_dir, directory, partition, directory / "initial.keras",
                         data=data_spec, loader=loader, settings=settings,
                         batch_size=recipe.batch_size, seed=recipe.seed,
                         authkey=authkey, server_worker=f"127.0.0.1:{server_port}",
                         schedule_steps_per_round=per_round,
                         initial_weights=str(initial_weights.resolve()), stage_pid=os.getpid())

    runs = {}
    started = time.perf_counter()
    with flower.Federation(directory, job_path, settings.clients, superlink_port=settings.port,
                           say=ctx.say) as federation:
        federation.start(executors=settings.executors or os.cpu_count() or 1)
        ready_seconds = time.perf_counter() - started
        # Every strategy runs at once on the one federation (a SuperLink serves many runs; a
        # SuperNode takes the next run's message as soon as it has answered one), so the
        # rounds' waiting on Flower's polling overlaps; their results do not mix.
        names = strategies_of(settings)
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = {name: pool.submit(_run_strategy, ctx, federation, job_path, name,
                                         settings) for name in names}
            for name in names:
                runs[name] = futures[name].result()
    total_seconds = time.perf_counter() - started

    results = {"clients": settings.clients, "rounds": settings.rounds,
               "partition": settings.partition, "strategy": settings.strategy,
               "privacy": settings.privacy, "federation_start_seconds": ready_seconds,
               "federation_seconds": total_seconds, "client_table": stats_rows(partition,
                                                                               class_names)}
    test = data.batches("test", recipe.batch_size)
    for name, run in runs.items():
        model.set_weights(run["weights"])
        values = model.evaluate(test, verbose=0, return_dict=True)
        run["test"] = {f"test_{key}": float(value) for key, value in values.items()}
    if settings.central_baseline:
        runs["central"] = _central(ctx, recipe, settings, test, partition)
    model.set_weights(runs[settings.strategy]["weights"])
    results["strategies"] = {name: _summary(run) for name, run in runs.items()}
    main = results["strategies"][settings.strategy]
    results.update({key: value for key, value in main.items() if key.startswith("test_")})
    if "central" in runs:
        central_accuracy = runs["central"]["test"].get("test_accuracy")
        if central_accuracy is not None and main.get("test_accuracy") is not None:
            results["accuracy_gap_to_central"] = central_accuracy - main["test_accuracy"]
    ctx.sections["federated"] = _markdown(results, stats_markdown(partition, class_names))
    _plot(ctx, runs, settings)
    return FederatedResult(model=model, history={}, results=results)


def schedule_span(recipe, settings, data):
    """`(steps per epoch, epochs, steps per round)` the recipe's schedule is compiled over. It
    spans the whole federation: a client's step count runs on from round to round
    (workbench.federated.worker), for rounds x local epochs of an average client's data (or
    rounds x local steps)."""
    if settings.local_steps:
        return settings.local_steps, settings.rounds, settings.local_steps
    steps = max(1, math.ceil(data.info.sizes["train"] / settings.clients / recipe.batch_size))
    return steps, settings.rounds * settings.local_epochs, steps * settings.local_epochs


def _local_budget(settings):
    return (f"{settings.local_steps} local steps" if settings.local_steps
            else f"{settings.local_epochs} local epoch{'s' if settings.local_epochs > 1 else ''}")


def _indent(text):
    return "\n".join(f"    {line}" for line in text.splitlines())


def _run_strategy(ctx, federation, job_path, name, settings):
    from workbench.federated.federation import write_app
    from workbench.federated.server_app import PROGRESS

    directory = ctx.run_dir / FEDERATED_DIR
    out = directory / name
    done = out / "done.json"
    if ctx.resuming and done.is_file():
        ctx.say(f"  [{name}] finished before; kept")
    else:
        clientapp = {"client_fixed": "client_app_fixed_clipping",
                     "client_adaptive": "client_app_adaptive_clipping"}.get(settings.privacy,
                                                                             "client_app")
        if settings.secagg:
            clientapp = "client_app_secagg"
        app = write_app(directory / "app", clientapp=f"workbench.federated.client_app:{clientapp}")
        started = time.perf_counter()

        kill = _kill_plan()

        def show(line):
            if PROGRESS in line:
                text = line.split(PROGRESS, 1)[1].strip()
                ctx.say("  " + text)
                if kill and f"round {kill[1]}/" in text:
                    federation.kill_supernode(kill[0])
                    ctx.say(f"  (SuperNode of client {kill[0]} killed)")

        code = federation.run(app, {"job": str(job_path), "strategy": name, "label": name,
                                    "resume": bool(ctx.resuming)},
                              f"run-{name}.log", on_line=show,
                              timeout=settings.round_timeout * (settings.rounds + 2))
        if code != 0 or not done.is_file():
            raise RuntimeError(f"the Flower run of strategy '{name}' failed (exit code {code}); "
                               f"see {directory / 'logs' / f'run-{name}.log'}")
        ctx.say(f"  [{name}] {settings.rounds} rounds in {time.perf_counter() - started:.1f} s")
    history = json.loads((out / "history.json").read_text())
    with np.load(out / "state.npz") as state:
        weights = [state[f"w{i}"] for i in range(len(state.files) - 1)]
    return {"history": history, "weights": weights,
            "done": json.loads(done.read_text())}


def _kill_plan():
    """Test-only fault injection: `WORKBENCH_FEDERATED_KILL=CLIENT:ROUND` SIGKILLs that client's
    SuperNode as soon as the global model of ROUND is evaluated, while the next round starts."""
    import os

    text = os.environ.get("WORKBENCH_FEDERATED_KILL", "")
    if not text:
        return None
    client, round_number = text.split(":")
    return int(client), int(round_number)


def _central(ctx, recipe, settings, test, partition):
    """The same model trained centrally, on the examples the clients train on (their training
    parts pooled; what they hold out stays out), for the same epochs in total."""
    import tensorflow as tf

    from workbench.data.core import shuffle_buffer
    from workbench.federated.partition import client_dataset
    from workbench.training import compile_model

    data = ctx.data
    pooled = np.concatenate([np.asarray(c, dtype=np.int64) for c in partition.clients])
    steps = max(1, math.ceil(len(pooled) / recipe.batch_size))
    epochs = settings.rounds * settings.local_epochs if not settings.local_steps else max(
        1, round(settings.rounds * settings.local_steps * settings.clients / steps))
    started = time.perf_counter()
    model = compile_model(ctx, dataclasses.replace(recipe, epochs=epochs), steps)
    train = client_dataset(data, pooled).shuffle(
        shuffle_buffer(len(pooled)), seed=recipe.seed, reshuffle_each_iteration=True) \
        .batch(recipe.batch_size).prefetch(tf.data.AUTOTUNE)
    history = model.fit(train, validation_data=data.batches("val", recipe.batch_size),
                        epochs=epochs, verbose=0, shuffle=False)  # the dataset reshuffles
    values = model.evaluate(test, verbose=0, return_dict=True)
    ctx.say(f"  [central] {epochs} epochs on the clients' pooled training parts in "
            f"{time.perf_counter() - started:.1f} s: test accuracy "
            f"{values.get('accuracy', float('nan')):.4f}")
    rounds = [{"epoch": i + 1, **{key: float(v[i]) for key, v in history.history.items()}}
              for i in range(len(history.epoch))]
    return {"history": rounds, "test": {f"test_{k}": float(v) for k, v in values.items()},
            "epochs": epochs, "seconds": time.perf_counter() - started}


def _summary(run):
    if "epochs" in run:
        return {**run["test"], "epochs": run["epochs"], "seconds": run["seconds"]}
    history = [entry for entry in run["history"] if entry["round"] > 0]
    summary = {**run["test"], "rounds": len(history),
               "seconds": run["done"].get("seconds"),
               "failures": sum(entry.get("failures", 0) for entry in history),
               "bytes_sent_per_round": float(np.mean([e.get("bytes_sent", 0) for e in history]))
               if history else 0.0,
               "bytes_received_per_round": float(np.mean([e.get("bytes_received", 0)
                                                          for e in history])) if history else 0.0}
    if run["done"].get("epsilon") is not None:
        summary["epsilon"] = run["done"]["epsilon"]
    summary["history"] = run["history"]
    return summary


def _markdown(results, client_table):
    lines = [f"## Federated training ({results['clients']} clients, {results['partition']} "
             f"partition, {results['rounds']} rounds, privacy {results['privacy']})", "",
             "| run | test accuracy | test loss | rounds / epochs | failures | sent per round "
             "| received per round | epsilon | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for name, run in results["strategies"].items():
        sent = run.get("bytes_sent_per_round")
        received = run.get("bytes_received_per_round")
        lines.append(
            f"| {name} | {_fmt(run.get('test_accuracy'))} | {_fmt(run.get('test_loss'))} | "
            f"{run.get('rounds', run.get('epochs', '-'))} | {run.get('failures', '-')} | "
            f"{_kib(sent)} | {_kib(received)} | {_fmt(run.get('epsilon'), '.2f')} | "
            f"{_fmt(run.get('seconds'), '.1f')} |")
    lines += ["", "Clients (training split; held out: evaluated every round, never trained on):",
              "", client_table, "", "![federated.png](federated.png)", ""]
    return "\n".join(lines)


def _fmt(value, spec=".4f"):
    return "-" if value is None else format(value, spec)


def _kib(value):
    return "-" if value is None else f"{value / 1024:.1f} KiB"


def _plot(ctx, runs, settings):
    """federated.png: validation accuracy per round for every strategy (central training per
    equivalent epoch), the clients' held-out accuracy spread, and bytes sent per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, run in runs.items():
        if name == "central":
            per_round = max(1, settings.local_epochs)
            xs = [entry["epoch"] / per_round for entry in run["history"]]
            ys = [entry.get("val_accuracy") for entry in run["history"]]
            axes[0].plot(xs, ys, "k--", label="central (same epochs)")
            continue
        history = run["history"]
        xs = [entry["round"] for entry in history]
        axes[0].plot(xs, [entry.get("val_accuracy") for entry in history], marker="o",
                     label=name)
        spread = [entry for entry in history if "client_accuracy_min" in entry]
        if spread:
            axes[1].fill_between([e["round"] for e in spread],
                                 [e["client_accuracy_min"] for e in spread],
                                 [e["client_accuracy_max"] for e in spread], alpha=0.2)
            axes[1].plot([e["round"] for e in spread],
                         [e["client_accuracy_median"] for e in spread], label=name)
        sent = [entry for entry in history if "bytes_sent" in entry]
        axes[2].plot([e["round"] for e in sent],
                     [(e["bytes_sent"] + e["bytes_received"]) / 1024 for e in sent],
                     marker=".", label=name)
    axes[0].set(title="global model, validation accuracy", xlabel="round", ylabel="accuracy")
    axes[1].set(title="clients' held-out accuracy (median, min..max)", xlabel="round")
    axes[2].set(title="bytes sent + received per round", xlabel="round", ylabel="KiB")
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    fig.tight_layout()
    with ctx.run_dir.atomic("federated.png") as temp:
        fig.savefig(temp, dpi=110, format="png")
    plt.close(fig)
