"""Search on the gpt recipe at a tiny budget, through the generic search stage: learning rate,
weight decay, warm-up and the builder's width (an `hp` choice), each trial trained by steps on
random windows and scored by val_loss on fixed validation windows; the best values train."""

import json
import math
import signal
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli, start_cli

pytestmark = pytest.mark.skipif(not (REPO / "recipes" / "gpt.py").is_file(),
                                reason="needs the gpt recipe (recipes/gpt.py)")

CORPUS = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
UNIFORM_GUESS = math.log(256)  # nats/token of a uniform guess over 256 byte values
TINY = ["--fast", "--set", f"data={CORPUS}", "--set", "lm.context=16", "--set", "lm.steps=20",
        "--set", "search.steps=20", "--set", "search.max_trials=2",
        "--set", "search.learning_rate_min=3e-4", "--set", "search.learning_rate_max=3e-3",
        "--set", "search.weight_decays=0.01,0.1", "--set", "search.warmup_steps=0,10"]


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_search_finds_rates_decays_warmups_and_widths_that_flow_into_training(tmp_path):
    out = tmp_path / "run"
    result = run_cli("gpt", "--stages", "search,train", *TINY, "--out", out, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "20 steps per trial" in result.stdout
    assert result.stdout.count("  trial ") == 2
    report = _report(out)
    search = report["stages"]["search"]
    assert search["objective"] == "val_loss" and search["steps_per_trial"] == 20
    finished = [t for t in search["trials"] if t["score"] is not None]
    assert len(finished) == 2
    assert search["best_score"] == min(t["score"] for t in finished)
    for trial in finished:
        values = trial["hyperparameters"]
        assert 3e-4 <= values["learning_rate"] <= 3e-3
        assert values["weight_decay"] in (0.01, 0.1)
        assert values["warmup_steps"] in (0, 10)
        assert values["width"] in (64, 128, 192, 256)
        assert math.isfinite(trial["score"]) and 0 < trial["score"] < UNIFORM_GUESS

    # The best values are what the train stage used: rate, decay and warm-up in the recipe,
    # width in the model it saved.
    best = search["best_hyperparameters"]
    config = report["config"]
    assert config["learning_rate"] == pytest.approx(best["learning_rate"])
    assert config["optimizer_config"]["weight_decay"] == pytest.approx(best["weight_decay"])
    assert config["lm"]["warmup_steps"] == best["warmup_steps"]
    assert report["hyperparameters"]["width"] == best["width"]
    assert report["stages"]["train"]["steps"] == 20
    with zipfile.ZipFile(out / "model.keras") as saved:
        model_config = json.loads(saved.read("config.json"))["config"]
    assert model_config["hidden_dim"] == best["width"]
    assert model_config["num_layers"] == best["layers"]


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
def test_an_interrupted_language_model_search_resumes_without_repeating_trials(tmp_path):
    out = tmp_path / "run"
    args = ["gpt", "--stages", "search", *TINY, "--set", "search.max_trials=3",
            "--set", "jit_compile=false"]
    process = start_cli(*args, "--out", out, log=tmp_path / "first.log")
    # Kill inside the second trial's training: KerasTuner writes its state files (trial.json,
    # oracle.json, tuner0.json) in place, one after the other, when a trial ends and the next
    # begins, and a kill in the middle of one of those writes is not what this test is about.
    second = out / "search" / "trials" / "trial_1" / "trial.json"
    deadline = time.time() + 600
    while (not (_completed_trials(out) and second.is_file()) and time.time() < deadline
           and process.poll() is None):
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _completed_trials(out)
    assert 1 <= len(finished) < 3, "the search should be cut off part-way"

    resumed = run_cli(*args, "--resume", out, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: {len(finished)} finished trial(s) kept" in resumed.stdout
    trials = _report(out)["stages"]["search"]["trials"]
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials)
    after = _completed_trials(out)
    assert all(after[trial_id] == text for trial_id, text in finished.items()), \
        "finished trials must not be run again"
    assert resumed.stdout.count("  trial ") == 3 - len(finished)


@pytest.mark.slow
@pytest.mark.parametrize("extra,expected", [
    (["--set", "search.tuner=hyperband"], "search.tuner=hyperband hands out epochs"),
    (["--set", "search.warmup_steps=0,30"], "search.warmup_steps has 30 warm-up steps"),
])
def test_language_model_search_settings_it_cannot_honour_are_bad_input(tmp_path, extra,
                                                                        expected):
    out = tmp_path / "run"
    result = run_cli("gpt", "--stages", "search,train", *TINY, *extra, "--out", out)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_warmup_choices_on_a_recipe_trained_by_epochs_are_bad_input(tmp_path):
    out = tmp_path / "run"
    result = run_cli("digits", "--stages", "search", "--set", "search.warmup_steps=0,10",
                     "--set", "search.learning_rate_min=1e-4",
                     "--set", "search.learning_rate_max=1e-2", "--out", out)
    assert result.returncode == 2, result.stderr
    assert "setting 'search.warmup_steps' does not apply to the tasks multiclass" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()
