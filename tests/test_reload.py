"""Every model the workbench saves loads in a fresh process that does nothing but
`import keras, workbench`, and computes what it computed when it was saved.

One process runs the real CLI entry point (`workbench.run.main`) for each kind, with the train
stage only and a few steps: the supervised family (`digits`), the GPT from scratch (`gpt`), a
KerasHub preset fine-tuned with LoRA (its merged `model.keras`), QLoRA on an int8 and an int4
base, and LoRA on Hugging Face Llama 3 and Qwen3 checkpoint directories (tests/hf_checkpoints.py,
converted by KerasHub on load). It then loads each `model.keras` there and keeps its outputs on
fixed inputs. Each test loads one of them in a new interpreter, runs the forward pass and
compares. The GPT, the int4 base and the Hugging Face checkpoints are in the slow run."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, cli_env

TEXT = textwrap.__file__
# A few steps are enough to save a model; what is checked is the file, not the training.
FEW_STEPS = ["--set", f"data={TEXT}", "--set", "lm.context=32", "--set", "lm.steps=4",
             "--set", "lm.warmup_steps=1", "--set", "lm.eval_interval=2",
             "--set", "lm.eval_windows=4", "--set", "lm.max_eval_windows=4"]

# kind -> (the CLI's arguments after the recipe, with {presets} formatted in).
KINDS = {
    "supervised": ["digits", "--fast", "--set", "epochs=1"],
    "gpt": ["gpt", "--fast", "--set", "lm.steps=4", "--set", "lm.eval_interval=2",
            "--set", "lm.warmup_steps=1", "--set", "lm.max_eval_windows=4"],
    "finetuned_preset": ["finetune", "--fast", "--set", "model_options.preset={gpt2}",
                         *FEW_STEPS],
    "qlora_int8": ["finetune", "--fast", "--set", "model_options.preset={gpt2}",
                   "--set", "finetune.mode=qlora", *FEW_STEPS],
    "qlora_int4": ["finetune", "--fast", "--set", "model_options.preset={gpt2}",
                   "--set", "finetune.mode=qlora", "--set", "finetune.base_quantization=int4",
                   *FEW_STEPS],
    "llama3_checkpoint": ["finetune", "--fast", "--set", "model_options.preset={llama3}",
                          *FEW_STEPS],
    "qwen3_checkpoint": ["finetune", "--fast", "--set", "model_options.preset={qwen3}",
                         *FEW_STEPS],
}

INPUTS = '''
def inputs_for(model):
    """Fixed inputs for every input of `model`: token ids for integer inputs, else uniform."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = []
    for tensor in model.inputs:
        shape = [2] + [dim or 8 for dim in tensor.shape[1:]]
        if "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, 100, shape).astype(str(tensor.dtype)))
        else:
            arrays.append(rng.uniform(0, 1, shape).astype("float32"))
    return arrays[0] if len(arrays) == 1 else arrays
'''

SAVE = INPUTS + '''
import contextlib, io, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "tests"))
folder = Path(sys.argv[1])
kinds = json.loads(sys.argv[2])

from hf_checkpoints import make_llama3_checkpoint, make_qwen3_checkpoint
from hub_presets import make_gpt2_preset

makers = {"gpt2": make_gpt2_preset, "llama3": make_llama3_checkpoint,
          "qwen3": make_qwen3_checkpoint}
wanted = {name for name in makers if any("{" + name + "}" in part for argv in kinds.values()
                                         for part in argv)}
presets = {name: makers[name](folder / name) if name in wanted else None for name in makers}

import keras
import numpy as np

from workbench.run import main

