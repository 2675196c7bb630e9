"""benchmarks/lm.py's time-to-quality part: the first validation at or below the target, and the
PyTorch reference (benchmarks/lm_reference.py) in its own process, where PyTorch is installed."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_target_is_the_first_validation_at_or_below_it():
    lm = _load("lm")
    row = {"eval_steps": [100, 200, 300, 400], "val_loss": [2.0, 1.71, 1.70, 1.60],
           "train_seconds_at_eval": [3.0, 6.5, 9.0, 12.0]}
    assert lm._first_reaching(row, 1.70) == (300, 9.0)
    assert lm._first_reaching(row, 1.75) == (200, 6.5)
    assert lm._first_reaching(row, 1.5) == (None, None)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
def test_pytorch_reference_trains_and_reports_its_curve(tmp_path):
    rng = np.random.default_rng(0)
    text = np.frombuffer(b"def add(a, b):\n    return a + b\n" * 400, dtype=np.uint8)
    np.save(tmp_path / "train.npy", text)
    np.save(tmp_path / "val.npy", text[: len(text) // 4])
    out = tmp_path / "reference.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "lm_reference.py"), "--data", str(tmp_path),
                    "--out", str(out), "--steps", "40", "--eval-interval", "20",
                    "--eval-windows", "16", "--context", "16", "--layers", "1", "--width", "32",
                    "--heads", "2", "--warmup", "5", "--threads", "1", "--learning-rate", "1e-2",
                    "--seed", str(int(rng.integers(100)))],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["eval_steps"] == [20, 40]
    first, last = result["train_seconds_at_eval"]
    assert 0 < first < last == pytest.approx(result["train_seconds"])
    assert result["validation_seconds"] > 0 and result["tokens_per_second"] > 0
    # A repeated line is learned far below the uniform guess over 256 bytes.
    assert result["final_val_loss"] < math.log(256) - 2
    assert result["val_loss"][1] < result["val_loss"][0]


def test_seed_agreement_alternates_the_two_and_summarises_per_seed(monkeypatch):
    lm = _load("lm")
    calls = []
    monkeypatch.setattr(lm, "_corpus_folder", lambda folder: None)

    def reference(folder, steps, eval_interval, eval_windows, log=print, seed=None, **_):
        calls.append(("reference", seed))
        return {"final_val_loss": 1.70 + 0.01 * seed, "tokens_per_second": 100.0}

    def workbench(folder, name, overrides, eval_interval, eval_windows, log=print):
        calls.append(("workbench", overrides))
        seed = int(overrides[-1].split("=")[1])
        return {"final_val_loss": 1.72 - 0.02 * seed, "tokens_per_second": 150.0}

    monkeypatch.setattr(lm, "_reference_run", reference)
    monkeypatch.setattr(lm, "_workbench_run", workbench)
    result = lm.seed_agreement(seeds=(0, 1, 2), steps=10, log=lambda *a, **k: None)
    assert calls == [("reference", 0), ("workbench", ["optimizer=adamw", "seed=0"]),
                     ("reference", 1), ("workbench", ["optimizer=adamw", "seed=1"]),
                     ("reference", 2), ("workbench", ["optimizer=adamw", "seed=2"])]
    summary = result["summary"]
    assert summary["reference_loss"]["median"] == pytest.approx(1.71)
    assert summary["workbench_loss"]["median"] == pytest.approx(1.70)
    assert summary["median_difference"] == pytest.approx(-0.01)
    assert summary["workbench_loss"]["spread"] == pytest.approx(0.04)
    assert summary["tokens_per_second_ratio"] == pytest.approx(1.5)


def test_race_reuses_earlier_runs_and_trains_only_the_missing_ones(monkeypatch, tmp_path):
    lm = _load("lm")
    monkeypatch.setattr(lm, "stdlib_corpus", lambda: (np.zeros(1000, "int32"),
                                                      np.zeros(1000, "int32")))
    trained = []

    def race_run(name, lr, seed, steps, train_tokens, val, eval_every):
        trained.append((name, lr, seed))
        # The higher rate reaches the target sooner; seeds differ a little.
        reach = int(steps * (0.8 if lr == 2e-3 else 0.9)) + 10 * seed
        return [(step, 1.6 if step >= reach else 2.0)
                for step in range(eval_every, steps + 1, eval_every)], 0.01

    monkeypatch.setattr(lm, "race_run", race_run)
    quiet = lambda *a, **k: None  # noqa: E731
    grids = {"adamw": (1e-3, 2e-3)}
    stopped = lm.optimizer_race(optimizers=["adamw"], grids=grids, seeds=(0, 1, 2),
                                tune_seeds=(0,), steps=100, eval_every=10, step_rounds=0,
                                log=quiet)
    assert trained == [("adamw", 1e-3, 0), ("adamw", 2e-3, 0), ("adamw", 2e-3, 1),
                       ("adamw", 2e-3, 2)]
    out = tmp_path / "lm.json"
    out.write_text(json.dumps({"b_optimizer_race_runs_so_far": stopped["runs"][:3]}))
    trained.clear()
    resumed = lm.optimizer_race(optimizers=["adamw"], grids=grids, seeds=(0, 1, 2),
                                tune_seeds=(0,), steps=100, eval_every=10, step_rounds=0,
                                log=quiet, earlier_runs=lm.earlier_race([out])[0])
    assert trained == [("adamw", 2e-3, 2)]
    assert resumed["table"] == stopped["table"]
    (row,) = resumed["table"]
    assert row["learning_rate"] == 2e-3 and row["median_steps_to_target"] == 90
    # Step times measured earlier, alone on the machine, give the wall-clock to the target.
    out.write_text(json.dumps({"b_race_step_times": {"adamw": {
        "ms_per_step": 50.0, "rounds_ms": [50.0], "compile_seconds": 4.0}}}))
    timed = lm.optimizer_race(optimizers=["adamw"], grids=grids, seeds=(0, 1, 2),
                              tune_seeds=(0,), steps=100, eval_every=10, step_rounds=0,
                              log=quiet, earlier_runs=stopped["runs"],
                              step_times=lm.earlier_race([out])[1])
    assert timed["table"][0]["seconds_to_target"] == pytest.approx(4.0 + 90 * 0.05)
    plot = tmp_path / "race.png"
    lm.plot_race(resumed, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Runs of a different length are not reused.
    trained.clear()
    lm.optimizer_race(optimizers=["adamw"], grids=grids, seeds=(0,), steps=200, eval_every=10,
                      step_rounds=0, log=quiet, earlier_runs=stopped["runs"])
    assert trained == [("adamw", 1e-3, 0), ("adamw", 2e-3, 0)]


def test_race_model_keeps_its_weights_under_schedule_free_adamw():
    # Keras' ScheduleFreeAdamW copies the weights into its momentum in `build`; built inside
    # `fit`'s traced step the copy is lost and the first step zeroes the weights.
    lm = _load("lm")
    model = lm._race_model("schedule_free_adamw", 1e-9, 0, 10)
    before = [w.copy() for w in model.get_weights()]
    tokens = np.arange(lm.BATCH * (lm.CONTEXT + 1), dtype="int32").reshape(lm.BATCH, -1) % 256
    model.fit(tokens[:, :-1], tokens[:, 1:], batch_size=lm.BATCH, epochs=1, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_allclose(new, old, atol=1e-4)
