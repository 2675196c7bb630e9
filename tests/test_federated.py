"""The federated stage: the FedProx optimizer wrapper, the federation's apps importing no
TensorFlow, a client loading its data through the family's loader, every bad input refused
before any process starts, and (slow) a real Flower federation on loopback: end to end, a killed
SuperNode, differential privacy, a malicious client, and resume after the stage is killed."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli_env, run_cli, run_cli_cases


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


def test_proximal_built_by_fit_takes_its_mu_and_the_starting_weights():
    # No explicit build, set_mu or set_anchor: Keras builds the optimizer while tracing the
    # train step, and the constructor's mu and the weights before the first step must hold.
    import keras

    from workbench.optimizers import Proximal

    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = np.full((32, 1), 5.0, "float32")
    drifts = {}
    for mu in (0.0, 10.0):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        start = [w.copy() for w in model.get_weights()]
        optimizer = Proximal(keras.optimizers.SGD(0.1), mu=mu)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, epochs=10, batch_size=32, verbose=0)
        drifts[mu] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(model.get_weights(), start))
        for anchor, weight in zip(optimizer._anchors, start):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(anchor), weight)
    assert drifts[10.0] < 0.5 * drifts[0.0]


def test_the_federation_package_and_server_app_import_no_tensorflow():
    code = ("import sys, workbench.federated; heavy = {'flwr', 'tensorflow'} & set(sys.modules)\n"
            "import workbench.federated.server_app, workbench.federated.client_app\n"
            "print(sorted(heavy), 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]", "False"], result.stdout


def test_a_client_loads_the_run_data_through_the_family_loader():
    """The job file carries the family's plain data description and names its loader
    ("module:attribute"); a client resolves it and gets the training split the run loaded, in
    the same order, without a Recipe."""
    from workbench.federated import task
    from workbench.federated.partition import training_labels
    from workbench.recipe import load_recipe
    from workbench.supervised.task import SupervisedTask, data_spec

    recipe = load_recipe("digits_federated")
    run_data = SupervisedTask(recipe.task).load_data(recipe)
    job = json.loads(json.dumps({"data": data_spec(recipe),
                                 "loader": "workbench.supervised.federation:load_client_data"},
                                default=list))
    client_data = task.load_data(job)
    assert client_data.info.sizes == run_data.info.sizes
    assert np.array_equal(training_labels(client_data)[0], training_labels(run_data)[0])
    first = [next(iter(d.stable_train().batch(8)))[0].numpy() for d in (run_data, client_data)]
    assert np.array_equal(*first)


def test_a_loader_that_does_not_resolve_is_named():
    from workbench.federated.jobs import resolve

    for reference in ("workbench.no_such_module:load", "workbench.federated.jobs:no_such",
                      "no_colon"):
        with pytest.raises(ValueError, match="no_such|module:attribute"):
            resolve(reference)


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
            "secagg_krum": (["--set", "federated.secagg=true", "--set", "federated.strategy=krum"],
                            ["SecAgg+", "krum"]),
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


def _processes_of(run_dir):
    """Processes whose command line or environment names `run_dir` (the federation's SuperLink
    and SuperNodes carry FLWR_HOME inside it, the executors its job file)."""
    found = []
    needle = str(run_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in text:
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
    return found


@pytest.mark.slow
def test_secure_aggregation_trains_with_secagg_plus(tmp_path):
    out = tmp_path / "run"
    result = run_cli("digits_federated", "--fast", "--set", "federated.secagg=true",
                     "--set", "federated.central_baseline=false", "--stages", "federated",
                     "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "report.json").read_text())["stages"]["federated"][
        "strategies"]["fedavg"]["history"]
    assert [entry["round"] for entry in history] == [0, 1, 2]
    assert history[-1]["val_accuracy"] > history[0]["val_accuracy"] + 0.3
    assert history[-1]["answered"] == 3 and history[-1]["bytes_sent"] > 0
    log = (out / "federated" / "logs" / "run-fedavg.log").read_text()
    assert log.count("Secure aggregation completed") == 2


@pytest.mark.slow
def test_differential_privacy_reports_epsilon(tmp_path):
    out = tmp_path / "run"
    result = run_cli("digits_federated", "--fast", "--set", "federated.privacy=server_fixed",
                     "--set", "federated.noise_multiplier=1.0",
                     "--set", "federated.clipping_norm=1.0",
                     "--set", "federated.central_baseline=false", "--stages", "federated",
                     "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fedavg = json.loads((out / "report.json").read_text())["stages"]["federated"][
        "strategies"]["fedavg"]
    epsilons = [entry["epsilon"] for entry in fedavg["history"] if entry["round"] > 0]
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1] < 1e3
    assert fedavg["epsilon"] == pytest.approx(epsilons[-1])
    assert "epsilon" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_malicious_client_ruins_fedavg_but_not_the_robust_strategies(tmp_path):
    """Client 0 sends its update sign-flipped and scaled by 10 (test-only fault injection)."""
    out = tmp_path / "run"
    result = run_cli("digits_federated", "--fast", "--set", "federated.clients=5",
                     "--set", "federated.rounds=3", "--set", "federated.partition=iid",
                     "--set", "federated.compare=('fedmedian','krum','fedtrimmedavg')",
                     "--set", "federated.central_baseline=false", "--stages", "federated",
                     "--out", out, timeout=900,
                     env={"WORKBENCH_FEDERATED_FAULT": "0:sign_flip:10"})
    assert result.returncode == 0, result.stderr[-3000:]
    strategies = json.loads((out / "report.json").read_text())["stages"]["federated"][
        "strategies"]
    accuracy = {name: run["test_accuracy"] for name, run in strategies.items()}
    assert accuracy["fedavg"] < 0.5, accuracy
    for name in ("fedmedian", "krum", "fedtrimmedavg"):
        assert accuracy[name] > accuracy["fedavg"] + 0.3, accuracy


@pytest.mark.slow
def test_resume_after_the_stage_is_killed_continues_from_the_last_round(tmp_path):
    out = tmp_path / "run"
    args = ["digits_federated", "--fast", "--set", "federated.rounds=4",
            "--set", "federated.central_baseline=false", "--stages", "federated"]
    process = subprocess.Popen([sys.executable, "-m", "workbench.run", *args, "--out", str(out)],
                               cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    history_path = out / "federated" / "fedavg" / "history.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if history_path.is_file() and json.loads(history_path.read_text())[-1]["round"] >= 2:
            break
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    process.kill()
    process.wait()
    before = json.loads(history_path.read_text())
    # The kernel kills the stage's children at once; Flower's own SuperExec and ServerApp
    # processes notice their parent is gone within a second and shut down.
    deadline = time.monotonic() + 30
    while _processes_of(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_of(out), "a federation process outlived the killed stage"
    result = run_cli(*args, "--resume", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "report.json").read_text())["stages"]["federated"][
        "strategies"]["fedavg"]["history"]
    assert [entry["round"] for entry in history] == list(range(5))
    assert history[:len(before)] == before  # the rounds done before the kill are kept
    assert not _processes_of(out)


def _start_fast_run(out, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "workbench.run", "digits_federated", "--fast",
                             "--set", "federated.rounds=4", "--set",
                             "federated.central_baseline=false", "--stages", "federated", *extra,
                             "--out", str(out)], cwd=REPO, env=cli_env(**(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _gone_within(out, seconds):
    deadline = time.monotonic() + seconds
    while _processes_of(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _processes_of(out)


@pytest.mark.slow
def test_ctrl_c_mid_run_leaves_no_process(tmp_path):
    import signal

    out = tmp_path / "run"
    process = _start_fast_run(out)
    history_path = out / "federated" / "fedavg" / "history.json"
    deadline = time.monotonic() + 300
    while not history_path.is_file() and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0, output[-2000:]
    assert not _gone_within(out, 10), "a federation process outlived Ctrl-C"


@pytest.mark.slow
def test_a_failed_federation_leaves_no_process(tmp_path):
    out = tmp_path / "run"
    # An unknown fault kind makes client 0's executor fail while it loads.
    process = _start_fast_run(out, env={"WORKBENCH_FEDERATED_FAULT": "0:bogus:1"})
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output[-2000:]
    assert "executor 0 exited" in output, output[-2000:]
    assert not _gone_within(out, 10), "a federation process outlived the failed run"
