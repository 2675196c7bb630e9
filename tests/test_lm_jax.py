"""The `gpt` recipe on the JAX backend, each run in its own process (`KERAS_BACKEND` is read once
per process): train -> evaluate -> generate on a tiny corpus, the TensorFlow-only stages and
strategies refused before any work, and (slow) kill -9 then --resume in the middle of a segment.

The tiny runs use the recipe's own model (width 128, 4 layers) at context 16 on the standard
library's `textwrap.py`, so the compiled train, evaluate and sampling functions are those of the
real recipe; only the number of steps and windows is cut."""

import json
import math
import signal
import textwrap
import time

import numpy as np
import pytest

from conftest import run_cli, start_cli

pytest.importorskip("jax")

JAX = {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
TINY = ["--set", f"data={textwrap.__file__}", "--set", "lm.context=16",
        "--set", "lm.eval_windows=16", "--set", "lm.max_eval_windows=64"]


@pytest.mark.slow
def test_gpt_trains_evaluates_and_generates_on_jax(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("gpt", "--fast", "--stages", "train,evaluate,generate", "--out", run_dir,
                     *TINY, "--set", "lm.steps=20", "--set", "lm.eval_interval=10",
                     "--set", "generate.max_tokens=16", env=JAX, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "completed"
    train, evaluate = report["stages"]["train"], report["stages"]["evaluate"]
    assert train["steps"] == 20 and train["eval_steps"] == [10, 20]
    assert train["tokens_per_second"] > 0 and train["achieved_flops_per_second"] > 0
    assert math.isfinite(evaluate["val_loss"]) and evaluate["val_loss"] < math.log(256)
    assert evaluate["windows"] == 64 and evaluate["tokens"] == 64 * 16
    sample = report["stages"]["generate"]["samples"][0]
    assert sample["prompt"] and len(sample["continuation"].encode()) >= 1
    assert (run_dir / "model.keras").is_file() and (run_dir / "samples.txt").is_file()


def test_tensorflow_only_stage_on_jax_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("gpt", "--stages", "train,export", "--out", run_dir, *TINY, env=JAX,
                     timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'export'" in result.stderr and "'jax'" in result.stderr
    assert "'train'" not in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("stages, strategy, message", [
    (("train", "export", "verify"), "auto", "stages 'export', 'verify' of recipe 'gpt' need"),
    (("train", "prune"), "default", "stage 'prune' of recipe 'gpt' needs the TensorFlow"),
    (("train", "quantize"), "auto", "stage 'quantize'"),
    (("train", "cluster"), "auto", "stage 'cluster'"),
    (("train", "distill"), "auto", "stage 'distill'"),
    (("train",), "mirrored", "strategy 'mirrored' is a tf.distribute strategy"),
    (("train",), "multi_worker", "strategy 'multi_worker'"),
])
def test_check_backend_names_what_needs_tensorflow(stages, strategy, message):
    from workbench.errors import WorkbenchError
    from workbench.recipe import load_recipe
    from workbench.stages import check_backend

    recipe = load_recipe("gpt")
    with pytest.raises(WorkbenchError, match=message) as raised:
        check_backend(recipe, stages, strategy, backend="jax")
    assert "KERAS_BACKEND is 'jax'" in str(raised.value) and "\n" not in str(raised.value)
    check_backend(recipe, stages, strategy, backend="tensorflow")
    check_backend(recipe, ("train", "evaluate", "generate", "lr_find", "search"), "auto",
                  backend="jax")


@pytest.mark.slow
def test_kill_9_in_a_segment_then_resume_on_jax(tmp_path):
    """Checkpoints are taken inside `fit` (one 300-step segment), where the JAX trainer keeps
    the training state outside the model's variables: the saved state must be the live one."""
    run_dir = tmp_path / "run"
    args = ["gpt", "--stages", "train", *TINY, "--set", "lm.steps=300",
            "--set", "lm.eval_interval=300", "--set", "lm.checkpoint_steps=20"]
    process = start_cli(*args, "--out", run_dir, log=tmp_path / "log.txt", env=JAX)
    checkpoint = run_dir / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    while not checkpoint.is_file() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file(), (tmp_path / "log.txt").read_text()[-3000:]
    # The backup holds the live training state (the JAX trainer syncs it into the variables
    # before epoch-end callbacks): its optimizer step counter is the epoch's last step, where
    # emptied variables would read 0.
    import h5py

    epoch = json.loads(checkpoint.read_text())["epoch"]
    with h5py.File(run_dir / "backup" / "latest.weights.h5") as saved:
        iterations = int(saved["optimizer/vars/0"][()])
    assert iterations == epoch * 20 >= 20
    result = run_cli(*args, "--resume", run_dir, env=JAX, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_at = int(result.stdout.split("resuming at step")[1].split()[0])
    assert 20 <= resumed_at < 300 and resumed_at % 20 == 0
    train = json.loads((run_dir / "report.json").read_text())["stages"]["train"]
    assert train["steps"] == 300
    assert train["final_val_loss"] < math.log(256) - 1.5
