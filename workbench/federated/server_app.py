"""The workbench's Flower ServerApp: runs the recipe's strategy on the federation.

The ServerApp runs in the SuperLink's `flwr-serverapp` process, imports no TensorFlow, and asks
the stage's process to evaluate the global model on the validation split after every round
(`workbench.federated.worker.serve`, over an authenticated local connection). It writes,
atomically after every round, the global weights and the round reached (`state.npz`, for
`--resume`) and the round-by-round record (`history.json`): validation metrics, the clients'
held-out metrics and their spread, replies and failures, bytes sent and received.
"""

from __future__ import annotations

import json
import os
import time
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from workbench.federated.jobs import read_job

PROGRESS = "workbench-federated:"  # lines for people; the stage shows these and logs the rest


def ask(address, authkey, op, payload):
    """One request to the stage's server-side worker: its reply, or RuntimeError."""
    host, port = address.rsplit(":", 1)
    with Client((host, int(port)), authkey=authkey) as connection:
        connection.send((op, payload))
        status, reply = connection.recv()
    if status != "ok":
        raise RuntimeError(reply)
    return reply



class Recorder:
    """The round-by-round record of one strategy's run, saved after every round."""

    def __init__(self, directory, total_rounds, start_round=0, history=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.total_rounds = total_rounds
        self.offset = start_round
        self.rounds = list(history or [])
        self.current = {}
        self.started = time.perf_counter()

    def on_train_replies(self, replies, weighted_by_key):
        """Flower's train-metrics aggregation hook: it sees every client's reply."""
        holdout = [float(r["metrics"]["holdout_accuracy"]) for r in replies
                   if "holdout_accuracy" in r["metrics"]]
        losses = [float(r["metrics"]["holdout_loss"]) for r in replies
                  if "holdout_loss" in r["metrics"]]
        self.current["replies"] = len(replies)
        if holdout:
            self.current.update(client_accuracy_min=min(holdout), client_accuracy_max=max(holdout),
                                client_accuracy_median=float(np.median(holdout)))
        if losses:
            self.current.update(client_loss_min=min(losses), client_loss_max=max(losses),
                                client_loss_median=float(np.median(losses)))
        return aggregate_metricrecords(replies, weighted_by_key)

    def on_exchange(self, sent, received, failed, bytes_sent, bytes_received):
        """One exchange of messages; a SecAgg+ round has four (setup, keys, masked updates,
        unmasking): the bytes add up, the counts are the last exchange's."""
        self.current.update(sampled=sent, answered=received, failures=failed,
                            bytes_sent=self.current.get("bytes_sent", 0) + bytes_sent,
                            bytes_received=self.current.get("bytes_received", 0)
                            + bytes_received)

    def save(self, server_round, arrays, metrics, epsilon=None):
        round_number = self.offset + server_round
        entry = {"round": round_number, **self.current, **metrics,
                 "seconds": time.perf_counter() - self.started}
        if epsilon is not None:
            entry["epsilon"] = epsilon
        self.current = {}
        if server_round == 0:
            entry = {"round": 0, **metrics}
        self.rounds.append(entry)
        weights = arrays.to_numpy_ndarrays()
        _atomic_savez(self.directory / "state.npz", round=np.int64(round_number),
                      **{f"w{i}": w for i, w in enumerate(weights)})
        _atomic_text(self.directory / "history.json", json.dumps(self.rounds, indent=1))
        return entry


class CountingGrid:
    """The ServerApp's Grid, as Flower's strategies use it, with two differences: replies are
    polled every 50 to 200 ms (Flower's own `send_and_receive` sleeps 3 s between polls, which
    a round of a small model would mostly spend waiting), and a message to a node that has left
    the federation (a killed SuperNode) stops being waited for. It counts what it sends and
    gets."""

    def __init__(self, grid, recorder, poll=0.05):
        self._grid = grid
        self._recorder = recorder
        self._poll = poll

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if not messages:  # e.g. the federated evaluation, which the train replies carry instead
            return []
        destinations = {}
        bytes_sent = 0
        for message in messages:
            bytes_sent += _array_bytes(message)
        ids = list(self._grid.push_messages(messages))
        for message_id, message in zip(ids, messages):
            destinations[message_id] = message.metadata.dst_node_id
        waiting = set(ids)
        replies = []
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        last_check = time.monotonic()
        idle = count = 0
        while waiting and time.monotonic() < deadline:
            for reply in self._grid.pull_messages(list(waiting)):
                replies.append(reply)
                waiting.discard(reply.metadata.reply_to_message_id)
            if not waiting:
                break
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                alive = set(self._grid.get_node_ids())
                waiting = {m for m in waiting if destinations[m] in alive}
            # Polled every 50 ms while replies come in, less often (up to 4x) while none do.
            time.sleep(self._poll * min(4, 1 + idle))
            idle = 0 if count != len(replies) else idle + 1
            count = len(replies)
        good = [r for r in replies if not r.has_error()]
        bytes_received = sum(_array_bytes(r) for r in good)
        self._recorder.on_exchange(len(messages), len(good), len(messages) - len(good),
                                   bytes_sent, bytes_received)
        return replies


def _array_bytes(message):
    return sum(record.count_bytes() for record in message.content.array_records.values())


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context):
    from workbench.federated.strategies import epsilon_of, make_strategy

    config = context.run_config
    job = read_job(config["job"])
    _end_with_the_stage(job.get("stage_pid"))
    settings = job["settings"]
    label = config["label"]
    directory = Path(job["directory"]) / label
    authkey = bytes.fromhex(job["authkey"])
    start_round, history = 0, []
    with np.load(job["initial_weights"]) as arrays:
        initial = [arrays[f"w{i}"] for i in range(len(arrays.files))]
    if config["resume"] and (directory / "state.npz").is_file():
        with np.load(directory / "state.npz") as state:
            start_round = int(state["round"])
            initial = [state[f"w{i}"] for i in range(len(state.files) - 1)]
        history = json.loads((directory / "history.json").read_text())
        history = [entry for entry in history if entry["round"] <= start_round]
    total = settings["rounds"]
    recorder = Recorder(directory, total, start_round, history)
    accounting = settings["privacy"] in ("server_fixed", "client_fixed") and \
        settings["noise_multiplier"] > 0
    strategy, accountant = make_strategy(
        config["strategy"], settings, train_metrics_aggr_fn=recorder.on_train_replies,
        weighted_by_key="unit-weight" if accounting else "num-examples")
    if start_round and accountant is not None:
        from workbench.federated.strategies import replay_accountant

        replay_accountant(accountant, settings, start_round)

    def evaluate(server_round, arrays):
        if server_round == 0 and start_round:
            return None
        metrics = ask(job["server_worker"], authkey, "evaluate",
                      {"weights": arrays.to_numpy_ndarrays()})
        values = {f"val_{key}": value for key, value in metrics.items()}
        entry = recorder.save(server_round, arrays, values, epsilon_of(accountant))
        shown = "  ".join(f"{key} {value:.4f}" for key, value in values.items())
        spread = ""
        if "client_accuracy_min" in entry:
            spread = (f"  clients' held-out accuracy {entry['client_accuracy_min']:.3f}.."
                      f"{entry['client_accuracy_max']:.3f}")
        failures = f"  failures {entry['failures']}" if entry.get("failures") else ""
        eps = f"  epsilon {entry['epsilon']:.2f}" if entry.get("epsilon") is not None else ""
        print(f"{PROGRESS} [{label}] round {entry['round']}/{total}  {shown}{spread}"
              f"{failures}{eps}", flush=True)
        return MetricRecord(values)

    if start_round >= total:
        print(f"{PROGRESS} [{label}] all {total} rounds were done before", flush=True)
        return
    if settings["secagg"]:
        _run_secagg(CountingGrid(grid, recorder), context, settings, config["strategy"],
                    initial, start_round, total, evaluate)
    else:
        strategy.start(grid=CountingGrid(grid, recorder), initial_arrays=ArrayRecord(initial),
                       num_rounds=total - start_round, timeout=settings["round_timeout"],
                       train_config=ConfigRecord({"round-offset": start_round}),
                       evaluate_fn=evaluate)
    _atomic_text(directory / "done.json", json.dumps({
        "rounds": total, "epsilon": epsilon_of(accountant), "strategy": config["strategy"],
        "seconds": time.perf_counter() - recorder.started}))


