"""Strategies, fault tolerance and their bad input, through the CLI."""

import json
import signal
import time

import pytest

from conftest import free_port, run_cli, start_cli


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_single_device(tmp_path):
    args = ["digits", "--stages", "train,evaluate", "--epochs", "6", "--quiet",
            "--set", "early_stopping.enabled=false"]
    single = run_cli(*args, "--strategy", "default", "--out", tmp_path / "single")
    mirrored = run_cli(*args, "--strategy", "mirrored", "--out", tmp_path / "mirrored",
                       env={"WORKBENCH_CPU_DEVICES": 2})
    assert single.returncode == 0 and mirrored.returncode == 0, mirrored.stderr
    one, two = _report(tmp_path / "single"), _report(tmp_path / "mirrored")
    assert one["stages"]["train"]["replicas"] == 1
    assert two["stages"]["train"]["replicas"] == 2
    assert two["stages"]["train"]["global_batch_size"] == 2 * one["stages"]["train"]["global_batch_size"]
    # Half the steps per epoch at twice the batch, learning rate scaled linearly.
    assert two["stages"]["train"]["steps"] == pytest.approx(one["stages"]["train"]["steps"] / 2, abs=6)
    accuracy = [r["stages"]["evaluate"]["test_accuracy"] for r in (one, two)]
    assert min(accuracy) > 0.93, accuracy
    assert abs(accuracy[0] - accuracy[1]) < 0.03, accuracy


@pytest.mark.slow
def test_multi_worker_with_two_processes_on_loopback(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(start_cli("digits", "--strategy", "multi_worker", "--stages",
                                   "train,evaluate", "--epochs", "2", "--quiet",
                                   "--out", tmp_path / f"worker{index}",
                                   log=tmp_path / f"worker{index}.log",
                                   env={"TF_CONFIG": config}))
    try:
        codes = [p.wait(timeout=300) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], [log[-2000:] for log in logs]
    chief = _report(tmp_path / "worker0")
    assert chief["config"]["strategy"] == "multi_worker"
    assert chief["stages"]["train"]["replicas"] == 2 and chief["stages"]["train"]["epochs_run"] == 2
    # The chief writes the run; the other worker keeps its files elsewhere; both report the
    # same synchronized evaluation.
    assert not (tmp_path / "worker1").exists()
    accuracy_line = [line for line in logs[1].splitlines() if line.startswith("keras ")]
    assert accuracy_line and f"{chief['stages']['evaluate']['test_accuracy']:.4f}" in accuracy_line[0]


def test_training_killed_mid_run_resumes_from_its_last_epoch(tmp_path):
    out = tmp_path / "run"
    args = ["digits", "--stages", "train,evaluate", "--epochs", "12",
            "--set", "early_stopping.enabled=false", "--set", "backup_interval_seconds=0"]
    process = start_cli(*args, "--out", out, log=tmp_path / "first.log")
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    saved_epoch = 0
    while time.time() < deadline and process.poll() is None:
        try:
            saved_epoch = json.loads(metadata.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            saved_epoch = 0
        if saved_epoch >= 3:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 3 <= saved_epoch < 12, "the run should be killed part-way"

    resumed = run_cli(*args, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    train = _report(out)["stages"]["train"]
    assert train["epochs_run"] == 12
    resumed_from = train["resumed_from_epoch"]
    assert resumed_from >= saved_epoch  # no progress lost beyond the last saved epoch
    assert f"Epoch {resumed_from + 1}/12" in resumed.stdout
    assert f"Epoch {resumed_from}/12" not in resumed.stdout
    assert _report(out)["stages"]["evaluate"]["test_accuracy"] > 0.9
    assert not (out / "backup").exists(), "the backup is removed once training finishes"
    # The curves cover the whole training, the epochs before the interruption included.
    assert len(_report(out)["history"]["loss"]) == 12


@pytest.mark.slow
def test_resume_after_training_finished_reuses_the_model(tmp_path):
    out = tmp_path / "run"
    first = run_cli("digits", "--fast", "--stages", "train,evaluate", "--out", out)
    assert first.returncode == 0, first.stderr
    again = run_cli("digits", "--fast", "--stages", "train,evaluate", "--resume", out)
    assert again.returncode == 0, again.stderr
    assert "training had finished before the interruption" in again.stdout
    assert _report(out)["stages"]["train"]["epochs_run"] == 2


BAD = [
    (["--set", "search.tuner=annealing", "--stages", "search"], "unknown search.tuner 'annealing'"),
    (["--strategy", "multi_worker"], "needs the cluster in the TF_CONFIG"),
    (["--strategy", "tpu"], "strategy 'tpu': no TPU found"),
    (["--strategy", "mirored"], "unknown strategy 'mirored': did you mean 'mirrored'"),
    (["--set", "precision=float8"], "unknown precision 'float8'"),
    (["--resume", "nowhere"], "is not a run directory"),
]


BAD_IDS = [b[1].split("'")[0].strip() for b in BAD]
EMPTY_SEARCH_RECIPE = (
    "import keras\nfrom workbench import Recipe\n"
    "def build(hp):\n"
    "    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),\n"
    "                             keras.layers.Dense(10, activation='softmax')])\n"
    "RECIPE = Recipe(name='fixed', model=build)\n")


def test_every_bad_scale_input_is_one_line_and_exit_code_2(tmp_path):
    """The cases below, each also run in its own interpreter under `-m slow`, in one process
    (TensorFlow starts once). None sets an environment variable (the multi_worker case needs
    TF_CONFIG absent, as it is here), so they can share it."""
    from conftest import run_cli_cases

    recipe = tmp_path / "fixed.py"
    recipe.write_text(EMPTY_SEARCH_RECIPE)
    cases = {name: (["digits", *args], message) for name, (args, message) in zip(BAD_IDS, BAD)}
    cases["empty search space"] = ([str(recipe), "--stages", "search,train"],
                                   "the search space is empty")
    cwds = {name: tmp_path / f"case{index}" for index, name in enumerate(cases)}
    for cwd in cwds.values():
        cwd.mkdir()
    results = run_cli_cases([(argv, cwds[name]) for name, (argv, _) in cases.items()])
    problems = []
    for (name, (_, message)), result in zip(cases.items(), results):
        lines = result["stderr"].strip().splitlines()
        if result["code"] != 2 or len(lines) != 1 or message not in lines[0]:
            problems.append(f"{name}: exit {result['code']}, "
                            f"output {(result['stdout'] + result['stderr'])[-300:]!r}")
        if (cwds[name] / "saved_models").exists():
            problems.append(f"{name}: wrote {cwds[name] / 'saved_models'}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("args,message", BAD, ids=BAD_IDS)
def test_bad_scale_input_is_one_line_and_exit_code_2(cli, tmp_path, args, message):
    result = cli("digits", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "saved_models").exists()


@pytest.mark.slow
def test_empty_search_space_is_refused(cli, tmp_path):
    path = tmp_path / "fixed.py"
    path.write_text(EMPTY_SEARCH_RECIPE)
    result = cli(str(path), "--stages", "search,train", cwd=tmp_path)
    assert result.returncode == 2
    assert "the search space is empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "saved_models").exists()
