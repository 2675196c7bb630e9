"""Sharded training on JAX through `keras.distribution` (workbench.sharding): each JAX check runs
in its own process over eight logical CPU devices (`KERAS_BACKEND` is read once per process;
tests/sharding_checks.py does the work), the CLI runs `--strategy model_parallel`, and the
strategies are refused off JAX before any work."""

import json
import math
import subprocess
import sys
import types

import pytest

from conftest import REPO, cli_env, run_cli
from test_lm_jax import TINY

pytest.importorskip("jax")

DEVICES = 8
JAX = {"KERAS_BACKEND": "jax", "JAX_NUM_CPU_DEVICES": str(DEVICES), "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_check(name, timeout=240):
    result = subprocess.run([sys.executable, str(REPO / "tests" / "sharding_checks.py"), name],
                            cwd=REPO, env=cli_env(**JAX), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    report = json.loads(line[len("RESULT "):])
    assert report["devices"] == DEVICES
    return report


def split_paths(shards):
    """Paths of the variables each of the 8 devices holds 1/8 of; every other variable must be
    whole on every device."""
    split = set()
    for path, (fraction, devices) in shards.items():
        assert devices == DEVICES, path
        if fraction == 1 / DEVICES:
            split.add(path)
        else:
            assert fraction == 1.0, (path, fraction)
    return split


GPT_SPLIT = {"token_embedding/embeddings", "position_embedding/embeddings"} | {
    f"transformer_layer_{i}/{name}/kernel" for i in range(2)
    for name in ("qkv", "attention_output", "mlp_in", "mlp_out")}


def test_workbench_gpt_model_parallel_and_data_parallel_match_one_device():
    report = run_check("gpt")
    losses = report["losses"]
    assert math.isfinite(losses["single"])
    assert abs(losses["model_parallel"] - losses["single"]) < 1e-3, losses
    assert abs(losses["data_parallel"] - losses["single"]) < 1e-3, losses
    # Each device holds 1/8 of the two embeddings and of the four kernels of both blocks (10),
    # and so of their AdamW moments (20); data_parallel keeps every variable whole.
    assert split_paths(report["shards"]) == GPT_SPLIT
    assert len(split_paths(report["optimizer_shards"])) == 2 * len(GPT_SPLIT) == 20
    assert split_paths(report["map_shards"]) == GPT_SPLIT
    assert split_paths(report["data_parallel_shards"]) == set()
    # Inside the compiled training step each device sees 1 of the 8 windows of a batch under
    # data_parallel, all 8 under model_parallel.
    assert report["data_parallel_batches"] and all(
        shape == [1, 16] for shape in report["data_parallel_batches"])
    assert report["model_parallel_batches"] and all(
        shape == [8, 16] for shape in report["model_parallel_batches"])
    assert report["replicas"] == 1
    # Vocabulary 60 does not divide by 8: the embedding splits its width; an MLP of 100 stays
    # whole. One device: nothing is split, the model still runs.
    assert split_paths(report["uneven_shards"]) == {
        "token_embedding/embeddings", "position_embedding/embeddings",
        "transformer_layer_0/qkv/kernel", "transformer_layer_0/attention_output/kernel"}
    assert report["uneven_axes"]["token_embedding/embeddings"] == [None, "model"]
    assert report["uneven_finite"] and report["one_device_finite"]
    assert all(fraction == 1.0 and devices == 1
               for fraction, devices in report["one_device_shards"].values())
    refused = report["refused"]
    assert refused and "'sequential/head/kernel'" in refused and "data_parallel" in refused


@pytest.mark.slow
def test_keras_hub_gpt2_and_qwen_are_sharded():
    report = run_check("keras_hub")
    losses = report["losses"]
    assert math.isfinite(losses["single"])
    assert abs(losses["model_parallel"] - losses["single"]) < 1e-3, losses
    kernels = {"token_embedding/embeddings", "position_embedding/embeddings"} | {
        f"transformer_layer_{i}/{name}/kernel" for i in range(2)
        for name in ("self_attention/query", "self_attention/key", "self_attention/value",
                     "self_attention/attention_output", "feedforward_intermediate_dense",
                     "feedforward_output_dense")}
    biases = {f"transformer_layer_{i}/{name}/bias" for i in range(2)
              for name in ("self_attention/query", "self_attention/key", "self_attention/value",
                           "feedforward_intermediate_dense")}
    assert len(kernels) == 14
    assert split_paths(report["gpt2_shards"]) == kernels | biases
    assert split_paths(report["gpt2_map_shards"]) == kernels | biases
    # Qwen: its class's get_layout_map, every entry used (the embedding and 7 kernels a block).
    qwen = {"token_embedding/embeddings"} | {
        f"transformer_layer_{i}/{name}/kernel" for i in range(2)
        for name in ("self_attention/query", "self_attention/key", "self_attention/value",
                     "self_attention/attention_output", "feedforward_intermediate_dense",
                     "feedforward_gate_dense", "feedforward_output_dense")}
    assert len(qwen) == 15 and split_paths(report["qwen_shards"]) == qwen
    assert set(report["qwen_layouts"]) == qwen
    assert report["qwen_layouts"]["transformer_layer_0/feedforward_gate_dense/kernel"] == [
        "batch", "model"]
    # Without the model in advance the shared KerasHub decoder rules split Qwen too.
    assert qwen <= split_paths(report["qwen_rule_shards"])


@pytest.mark.slow
def test_cli_trains_gpt_with_model_parallel(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("gpt", "--fast", "--strategy", "model_parallel", "--stages",
                     "train,evaluate", "--out", run_dir, *TINY, "--set", "lm.steps=20",
                     "--set", "lm.eval_interval=10", env=JAX, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "completed"
    train, evaluate = report["stages"]["train"], report["stages"]["evaluate"]
    assert train["steps"] == 20 and train["replicas"] == 1 and train["backend"] == "jax"
    assert math.isfinite(evaluate["val_loss"]) and evaluate["val_loss"] < math.log(256)


@pytest.mark.parametrize("backend, strategy, message", [
    ("tensorflow", "model_parallel",
     "strategy 'model_parallel' shards with keras.distribution and needs the JAX backend"),
    ("jax", "model_paralel", "unknown strategy 'model_paralel': did you mean 'model_parallel'"),
])
def test_bad_strategy_is_refused_before_any_work(tmp_path, backend, strategy, message):
    run_dir = tmp_path / "run"
    result = run_cli("gpt", "--fast", "--strategy", strategy, "--stages", "train",
                     "--out", run_dir, *TINY, env={**JAX, "KERAS_BACKEND": backend}, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
    if strategy == "model_paralel":
        assert "data_parallel" in result.stderr and "mirrored" in result.stderr
    else:
        assert "KERAS_BACKEND=jax" in result.stderr and "mirrored" in result.stderr
    assert not run_dir.exists()


def test_check_jax_strategy_messages():
    from workbench.errors import WorkbenchError
    from workbench.recipe import load_recipe
    from workbench.sharding import check_jax_strategy
    from workbench.stages import check_backend

    for name in ("data_parallel", "model_parallel"):
        with pytest.raises(WorkbenchError, match="KERAS_BACKEND is 'tensorflow'") as raised:
            check_jax_strategy(name, "tensorflow", 1)
        assert "\n" not in str(raised.value) and "mirrored" in str(raised.value)
        with pytest.raises(WorkbenchError, match="needs the JAX backend"):
            check_backend(load_recipe("gpt"), ("train",), name, backend="tensorflow")
    with pytest.raises(WorkbenchError, match="batch_size is 12; set batch_size to a multiple"):
        check_jax_strategy("data_parallel", "jax", 8, batch_size=12)
    check_jax_strategy("data_parallel", "jax", 8, batch_size=16)
    check_jax_strategy("model_parallel", "jax", 8, batch_size=12)
    check_jax_strategy("model_parallel", "jax", 1)
    check_jax_strategy("mirrored", "tensorflow", 1)


def test_layouts_split_only_dimensions_that_divide():
    from workbench.sharding import (KERAS_HUB_DECODER_RULES, WORKBENCH_GPT_RULES, choose_axes,
                                    fits)

    mesh = types.SimpleNamespace(axis_names=("batch", "model"), shape=(1, 8))
    rules = WORKBENCH_GPT_RULES + KERAS_HUB_DECODER_RULES
    assert choose_axes(rules, "token_embedding/embeddings", (256, 128), mesh) == ("model", None)
    assert choose_axes(rules, "token_embedding/embeddings", (50257, 768), mesh) == (None, "model")
    assert choose_axes(rules, "token_embedding/embeddings", (50257, 12), mesh) is None
    assert choose_axes(rules, "transformer_layer_3/qkv/kernel", (64, 192), mesh) == (None, "model")
    assert choose_axes(rules, "transformer_layer_3/mlp_out/kernel", (100, 64), mesh) is None
    # 12 heads do not divide by 8: the head width (64) is split instead.
    assert choose_axes(rules, "transformer_layer_0/self_attention/key/kernel", (768, 12, 64),
                       mesh) == (None, None, "model")
    assert choose_axes(rules, "outer/transformer_layer_0/mlp_in/kernel", (64, 256),
                       mesh) == (None, "model")
    assert choose_axes(rules, "transformer_layer_0/attention_norm/gamma", (64,), mesh) is None
    assert fits(("model", "batch"), (64, 3), mesh) and not fits(("model",), (64, 3), mesh)
