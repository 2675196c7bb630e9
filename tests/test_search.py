"""Hyperparameter search on KerasTuner: every tuner kind, resume, chief + workers on loopback."""

import json
import signal
import time

import pytest

from conftest import free_port, run_cli, start_cli

TINY = ["--set", "search.epochs=1", "--epochs", "1", "--quiet"]


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("tuner,extra", [
    ("random", ["--set", "search.max_trials=2"]),
    pytest.param("grid", ["--set", "search.max_trials=2"], marks=pytest.mark.slow),
    pytest.param("bayesian", ["--set", "search.max_trials=3"], marks=pytest.mark.slow),
    pytest.param("hyperband", ["--set", "search.epochs=2", "--set", "search.hyperband_factor=2"],
                 marks=pytest.mark.slow),
])
def test_each_tuner_finds_best_values_that_flow_into_training(tmp_path, tuner, extra):
    out = tmp_path / tuner
    result = run_cli("digits", "--stages", "search,train", "--set", f"search.tuner={tuner}",
                     "--set", "search.learning_rate_min=1e-4", "--set",
                     "search.learning_rate_max=1e-2", *TINY, *extra, "--out", out)
    assert result.returncode == 0, result.stderr
    report = _report(out)
    search = report["stages"]["search"]
    assert search["tuner"] == tuner and len(search["trials"]) >= 2
    scores = [t["score"] for t in search["trials"] if t["score"] is not None]
    assert search["best_score"] == max(scores)
    best = search["best_hyperparameters"]
    # The best values are what the train stage used.
    assert report["config"]["learning_rate"] == pytest.approx(best["learning_rate"])
    assert report["hyperparameters"]["filters"] == best["filters"]
    assert (out / "search.png").is_file()
    assert "| trial | status | score |" in (out / "report.md").read_text()


def _completed_trials(out):
    found = {}
    for path in (out / "search" / "trials").glob("trial_*/trial.json"):
        try:
            trial = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if trial.get("status") == "COMPLETED":
            found[trial["trial_id"]] = path.read_text()
    return found


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_repeating_finished_trials(tmp_path):
    out = tmp_path / "run"
    args = ["digits", "--stages", "search", "--set", "search.max_trials=4", "--set",
            "search.epochs=2", "--set", "search.learning_rate_min=1e-4",
            "--set", "search.learning_rate_max=1e-2"]
    process = start_cli(*args, "--out", out, log=tmp_path / "first.log")
    deadline = time.time() + 240
    while len(_completed_trials(out)) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _completed_trials(out)
    assert 2 <= len(finished) < 4, "the search should be cut off part-way"

    resumed = run_cli(*args, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(finished)} finished trial(s) kept" in resumed.stdout
    trials = _report(out)["stages"]["search"]["trials"]
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials)
    after = _completed_trials(out)
    assert all(after[trial_id] == text for trial_id, text in finished.items()), \
        "finished trials must not be run again"
    assert resumed.stdout.count("  trial ") == 4 - len(finished)


@pytest.mark.slow
def test_chief_and_two_workers_share_one_search_on_loopback(tmp_path):
    port = free_port()
    args = ["digits", "--stages", "search,train,evaluate", "--set", "search.max_trials=4", *TINY]

    def env(tuner_id):
        return {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
                "KERASTUNER_ORACLE_PORT": port}

    chief = start_cli(*args, "--out", tmp_path / "chief", log=tmp_path / "chief.log",
                      env=env("chief"))
    workers = [start_cli(*args, "--out", tmp_path / f"worker{i}", log=tmp_path / f"w{i}.log",
                         env=env(f"tuner{i}")) for i in range(2)]
    try:
        codes = [p.wait(timeout=300) for p in [*workers, chief]]
    finally:
        for p in [chief, *workers]:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0, 0], [(tmp_path / n).read_text()[-2000:] for n in
                                ("chief.log", "w0.log", "w1.log")]
    chief_report = _report(tmp_path / "chief")
    search = chief_report["stages"]["search"]
    assert search["role"] == "chief" and len(search["trials"]) == 4
    assert all(t["status"] == "COMPLETED" for t in search["trials"])
    assert chief_report["stages"]["evaluate"]["test_accuracy"] > 0.5
    worker_ids, trials_run = set(), []
    for i in range(2):
        worker = _report(tmp_path / f"worker{i}")["stages"]["search"]
        assert worker["role"] == "worker"
        worker_ids.add(worker["tuner_id"])
        trials_run += worker["trials_run"]
        assert "train" not in _report(tmp_path / f"worker{i}")["stages"]
    assert worker_ids == {"tuner0", "tuner1"}
    # The oracle handed the four trials out between the workers, each exactly once.
    assert sorted(trials_run) == sorted(t["trial"] for t in search["trials"])
