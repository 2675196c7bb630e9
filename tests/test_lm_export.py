"""LiteRT export of a tiny GPT: the float32 file matches Keras on validation loss (within 0.5%)
and on 32 greedy tokens from fixed prompts; dynamic-range int8 stays close; files are atomic."""

import numpy as np
import pytest
from lm_helpers import CONTEXT, trained_tiny_gpt, windows

from workbench.errors import WorkbenchError
from workbench.lm import compress, export

TINY = dict(builder="workbench", layers=1, width=16, heads=2)
PROMPTS = ("def add(", "class Point:\n", "import os\n")


@pytest.fixture(scope="module")
def model():
    return trained_tiny_gpt(**TINY)


@pytest.fixture(scope="module")
def reference(model):
    return export.keras_reference(model, windows(48, offset=5), PROMPTS, generate_steps=32)


@pytest.fixture(scope="module")
def float32_path(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    path = export.export_language_model(model, folder / "gpt_float32.tflite", "float32")
    assert [p.name for p in folder.iterdir()] == ["gpt_float32.tflite"]
    return path


def test_float32_litert_matches_keras_loss_and_greedy_tokens(reference, float32_path):
    path = float32_path
    result = export.verify_language_model(
        path, windows(48, offset=5), keras_loss=reference["val_loss"],
        keras_tokens=reference["greedy_tokens"], prompts=PROMPTS, generate_steps=32)
    assert abs(result["val_loss_change_vs_keras"]) < export.FLOAT32_LOSS_TOLERANCE
    assert result["greedy_tokens_match_keras"], (result["greedy_tokens"],
                                                 reference["greedy_tokens"])
    assert all(len(tokens) == 32 for tokens in result["greedy_tokens"])
    # The model has learned the text: greedy tokens are not one token repeated.
    assert len(set(result["greedy_tokens"][0])) > 3


@pytest.mark.slow
def test_dynamic_range_int8_is_smaller_and_close(model, reference, float32_path, tmp_path):
    float_path = float32_path
    path = export.export_language_model(model, tmp_path / "d.tflite", "dynamic")
    result = export.verify_language_model(path, windows(48, offset=5),
                                          keras_loss=reference["val_loss"], prompts=PROMPTS,
                                          generate_steps=4)
    assert path.stat().st_size < 0.9 * float_path.stat().st_size
    assert abs(result["val_loss_change_vs_keras"]) < 0.02


def test_litert_logits_resize_to_any_batch(model, float32_path):
    logits = export.LiteRTLogits(float32_path)
    ids = windows(5)[:, :CONTEXT]
    np.testing.assert_allclose(logits(ids), model.predict_on_batch(ids), atol=1e-4)
    np.testing.assert_allclose(logits(ids[:2]), model.predict_on_batch(ids[:2]), atol=1e-4)


@pytest.mark.slow
def test_keras_int8_model_is_tried_and_the_reason_kept(model, tmp_path):
    reason = export.try_export_quantized(compress.quantize_model(model, "int8"),
                                         tmp_path / "k.tflite")
    if reason is None:
        assert export.LiteRTLogits(tmp_path / "k.tflite")(windows(1)[:, :CONTEXT]).shape[-1] == 256
    else:
        assert "Error" in reason and "\n" not in reason
        assert not list(tmp_path.iterdir())  # nothing half-written


def test_bad_format_and_context_mismatch(model, float32_path, tmp_path):
    with pytest.raises(WorkbenchError, match="unknown language-model export format 'int8'"):
        export.export_language_model(model, tmp_path / "x.tflite", "int8")
    with pytest.raises(WorkbenchError, match="reads 16 tokens"):
        export.verify_language_model(float32_path, np.zeros((2, 9), "int32"))
