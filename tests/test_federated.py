"""The federated stage: the FedProx optimizer wrapper, every bad input refused before any
process starts, and (slow) a real Flower federation on loopback end to end."""

import json
import socket
import subprocess

import numpy as np
import pytest

from conftest import REPO, run_cli, run_cli_cases


def test_proximal_pulls_towards_the_anchor():
    import keras

    from workbench.optimizers import Proximal

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    optimizer = Proximal(keras.optimizers.SGD(0.1), mu=0.0)
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    start = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = np.full((32, 1), 5.0, "float32")

    def drift(mu):
        model.set_weights(start)
        optimizer.set_anchor()
        optimizer.set_mu(mu)
        model.fit(x, y, epochs=10, batch_size=32, verbose=0)
        return sum(float(np.sum((a - b) ** 2)) for a, b in zip(model.get_weights(), start))

    free, pulled = drift(0.0), drift(10.0)
    assert pulled < 0.5 * free
    # With mu = 0 the step is the inner optimizer's own.
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    plain.set_weights(start)
    plain.fit(x, y, epochs=10, batch_size=32, verbose=0)
    model.set_weights(start)
    optimizer.set_mu(0.0)
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    for a, b in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    restored = Proximal.from_config(optimizer.get_config())
    assert restored.mu == 0.0 and type(restored.inner_optimizer).__name__ == "SGD"


def test_bad_federated_inputs_exit_2_before_any_process(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = ["digits_federated", "--fast"]
        cases = {
            "strategy": (["--set", "federated.strategy=fedavgg"], ["fedavg"]),
            "compare": (["--set", "federated.compare=('krumm',)"], ["krum"]),
            "partition": (["--set", "federated.partition=dirichlett"], ["dirichlet"]),
            "alpha": (["--set", "federated.alpha=0"], ["alpha"]),
            "fraction": (["--set", "federated.fraction=1.5"], ["fraction"]),
            "min_clients": (["--set", "federated.min_clients=5"], ["min_clients"]),
            "privacy": (["--set", "federated.privacy=server_fixed"], ["clipping"]),
            "too_many": (["--set", "federated.clients=5000"], ["client"]),
            "with_train": (["--stages", "train,federated"], ["train"]),
            "port": (["--set", f"federated.port={port}"], ["in use"]),
            "simulation": (["--set", "federated.engine=simulation"], ["Ray"]),
        }
        argvs = {name: [*base, *extra, "--out", str(tmp_path / name)]
                 for name, (extra, _) in cases.items()}
        results = dict(zip(argvs, run_cli_cases(list(argvs.values()))))
    problems = []
    for name, result in results.items():
        message = result["stderr"].strip()
        if (result["code"] != 2 or len(message.splitlines()) != 1
                or not all(word in message for word in cases[name][1])):
            problems.append(f"{name}: exit {result['code']}, stderr {message[-300:]!r}")
        if (tmp_path / name).exists():
            problems.append(f"{name}: wrote {tmp_path / name}")
    assert not problems, "\n".join(problems)


def _flower_processes():
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines()
            if any(word in line for word in ("flower-superlink", "flower-supernode",
                                             "flower-superexec", "flwr-clientapp",
                                             "flwr-serverapp", "workbench.federated.executor"))]


@pytest.mark.slow
def test_digits_federated_fast_runs_on_a_real_federation(tmp_path):
    before = set(_flower_processes())
    out = tmp_path / "run"
    result = run_cli("digits_federated", "--fast", "--set", "federated.strategy=fedprox",
                     "--set", "federated.compare=('fedadam',)", "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    federated = report["stages"]["federated"]
    assert set(federated["strategies"]) == {"fedprox", "fedadam", "central"}
    history = federated["strategies"]["fedprox"]["history"]
    assert [entry["round"] for entry in history] == [0, 1, 2]
    assert history[-1]["val_accuracy"] > history[0]["val_accuracy"]
    assert history[-1]["answered"] == 3 and history[-1]["bytes_sent"] > 0
    sizes = [row["examples"] for row in federated["client_table"]]
    assert len(sizes) == 3 and all(size > 0 for size in sizes)
    assert (out / "federated.png").is_file() and "Federated training" in (
        out / "report.md").read_text()
    assert report["stages"]["evaluate"]["test_accuracy"] == pytest.approx(
        federated["test_accuracy"], abs=1e-6)
    assert set(_flower_processes()) <= before, "a federation process outlived the run"


@pytest.mark.slow
def test_a_supernode_killed_mid_run_does_not_stop_the_federation(tmp_path):
    before = set(_flower_processes())
    out = tmp_path / "run"
    result = run_cli("digits_federated", "--fast", "--set", "federated.rounds=3",
                     "--set", "federated.min_clients=2", "--set", "federated.round_timeout=60",
                     "--set", "federated.central_baseline=false", "--stages",
                     "federated,evaluate", "--out", out, timeout=600,
                     env={"WORKBENCH_FEDERATED_KILL": "2:1"})
    assert result.returncode == 0, result.stderr[-3000:]
    fedavg = json.loads((out / "report.json").read_text())["stages"]["federated"][
        "strategies"]["fedavg"]
    rounds = [(e["round"], e.get("answered"), e.get("failures")) for e in fedavg["history"]]
    assert rounds[1:] == [(1, 3, 0), (2, 2, 1), (3, 2, 0)]
    assert fedavg["failures"] == 1
    assert set(_flower_processes()) <= before, "a federation process outlived the run"
