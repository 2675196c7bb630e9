"""The workbench's Keras objects on every Keras backend, each backend in its own process.

Keras picks its backend once per process (`KERAS_BACKEND`), so every check here starts a fresh
Python. What runs where:

- JAX (installed with the dev extra), in the default run: `import workbench` and the four
  subpackages without TensorFlow; which Shampoo root runs; a `.keras` round trip into a fresh
  process; and a focused selection of the contract, NumPy reference, schedule, regularizer and
  callback tests. The whole of those files on JAX is in the slow set.
- PyTorch (not a project dependency; skipped when absent), slow set only: the same import
  check and the whole of those files.

TensorFlow runs those files in the ordinary test run.
"""

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not TORCH, reason="PyTorch is not installed")

BACKEND_FILES = [
    "tests/test_optimizers_contract.py",
    "tests/test_optimizers_reference.py",
    "tests/test_schedules.py",
    "tests/test_regularizers.py",
    "tests/test_callbacks.py",
]

# The default run's JAX selection, kept to about a minute of CPU: the wrappers and Shampoo
# through the stateless apply path with save/load and continue, EMA and loss scaling around the
# jitted step, an optimizer whose state is taken from the weights, three NumPy references
# (float64: JAX_ENABLE_X64), and the schedule and callback behaviour that depends on how the
# backend compiles a train step. Stacked wrappers and GradientNoise are covered by the fresh-
# process round trip below.
JAX_FOCUSED = [
    "tests/test_optimizers_contract.py::test_save_load_and_continue_training[Lookahead]",
    "tests/test_optimizers_contract.py::test_save_load_and_continue_training[Shampoo]",
    "tests/test_optimizers_contract.py::test_use_ema_leaves_the_average_in_the_model[Prodigy]",
    "tests/test_optimizers_contract.py::test_loss_scale_optimizer_wrapping_matches_unscaled[Lookahead]",
    "tests/test_optimizers_reference.py::test_prodigy_matches_reference_implementation[all_options]",
    "tests/test_optimizers_reference.py::test_lookahead_composes_with_inner_step[adam]",
    "tests/test_optimizers_reference.py::test_gradient_noise_composes_with_inner_step[sgd]",
    "tests/test_schedules.py::test_values_when_compiled_with_an_integer_step_tensor",
    "tests/test_regularizers.py::test_group_lasso_gradient_is_unit_direction_and_zero_on_empty_groups",
    "tests/test_callbacks.py::test_reduces_what_the_optimizer_applies_under_a_schedule",
]


def backend_env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.pop("JAX_ENABLE_X64", None)
    env.update(extra)
    return env


def run_python(backend, *args, timeout=300, **extra):
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=backend_env(backend, **extra),
        capture_output=True, text=True, timeout=timeout,
    )