results = {}
for kind, argv in kinds.items():
    start = time.perf_counter()
    run_dir = folder / kind
    argv = [part.format(**presets) for part in argv] + ["--stages", "train", "--out",
                                                          str(run_dir), "--quiet"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    if code:
        results[kind] = {"code": code, "stderr": err.getvalue()[-2000:]}
        continue
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    np.save(run_dir / "outputs.npy", keras.ops.convert_to_numpy(model(inputs_for(model))))
    results[kind] = {"code": 0, "model": str(run_dir / "model.keras"),
                     "preset": (run_dir / "preset" / "config.json").is_file(),
                     "seconds": round(time.perf_counter() - start, 1)}
print("RESULTS " + json.dumps(results))
'''

LOAD = INPUTS + '''
import json, sys
import keras, workbench
import numpy as np

path = sys.argv[1]
model = keras.models.load_model(path, compile=False)
outputs = keras.ops.convert_to_numpy(model(inputs_for(model)))
expected = np.load(path.replace("model.keras", "outputs.npy"))
print("LOADED " + json.dumps({
    "class": type(model).__name__, "shape": list(outputs.shape),
    "finite": bool(np.isfinite(outputs).all()),
    "max_difference": float(np.max(np.abs(outputs - expected))),
    "quantized": sorted({layer.quantization_mode for layer in model._flatten_layers()
                         if getattr(layer, "quantization_mode", None)})}))
'''


def _python(code, *args, timeout=600):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)


def _save(folder, kinds):
    result = _python(SAVE, folder, json.dumps({kind: KINDS[kind] for kind in kinds}),
                     timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


# Saved in one process each: the kinds of the default run (under a minute to save), and those
# of the slow one (the GPT's default check is tests/test_task_families.py's, on a GPT built
# there).
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("saved"),
                 ("supervised", "finetuned_preset", "qlora_int8"))


@pytest.fixture(scope="module")
def saved_slow(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("saved_slow"),
                 ("gpt", "qlora_int4", "llama3_checkpoint", "qwen3_checkpoint"))


def _load_fresh(saved, kind):
    assert saved[kind]["code"] == 0, saved[kind]
    result = _python(LOAD, saved[kind]["model"])
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("LOADED "))
    loaded = json.loads(line[len("LOADED "):])
    assert loaded["finite"]
    assert loaded["max_difference"] <= 1e-5, loaded
    return loaded


def test_a_supervised_model_reloads_in_a_fresh_process(saved):
    loaded = _load_fresh(saved, "supervised")
    assert loaded["shape"] == [2, 10]


@pytest.mark.slow
def test_the_gpt_reloads_in_a_fresh_process(saved_slow):
    loaded = _load_fresh(saved_slow, "gpt")
    assert loaded["class"] == "GPT" and len(loaded["shape"]) == 3


def test_a_fine_tuned_preset_reloads_in_a_fresh_process(saved):
    # The merged LoRA model: the wrapper's FullPaddingMask is registered by `import workbench`,
    # KerasHub's classes by Keras itself (it imports `keras_hub` for a `keras_hub>` name).
    loaded = _load_fresh(saved, "finetuned_preset")
    assert loaded["shape"][:2] == [2, 32] and loaded["quantized"] == []


def test_a_qlora_model_reloads_in_a_fresh_process(saved):
    loaded = _load_fresh(saved, "qlora_int8")
    assert loaded["shape"][:2] == [2, 32] and loaded["quantized"] == ["int8"]
    assert saved["qlora_int8"]["preset"]  # KerasHub's preset of the quantized model too


@pytest.mark.slow
def test_a_qlora_model_on_an_int4_base_reloads_in_a_fresh_process(saved_slow):
    loaded = _load_fresh(saved_slow, "qlora_int4")
    assert loaded["shape"][:2] == [2, 32] and loaded["quantized"] == ["int4"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama3_checkpoint", "qwen3_checkpoint"])
def test_a_model_fine_tuned_from_a_hugging_face_checkpoint_reloads_in_a_fresh_process(
        saved_slow, kind):
    loaded = _load_fresh(saved_slow, kind)
    assert loaded["shape"][:2] == [2, 32] and loaded["quantized"] == []
