"""What the language-model family computes for the shipping stages on the recipe's GPT (tiny):
export and verify (LiteRT parity), quantize, distill, through the generic stages and the family's
own settings in the generic sections (export, verify, quantize, distill)."""

from types import SimpleNamespace

import numpy as np
import pytest
from lm_helpers import CONTEXT, TEXT, trained_tiny_gpt

import workbench.lm  # noqa: F401  (registers the family)
from workbench.context import RunContext, RunDir
from workbench.tasks import task_of
from workbench.errors import WorkbenchError
from workbench.settings.lm import GenerateSettings
from workbench.lm.tokenizers import ByteTokens
from workbench.settings import DistillSettings, ExportSettings, QuantizeSettings, VerifySettings
from workbench.stages import STAGES

GPT = dict(builder="workbench", layers=1, width=16, heads=2)


def make_ctx(tmp_path, model, quantize=None, distill=None):
    tokens = np.frombuffer(TEXT, dtype=np.uint8)
    cut = int(len(tokens) * 0.9)
    corpus = SimpleNamespace(train=tokens[:cut], val=tokens[cut:], tokenizer=ByteTokens())
    recipe = SimpleNamespace(
        name="tiny_gpt", batch_size=8, seed=0, student=None,
        generate=GenerateSettings(prompt="def add(", prompts=("class Point:\n",)),
        verify=VerifySettings(num_threads=1, max_examples=32, generate_tokens=16),
        export=ExportSettings(representative_examples=8),
        quantize=QuantizeSettings(group_size=16, **(quantize or {})),
        distill=DistillSettings(**(distill or {})))
    data = SimpleNamespace(corpus=corpus, info=SimpleNamespace(task="language_model"))
    return RunContext(recipe=recipe, run_dir=RunDir(tmp_path), verbose=0, data=data,
                      model=model, task=task_of(data))


@pytest.fixture(scope="module")
def gpt():
    return trained_tiny_gpt(**GPT)


def test_export_then_verify_matches_keras(gpt, tmp_path):
    ctx = STAGES["verify"](STAGES["export"](make_ctx(tmp_path, gpt)))
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
    ctx = STAGES["quantize"](make_ctx(tmp_path, gpt, quantize=dict(keras_modes=("int8",),
                                                                   export_quantized=False)))
    modes = ctx.results["quantize"]["modes"]
    assert list(modes) == ["float32", "int8"]
    assert modes["int8"]["compression"] > 2.5
    assert abs(modes["int8"]["perplexity_change"]) < 0.01
    assert "| int8 |" in (tmp_path / "quantization.md").read_text()


@pytest.mark.slow
def test_distill_stage_trains_a_smaller_student(gpt, tmp_path):
    ctx = make_ctx(tmp_path, gpt, distill=dict(steps=40, student_width=8, learning_rate=1e-2))
    ctx = STAGES["distill"](ctx)
    result = ctx.results["distill"]
    assert result["student_parameters"] < result["teacher_parameters"]
    assert ctx.model.name == "student" and (tmp_path / "model_student.keras").is_file()
    # 40 steps on the teacher's distributions get the student well below a uniform guess.
    assert result["student_val_loss"] < 0.8 * np.log(256)
    assert result["history"]["distillation_loss"][-1] < result["history"]["distillation_loss"][0]


def test_stages_need_the_corpus(gpt, tmp_path):
    ctx = make_ctx(tmp_path, gpt)
    ctx.data = SimpleNamespace(info=SimpleNamespace(task="language_model"))
    ctx.exports = {"float32": {"path": str(tmp_path / "model_float32.tflite")}}
    with pytest.raises(WorkbenchError, match="needs its corpus"):
        STAGES["verify"](ctx)
    assert CONTEXT == 16