def run_pytest(backend, targets, timeout, **extra):
    result = run_python(
        backend, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
        "-m", "not slow", "--tb=short", *targets, timeout=timeout, **extra,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
    return summary


# Imports everything a Keras user reaches through `wb.`, builds a Shampoo and reports what was
# loaded and which root it uses.
IMPORT_PROBE = """
import json, sys
import keras
import workbench as wb
classes = [wb.optimizers.Shampoo, wb.optimizers.Lookahead, wb.schedules.OneCycle,
           wb.regularizers.L2SP, wb.callbacks.EarlyStopping, wb.callbacks.LRFinder]
optimizer = wb.optimizers.Shampoo()
optimizer.build([keras.Variable(keras.ops.zeros((4, 3)))])
print(json.dumps({"backend": keras.backend.backend(),
                  "tensorflow_loaded": "tensorflow" in sys.modules,
                  "root_method": optimizer.root_method_in_use}))
"""


def probe(backend, **extra):
    result = run_python(backend, "-c", IMPORT_PROBE, **extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_jax_imports_workbench_without_tensorflow_and_uses_the_float32_root():
    report = probe("jax")
    assert report == {"backend": "jax", "tensorflow_loaded": False, "root_method": "newton"}
    # With x64 on, float64 exists and the eigendecomposition is used.
    assert probe("jax", JAX_ENABLE_X64="1")["root_method"] == "eigh"


@pytest.mark.slow
@needs_torch
def test_torch_imports_workbench_without_tensorflow():
    report = probe("torch")
    assert report == {"backend": "torch", "tensorflow_loaded": False, "root_method": "eigh"}


def save_main(path):
    """Trains a model holding every kind of workbench object and saves it."""
    import keras
    import numpy as np

    import workbench as wb

    # Python's `random` seeds Keras' unseeded initializers; `keras.utils.set_random_seed` would
    # also import TensorFlow to seed it.
    random.seed(0)
    schedule = wb.schedules.Warmup(wb.schedules.OneCycle(0.01, total_steps=40), warmup_steps=4)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(4, activation="tanh", kernel_regularizer=wb.regularizers.L2SP(1e-3)),
        keras.layers.Dense(2, kernel_regularizer=wb.regularizers.GroupLasso(1e-3)),
    ])
    optimizer = wb.optimizers.Lookahead(
        wb.optimizers.GradientNoise(keras.optimizers.Adam(schedule), seed=1), sync_period=3
    )
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.random.default_rng(0).normal(size=(2, 32, 6)).astype("float32")
    model.fit(x, y[:, :2], batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(path)
    model.fit(x, y[:, :2], batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.save(str(path) + ".continued.npy", np.concatenate([w.ravel() for w in model.get_weights()]))


def load_main(path):
    """Loads the model in a new process and continues training; must match the saver."""
    import keras
    import numpy as np

    import workbench as wb

    # As for any Keras custom object, the classes register on import; the subpackages are
    # lazy, so a loader names what the file holds first.
    wb.optimizers, wb.schedules, wb.regularizers
    model = keras.models.load_model(path)
    inner = model.optimizer.inner_optimizer
    assert isinstance(model.optimizer, wb.optimizers.Lookahead)
    assert isinstance(inner, wb.optimizers.GradientNoise)
    assert isinstance(inner.inner_optimizer._learning_rate, wb.schedules.Warmup)
    x, y = np.random.default_rng(0).normal(size=(2, 32, 6)).astype("float32")
    model.fit(x, y[:, :2], batch_size=8, epochs=1, shuffle=False, verbose=0)
    got = np.concatenate([w.ravel() for w in model.get_weights()])
    want = np.load(str(path) + ".continued.npy")
    print(json.dumps({"max_abs_difference": float(np.abs(got - want).max())}))


@pytest.mark.slow
def test_jax_keras_file_reloads_in_a_fresh_process_and_continues(tmp_path):
    path = tmp_path / "model.keras"
    saved = run_python("jax", __file__, "--save", str(path))
    assert saved.returncode == 0, saved.stderr[-3000:]
    loaded = run_python("jax", __file__, "--load", str(path))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    report = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert report["max_abs_difference"] < 1e-6, report


# The contract check on SOAP that tests/test_soap.py does not make on JAX by default (its own is
# slow): the stateless apply path saved, reloaded and continued exactly. The whole contract on
# SOAP is in the slow set below.
SOAP_CONTRACT = ["tests/test_optimizers_contract.py::test_save_load_and_continue_training[SOAP]"]


def test_jax_soap_matches_its_reference_and_trains():
    # float64 for the NumPy reference (1e-6), so JAX_ENABLE_X64 (the contract's models still
    # train in float32); the bases refresh inside a `cond` on JAX's stateless apply path.
    run_pytest("jax", ["tests/test_soap.py", *SOAP_CONTRACT], timeout=600, JAX_ENABLE_X64="1")


@pytest.mark.slow
def test_jax_soap_passes_the_optimizer_contract():
    run_pytest("jax", ["tests/test_optimizers_contract.py", "-k", "SOAP"], timeout=600)


@pytest.mark.slow
def test_jax_focused_contract_and_reference_tests():
    references = [t for t in JAX_FOCUSED if "reference" in t]
    # float32, JAX's default, for what trains as users train (Shampoo on its Newton root) ...
    run_pytest("jax", [t for t in JAX_FOCUSED if t not in references], timeout=900)
    # ... and float64 for the NumPy references, which compare to 1e-6.
    run_pytest("jax", references, timeout=600, JAX_ENABLE_X64="1")


@pytest.mark.slow
def test_jax_all_backend_tests():
    # float32 (JAX's default) for the contract tests, which train in float32 as users do.
    run_pytest("jax", [BACKEND_FILES[0]] + BACKEND_FILES[2:], timeout=1800)
    # float64 for the NumPy references: they compare to 1e-6.
    run_pytest("jax", [BACKEND_FILES[1]], timeout=1200, JAX_ENABLE_X64="1")


@pytest.mark.slow
@needs_torch
def test_torch_all_backend_tests():
    run_pytest("torch", BACKEND_FILES, timeout=2400)


if __name__ == "__main__":
    {"--save": save_main, "--load": load_main}[sys.argv[1]](sys.argv[2])
