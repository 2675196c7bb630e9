"""Language-model quantization with Keras' `model.quantize`: every mode on a tiny GPT."""

import keras
import numpy as np
import pytest
from lm_helpers import CONTEXT, build_tiny_gpt, trained_tiny_gpt, windows

from workbench.errors import WorkbenchError
from workbench.lm import compress

TINY = dict(builder="workbench", layers=1, width=16, heads=2)


@pytest.fixture(scope="module")
def model():
    return trained_tiny_gpt(**TINY)


@pytest.fixture(scope="module")
def float_result(model):
    return compress.evaluate_language_model(model, windows(32, offset=5), generate_steps=8)


def _stored_dtypes(model, layer_name):
    return {v.path.split("/")[-1]: v.dtype for v in model.weights
            if v.path.startswith(layer_name + "/") or f"/{layer_name}/" in v.path}


@pytest.mark.parametrize("mode, max_change, min_compression", [
    pytest.param("int8", 0.01, 2.5, marks=pytest.mark.slow),
    pytest.param("int4", 0.05, 3.3, marks=pytest.mark.slow),
    pytest.param("gptq", 0.05, 2.8, marks=pytest.mark.slow)])
def test_quantize_mode_keeps_the_loss_and_shrinks_the_weights(
        model, float_result, mode, max_change, min_compression):
    quantized = compress.quantize_model(model, mode, windows(16, offset=11), group_size=16,
                                        num_samples=4)
    result = compress.evaluate_language_model(quantized, windows(32, offset=5), generate_steps=8)
    change = result["perplexity"] / float_result["perplexity"] - 1
    assert abs(change) < max_change, (mode, change)
    assert float_result["weight_bytes"] / result["weight_bytes"] > min_compression
    kernel = _stored_dtypes(quantized, "mlp_in")["kernel"]
    assert kernel == ("int8" if mode == "int8" else "uint8" if mode == "gptq" else "int8")
    # The tied token embedding is quantized too (int8 for the block-wise modes).
    assert _stored_dtypes(quantized, "token_embedding")["embeddings"] == "int8"
    assert result["generation_tokens_per_second"] > 0
    # The original model is untouched.
    assert all(v.dtype == "float32" for v in model.weights)


@pytest.mark.slow
def test_awq_mode(model, float_result):
    quantized = compress.quantize_model(model, "awq", windows(16, offset=11), group_size=16,
                                        num_samples=4)
    result = compress.evaluate_language_model(quantized, windows(32, offset=5), generate_steps=8)
    assert abs(result["perplexity"] / float_result["perplexity"] - 1) < 0.05
    assert any("awq_scales" in v.path for v in quantized.weights)
    assert float_result["weight_bytes"] / result["weight_bytes"] > 2.5


def test_blocks_are_found_in_call_order_and_their_input_reached():
    model = build_tiny_gpt(layers=3, width=16)
    blocks = compress.transformer_blocks(model)
    assert [b.name for b in blocks] == ["block_0", "block_1", "block_2"]
    ids = windows(2)[:, :CONTEXT]
    reached = compress.InputsOfBlock(model, blocks[0])(ids)
    embedding = model.get_layer("token_embedding")(ids)
    expected = embedding + model.get_layer("position_embedding")(embedding)
    np.testing.assert_allclose(np.asarray(reached), np.asarray(expected), atol=1e-6)
    assert not any("call" in vars(block) for block in blocks)  # hooks removed


def test_token_losses_match_keras_cross_entropy(model):
    data = windows(8)
    total, count = compress.token_losses(compress.keras_logits(model), data, batch_size=3)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        data[:, 1:], model.predict_on_batch(data[:, :-1]))
    assert count == 8 * CONTEXT
    assert total / count == pytest.approx(float(loss), rel=1e-5)


def test_greedy_generation_reads_a_fixed_left_aligned_context(model):
    prompt = compress.encode_prompt("def add(a, b):\n    return a + b\n\nclass")
    [tokens] = compress.greedy_generate(compress.keras_logits(model), [prompt], 3, CONTEXT)
    window = prompt[-CONTEXT:]
    expected = int(np.argmax(model.predict_on_batch(np.array([window]))[0, -1]))
    assert tokens[0] == expected and len(tokens) == 3
    short = compress.encode_prompt("de")
    [tokens] = compress.greedy_generate(compress.keras_logits(model), [short], 1, CONTEXT)
    padded = np.zeros((1, CONTEXT), "int32")
    padded[0, :2] = short
    assert tokens[0] == int(np.argmax(model.predict_on_batch(padded)[0, 1]))


def test_bad_requests_are_one_line_errors():
    plain = keras.Sequential([keras.Input((CONTEXT,), dtype="int32"),
                              keras.layers.Embedding(260, 8), keras.layers.Dense(260)])
    with pytest.raises(WorkbenchError, match="no Transformer decoder blocks"):
        compress.quantize_model(plain, "gptq", windows(4))
    with pytest.raises(WorkbenchError, match="unknown language-model quantize mode 'int5'"):
        compress.quantize_model(plain, "int5")
    with pytest.raises(WorkbenchError, match="calibration windows"):
        compress.quantize_model(build_tiny_gpt(layers=1, width=16), "awq")


@pytest.mark.slow
def test_gptq_and_awq_use_the_calibration_data(model):
    """Keras' statistics hooks must see the calibration windows: otherwise both modes are plain
    rounding, identical to each other and to themselves on any other calibration data."""
    x = windows(4)[:, :CONTEXT]
    random_windows = np.random.default_rng(1).integers(0, 256, size=(16, CONTEXT + 1))
    outputs = {}
    for mode, calibration in (("gptq", windows(16, offset=11)), ("gptq_random", random_windows),
                              ("awq", windows(16, offset=11))):
        quantized = compress.quantize_model(model, mode.split("_")[0], calibration,
                                            group_size=16, num_samples=4)
        outputs[mode] = np.asarray(quantized.predict_on_batch(x))
    assert np.abs(outputs["gptq"] - outputs["gptq_random"]).max() > 1e-4
    assert np.abs(outputs["gptq"] - outputs["awq"]).max() > 1e-4
