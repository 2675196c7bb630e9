"""The causal_lm family: a KerasHub preset on disk fine-tuned by the `finetune` recipe.

Presets are tiny, with random weights, written here by `save_to_preset` (tests/hub_presets.py):
a GPT-2 and a Qwen. The end-to-end run uses the GPT-2 on `textwrap.py`; the checks re-load the
run's outputs in this process (the merged `model.keras`, the adapter on the preset, the
fine-tuned preset) and score them again."""

import json
import math
import textwrap

import numpy as np
import pytest

from conftest import run_cli, run_cli_cases
from hf_checkpoints import make_llama3_checkpoint, make_qwen3_checkpoint
from hub_presets import make_bert_preset, make_gpt2_preset, make_qwen_preset

TEXT = textwrap.__file__
TINY = ["--set", f"data={TEXT}", "--set", "lm.context=32", "--set", "quantize.keras_modes=int8"]


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    return {"gpt2": make_gpt2_preset(root / "gpt2"), "qwen": make_qwen_preset(root / "qwen"),
            "bert": make_bert_preset(root / "bert")}


@pytest.fixture(scope="module")
def gpt2_run(presets, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finetune") / "run"
    result = run_cli("finetune", "--fast", "--out", run_dir, "--set",
                     f"model_options.preset={presets['gpt2']}", *TINY, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, json.loads((run_dir / "report.json").read_text()), result.stdout


def test_lora_run_end_to_end_trains_few_weights_and_lowers_the_loss(gpt2_run):
    run_dir, report, stdout = gpt2_run
    assert report["status"] == "completed"
    train = report["stages"]["train"]
    assert train["family"] == "GPT2" and train["mode"] == "lora" and train["rank"] == 8
    assert 0 < train["trainable_fraction"] <= 0.05
    assert train["trainable_parameters"] < train["total_parameters"]
    assert train["optimizer_state_bytes"] > 0 and train["peak_rss_bytes"] > 2**20
    assert train["tokens_per_second"] > 0
    assert train["val_loss_after"] < train["val_loss_before"]
    assert train["merged_max_logit_difference"] <= 1e-4
    assert train["adapter_max_logit_difference"] <= 1e-4
    for name in ("adapter.lora.h5", "adapter.json", "model.keras", "model_float32.tflite",
                 "samples.txt"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "preset" / "config.json").is_file()
    verify = report["stages"]["verify"]
    assert verify["float32"]["greedy_tokens_match_keras"]
    assert abs(verify["float32"]["val_loss_change_vs_keras"]) < 1e-3
    assert "int8" in report["stages"]["quantize"]["modes"]
    assert "val loss" in stdout and "before fine-tuning" in stdout


def test_merged_model_adapter_and_fine_tuned_preset_reload_to_the_same_logits(gpt2_run, presets):
    import keras
    import keras_hub

    import workbench  # noqa: F401  (registers the wrapper's layers)
    from workbench.hub.finetune import load_adapter
    from workbench.hub.model import wrap_causal_lm
    from workbench.lm.evaluate import evaluate_split

    run_dir, report, _ = gpt2_run
    merged = keras.models.load_model(run_dir / "model.keras", compile=False)
    adapted = wrap_causal_lm(load_adapter(run_dir / "adapter.lora.h5", presets["gpt2"]), 32)
    preset = wrap_causal_lm(keras_hub.models.CausalLM.from_preset(str(run_dir / "preset")), 32)
    base = wrap_causal_lm(keras_hub.models.CausalLM.from_preset(str(presets["gpt2"])), 32)
    ids = np.random.default_rng(0).integers(0, 300, (4, 32)).astype("int32")
    logits = {name: keras.ops.convert_to_numpy(model(ids)) for name, model in
              (("merged", merged), ("adapted", adapted), ("preset", preset), ("base", base))}
    assert np.max(np.abs(logits["merged"] - logits["adapted"])) <= 1e-4
    assert np.max(np.abs(logits["merged"] - logits["preset"])) <= 1e-4
    assert np.max(np.abs(logits["merged"] - logits["base"])) > 1e-3  # fine-tuning changed it
    # Re-scored here, the merged model gives the evaluate stage's loss.
    from workbench.hub.presets import PresetTokens, load_tokenizer, check_preset
    from workbench.lm.corpus import load_corpus

    tokens = PresetTokens(load_tokenizer(check_preset(presets["gpt2"])))
    corpus = load_corpus(TEXT, tokens, 0.1, 32)
    evaluation = report["stages"]["evaluate"]
    rescored = evaluate_split(merged, corpus.val, 32, max_windows=evaluation["windows"])
    assert rescored["val_loss"] == pytest.approx(evaluation["val_loss"], abs=1e-4)


def test_second_family_qwen_fine_tunes_with_its_own_tokenizer(presets, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("finetune", "--fast", "--stages", "train,generate", "--out",
                     run_dir, "--set", f"model_options.preset={presets['qwen']}", *TINY,
                     timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    train = report["stages"]["train"]
    assert train["family"] == "Qwen" and 0 < train["trainable_fraction"] <= 0.05
    assert train["adapter_max_logit_difference"] <= 1e-4
    assert math.isfinite(train["val_loss_after"]) and train["steps"] == 20
    assert report["stages"]["generate"]["samples"]


@pytest.mark.parametrize("family, make", [("Llama3", make_llama3_checkpoint),
                                          ("Qwen3", make_qwen3_checkpoint)])
def test_a_hugging_face_checkpoint_directory_is_a_preset(family, make, tmp_path):
    """KerasHub converts the checkpoint's model.safetensors on load (with `safetensors`, a
    dependency) and its tokenizer.json."""
    from safetensors.numpy import load_file

    from workbench.hub.presets import PresetTokens, check_preset, load_causal_lm, load_tokenizer

    info = check_preset(make(tmp_path / "checkpoint"))
    assert info.family == family
    causal_lm = load_causal_lm(info)
    weights = load_file(str(info.path / "model.safetensors"))
    np.testing.assert_array_equal(
        causal_lm.backbone.get_layer("token_embedding").embeddings.numpy(),
        weights["model.embed_tokens.weight"])
    tokens = PresetTokens(load_tokenizer(info))
    assert tokens.decode(tokens.encode("def fill(text, width=70):")) == \
        "def fill(text, width=70):"


@pytest.mark.slow
@pytest.mark.parametrize("family, make", [("Llama3", make_llama3_checkpoint),
                                          ("Qwen3", make_qwen3_checkpoint)])
def test_a_hugging_face_checkpoint_directory_fine_tunes(family, make, tmp_path):
    """config.json, model.safetensors and tokenizer.json as `save_pretrained` writes them:
    KerasHub converts the checkpoint on load, which needs `safetensors` (a dependency)."""
    checkpoint = make(tmp_path / "checkpoint")
    run_dir = tmp_path / "run"
    result = run_cli("finetune", "--fast", "--stages", "train,generate", "--out", run_dir,
                     "--set", f"model_options.preset={checkpoint}", *TINY, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    train = report["stages"]["train"]
    assert train["family"] == family and train["steps"] == 20
    assert 0 < train["trainable_fraction"] < 0.1  # rank 8 on width 64
    assert math.isfinite(train["val_loss_after"])
    assert train["merged_max_logit_difference"] <= 1e-4
    assert train["adapter_max_logit_difference"] <= 1e-4
    assert (run_dir / "preset" / "config.json").is_file()
    assert report["stages"]["generate"]["samples"]


def test_modes_choose_what_trains(presets):
    import keras

    from workbench.hub.finetune import apply_mode, trainable_parameters, total_parameters
    from workbench.hub.model import wrap_causal_lm
    from workbench.hub.presets import check_preset, load_causal_lm
    from workbench.settings.hub import FinetuneSettings

    info = check_preset(presets["gpt2"])

    def prepared(**settings):
        model = wrap_causal_lm(load_causal_lm(info), 32)
        apply_mode(model, FinetuneSettings(**settings))
        return model

    full = prepared(mode="full")
    assert trainable_parameters(full) == total_parameters(full)
    frozen = prepared(mode="frozen_embeddings")
    embedding = sum(int(np.prod(v.shape)) for v in frozen.weights if "embedding" in v.path)
    assert trainable_parameters(frozen) == total_parameters(frozen) - embedding
    lora = prepared(mode="lora", rank=4, alpha=8.0)
    names = sorted({v.path.split("/")[-1] for v in lora.trainable_weights})
    assert names == ["lora_kernel_a", "lora_kernel_b"]
    assert len(lora.trainable_weights) == 2 * 2 * 2  # query and value of 2 blocks, A and B each
    qlora = prepared(mode="qlora", rank=4)
    modes = {getattr(layer, "quantization_mode", None)
             for layer in qlora._flatten_layers() if isinstance(layer, keras.layers.Dense)
             or type(layer).__name__ == "EinsumDense"}
    assert "int8" in modes
    assert all(layer.quantization_mode is None for layer in qlora._flatten_layers()
               if isinstance(layer, keras.layers.Embedding))  # QLoRA's base: linear layers
    assert trainable_parameters(qlora) == trainable_parameters(lora)
    targets = prepared(mode="lora", rank=2, target_layers=("feedforward_output_dense",))
    assert trainable_parameters(targets) == 2 * (2 * 512 + 2 * 128)  # A 512 x 2, B 2 x 128


def _adapted(info, **settings):
    import keras

    from workbench.hub.finetune import apply_mode
    from workbench.hub.model import wrap_causal_lm
    from workbench.hub.presets import load_causal_lm
    from workbench.settings.hub import FinetuneSettings

    keras.utils.set_random_seed(0)
    model = wrap_causal_lm(load_causal_lm(info), 32)
    apply_mode(model, FinetuneSettings(**settings))
    return model


QLORA_BASES = {"lora": {"mode": "lora"},
               "qlora int8": {"mode": "qlora", "base_quantization": "int8"},
               "qlora int4": {"mode": "qlora", "base_quantization": "int4"}}


def test_qlora_adapters_get_loras_gradient_and_train_like_lora(presets):
    """QLoRA's base is quantized, its adapters are not: on the same adapter values the adapters'
    gradient is LoRA's (up to the base's rounding), and the same steps lower the validation loss
    as far. (Keras' int8 LM head passed no gradient to its input, and QLoRA's loss rose.)"""
    import keras
    import tensorflow as tf

    from workbench.hub.presets import PresetTokens, check_preset, load_tokenizer

    info = check_preset(presets["gpt2"])
    ids = PresetTokens(load_tokenizer(info)).encode(open(TEXT).read())
    windows = ids[: 96 * 33].reshape(96, 33).astype("int32")
    train, val = windows[:64], windows[64:]
    rng = np.random.default_rng(0)
    losses, gradients = {}, {}
    for name, settings in QLORA_BASES.items():
        model = _adapted(info, rank=4, **settings)
        # Non-zero adapters (B starts at zero), the same in every mode, so every factor has a
        # gradient.
        for variable in model.trainable_weights:
            variable.assign(rng.normal(0, 0.05, variable.shape).astype("float32")
                            if name == "lora" else gradients["values"][variable.path])
        if name == "lora":
            gradients["values"] = {v.path: v.numpy() for v in model.trainable_weights}
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                train[:8, 1:], model(train[:8, :-1]), from_logits=True))
        gradients[name] = np.concatenate(
            [g.numpy().ravel() for g in tape.gradient(loss, model.trainable_weights)])
        for variable in model.trainable_weights:  # back to LoRA's start: B = 0
            if variable.path.endswith("lora_kernel_b"):
                variable.assign(np.zeros(variable.shape, "float32"))
        # Eager: eight steps take less time than compiling them.
        model.compile(keras.optimizers.Adam(3e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=True)
        before = model.evaluate(val[:, :-1], val[:, 1:], batch_size=32, verbose=0)
        model.fit(train[:, :-1], train[:, 1:], batch_size=8, epochs=1, shuffle=False, verbose=0)
        losses[name] = (before, model.evaluate(val[:, :-1], val[:, 1:], batch_size=32,
                                                 verbose=0))
    lora, lora_drop = gradients["lora"], losses["lora"][0] - losses["lora"][1]
    assert lora_drop > 0.01, losses
    for name, tolerance in (("qlora int8", 0.002), ("qlora int4", 0.005)):
        cosine = gradients[name] @ lora / (np.linalg.norm(gradients[name]) * np.linalg.norm(lora))
        assert cosine > 0.9, (name, cosine)
        before, after = losses[name]
        assert before - after > 0.8 * lora_drop, (name, losses)
        assert after == pytest.approx(losses["lora"][1], abs=tolerance), (name, losses)


def test_bad_input_is_refused_in_one_line_before_any_work(presets, tmp_path):
    gpt2 = presets["gpt2"]
    cases = {
        "missing": (["--set", f"model_options.preset={tmp_path / 'nowhere'}"],
                    "is not a directory"),
        "not a preset": (["--set", f"model_options.preset={tmp_path}"],
                         "is not a KerasHub preset directory"),
        "not a causal lm": (["--set", f"model_options.preset={presets['bert']}"],
                            "not a causal language model"),
        "remote": (["--set", "model_options.preset=hf://openai-community/gpt2"],
                   "downloads nothing at run time"),
        "kaggle": (["--set", "model_options.preset=kaggle://keras/gpt2/keras/gpt2_base_en"],
                   "remote handle"),
        "rank zero": (["--set", f"model_options.preset={gpt2}", "--set", "finetune.rank=0"],
                      "finetune.rank must be at least 1"),
        "rank too wide": (["--set", f"model_options.preset={gpt2}", "--set",
                           "finetune.rank=1000"], "is larger than target layer"),
        "targets": (["--set", f"model_options.preset={gpt2}", "--set",
                     "finetune.target_layers=('atention',)"], "match no adaptable layer"),
        "qlora gptq": (["--set", f"model_options.preset={gpt2}", "--set", "finetune.mode=qlora",
                        "--set", "finetune.base_quantization=gptq"], "no LoRA on GPTQ"),
        "mode": (["--set", f"model_options.preset={gpt2}", "--set", "finetune.mode=lorra"],
                 "unknown finetune.mode 'lorra'"),
        "context": (["--set", f"model_options.preset={gpt2}", "--set", "lm.context=128"],
                    "beyond the preset's maximum sequence length 64"),
        "tokenizer": (["--set", f"model_options.preset={gpt2}", "--set", "lm.tokenizer=bpe"],
                      "brings its own tokenizer"),
        "search": (["--set", f"model_options.preset={gpt2}", "--stages", "search,train"],
                   "is fine-tuned, not searched"),
    }
    argvs = {name: ["finetune", "--fast", "--out", tmp_path / name.replace(" ", "_"),
                    "--set", f"data={TEXT}", "--set", "lm.context=32", *extra]
             for name, (extra, _) in cases.items()}
    for (name, (_, expected)), result in zip(cases.items(), run_cli_cases(list(argvs.values()))):
        assert result["code"] == 2, (name, result["stderr"][-2000:])
        assert result["stderr"].count("\n") == 1, (name, result["stderr"])
        assert expected in result["stderr"], (name, result["stderr"])
        assert "Traceback" not in result["stderr"]
        assert not (tmp_path / name.replace(" ", "_")).exists(), name


@pytest.mark.slow
def test_fine_tuning_the_workbench_preset_lowers_the_loss_on_new_text(tmp_path):
    """The workbench's own preset, pretrained on Python source (few steps here), fine-tuned on
    the reference manual's prose it never saw."""
    from workbench.hub.pretrain import build_own_preset

    preset = build_own_preset(tmp_path / "preset", steps=150, say=lambda line: None)
    run_dir = tmp_path / "run"
    result = run_cli("finetune", "--stages", "train", "--out", run_dir, "--set",
                     f"model_options.preset={preset}", "--set", "lm.steps=60",
                     "--set", "lm.eval_interval=30", "--set", "lm.max_eval_windows=64",
                     timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    train = json.loads((run_dir / "report.json").read_text())["stages"]["train"]
    assert train["val_loss_after"] < train["val_loss_before"] - 0.02
    assert train["adapter_max_logit_difference"] <= 1e-4


@pytest.mark.slow
def test_lora_fine_tuning_sharded_over_8_jax_devices_matches_one_device(presets, tmp_path):
    reports = {}
    for strategy in ("default", "model_parallel"):
        run_dir = tmp_path / strategy
        result = run_cli("finetune", "--fast", "--stages", "train", "--strategy", strategy,
                         "--out", run_dir, "--set", f"model_options.preset={presets['gpt2']}",
                         *TINY[:4], env={"KERAS_BACKEND": "jax", "JAX_NUM_CPU_DEVICES": "8"},
                         timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        reports[strategy] = json.loads((run_dir / "report.json").read_text())["stages"]["train"]
    one, sharded = reports["default"], reports["model_parallel"]
    assert sharded["val_loss_before"] == pytest.approx(one["val_loss_before"], abs=1e-4)
    assert sharded["val_loss_after"] == pytest.approx(one["val_loss_after"], abs=1e-3)
    assert sharded["val_loss_after"] < sharded["val_loss_before"]
