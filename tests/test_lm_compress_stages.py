"""The language-model stages on the recipe's GPT (tiny): export and verify (LiteRT parity),
quantize, distill, and prune's one-line refusal that names the layer."""

from types import SimpleNamespace

import numpy as np
import pytest
from lm_helpers import CONTEXT, TEXT, trained_tiny_gpt

from workbench.context import RunContext, RunDir
from workbench.errors import WorkbenchError
from workbench.lm import compress_stages
from workbench.lm.compress_stages import LanguageModelCompressSettings
from workbench.lm.settings import GenerateSettings
from workbench.lm.tokenizers import ByteTokens

GPT = dict(builder="workbench", layers=1, width=16, heads=2)


def make_ctx(tmp_path, model, **settings):
    tokens = np.frombuffer(TEXT, dtype=np.uint8)
    cut = int(len(tokens) * 0.9)
    corpus = SimpleNamespace(train=tokens[:cut], val=tokens[cut:], tokenizer=ByteTokens())
    recipe = SimpleNamespace(
        name="tiny_gpt", batch_size=8, seed=0, student=None,
        generate=GenerateSettings(prompt="def add(", prompts=("class Point:\n",)),
        verify=SimpleNamespace(num_threads=1),
        lm_compress=LanguageModelCompressSettings(**{
            "eval_windows": 32, "calibration_windows": 8, "group_size": 16,
            "generate_tokens": 16, **settings}))
    data = SimpleNamespace(corpus=corpus, info=SimpleNamespace(task="language_model"))
    return RunContext(recipe=recipe, run_dir=RunDir(tmp_path), verbose=0, data=data,
                      model=model)


@pytest.fixture(scope="module")
def gpt():
    return trained_tiny_gpt(**GPT)


def test_export_then_verify_matches_keras(gpt, tmp_path):
    ctx = compress_stages.verify(compress_stages.export(make_ctx(tmp_path, gpt)))
    assert sorted(ctx.exports) == ["dynamic", "float32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_dynamic.tflite",
                                                          "model_float32.tflite"]
    result = ctx.results["verify"]
    assert result["eval_windows"] == 32
    assert result["float32"]["within_tolerance"], result["float32"]
    assert abs(result["float32"]["val_loss_change_vs_keras"]) < 0.005
    assert result["float32"]["greedy_prompts_matching"] == 2
    assert result["dynamic"]["size_bytes"] < result["float32"]["size_bytes"]


@pytest.mark.slow
def test_quantize_stage_compares_modes(gpt, tmp_path):
    ctx = compress_stages.quantize(make_ctx(tmp_path, gpt, quantize_modes=("int8",),
                                            export_quantized=False))
    modes = ctx.results["quantize"]["modes"]
    assert list(modes) == ["float32", "int8"]
    assert modes["int8"]["compression"] > 2.5
    assert abs(modes["int8"]["perplexity_change"]) < 0.01
    assert "| int8 |" in (tmp_path / "quantization.md").read_text()


@pytest.mark.slow
def test_distill_stage_trains_a_smaller_student(gpt, tmp_path):
    ctx = make_ctx(tmp_path, gpt, distill_steps=40, student_width=8, distill_learning_rate=1e-2)
    ctx = compress_stages.distill(ctx)
    result = ctx.results["distill"]
    assert result["student_parameters"] < result["teacher_parameters"]
    assert ctx.model.name == "student" and (tmp_path / "model_student.keras").is_file()
    # 40 steps on the teacher's distributions get the student well below a uniform guess.
    assert result["student_val_loss"] < 0.8 * np.log(256)
    assert result["history"]["distillation_loss"][-1] < result["history"]["distillation_loss"][0]


def test_prune_names_the_layer_tf_mot_cannot_reach(gpt, tmp_path):
    with pytest.raises(WorkbenchError) as error:
        compress_stages.prune(make_ctx(tmp_path, gpt))
    message = str(error.value)
    assert "\n" not in message
    assert "layer 'token_embedding' (keras.layers.ReversibleEmbedding) is Keras 3-only" in message
    assert "'transformer_layer_0'" in message and "'quantize'" in message
    assert not list(tmp_path.iterdir())


def test_stages_need_the_corpus(gpt, tmp_path):
    ctx = make_ctx(tmp_path, gpt)
    ctx.data = SimpleNamespace(info=SimpleNamespace(task="language_model"))
    with pytest.raises(WorkbenchError, match="needs its corpus"):
        compress_stages.verify(ctx)
    assert CONTEXT == 16