def _run_secagg(grid, context, settings, name, initial, start_round, total, evaluate):
    """FedAvg (or FedProx's proximal term on the clients) with Flower's SecAgg+ protocol: the
    server learns only the weighted sum of the clients' updates. SecAgg+ runs in Flower's
    workflow API, with its legacy strategy."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig
    from flwr.server.compat import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    def fit_config(server_round):
        config = {"server-round": server_round, "round-offset": start_round}
        if name == "fedprox":
            config["proximal-mu"] = settings["proximal_mu"]
        return config

    def evaluate_fn(server_round, parameters, _config):
        metrics = evaluate(server_round, ArrayRecord([np.asarray(p) for p in parameters]))
        return None if metrics is None else (float(metrics.get("val_loss", 0.0)), dict(metrics))

    strategy = FedAvg(fraction_fit=settings["fraction"], fraction_evaluate=0.0,
                      min_fit_clients=settings["min_clients"],
                      min_available_clients=settings["min_clients"],
                      initial_parameters=ndarrays_to_parameters(initial),
                      on_fit_config_fn=fit_config, evaluate_fn=evaluate_fn)
    legacy = LegacyContext(context=context, strategy=strategy, config=ServerConfig(
        num_rounds=total - start_round, round_timeout=settings["round_timeout"]))
    # Every sampled client shares its key with all others; 3 of 5 shares (60%) rebuild it.
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=1.0, reconstruction_threshold=0.6, timeout=settings["round_timeout"]))
    workflow(grid, legacy)


def _end_with_the_stage(pid):
    """The ServerApp runs under the SuperLink's SuperExec, not under the stage: if the stage's
    process dies (even by SIGKILL), end at once rather than wait on it; every round reached is
    already saved."""
    if not pid:
        return

    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    import threading

    threading.Thread(target=watch, daemon=True).start()


def _atomic_text(path, text):
    temp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    temp.write_text(text)
    os.replace(temp, path)


def _atomic_savez(path, **arrays):
    temp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    with open(temp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temp, path)
