"""The language-model pieces: corpus and split, tokenizers, windows, the GPT, step-based training
and resume, evaluation and generation (tiny GPTs on generated text)."""

import math
import sysconfig

import keras
import numpy as np
import pytest

from lm_tiny import CONTEXT, tiny_recipe, tiny_text, write_corpus
from workbench.errors import WorkbenchError
from workbench.lm import corpus as corpus_module
from workbench.lm.corpus import (
    load_corpus, random_batches, read_source, stdlib_paths, window_starts, windows_dataset)
from workbench.lm.model import build_gpt, flops_per_token
from workbench.lm.tokenizers import BytePairTokens, ByteTokens


def tiny_gpt(seed=0, **options):
    keras.utils.set_random_seed(seed)
    config = dict(vocabulary_size=256, context=CONTEXT, layers=2, heads=2, width=32)
    config.update(options)
    return build_gpt(**config)


# ---------------------------------------------------------------------------------------------
# Corpus

def test_stdlib_corpus_is_the_issue_definition():
    import glob

    root = sysconfig.get_paths()["stdlib"]
    expected = sorted(p for p in glob.glob(root + "/**/*.py", recursive=True)
                      if "site-packages" not in p and "/test" not in p and "idle_test" not in p)
    paths = stdlib_paths()
    assert paths == expected and len(paths) > 500
    assert not any("/test" in p or "site-packages" in p for p in paths)


def test_stdlib_corpus_is_the_files_concatenated_in_order():
    import tempfile
    from pathlib import Path

    # Not under pytest's tmp_path: its name holds "/test", which the definition filters out.
    tmp_path = Path(tempfile.mkdtemp(prefix="corpus-"))
    for name, text in [("b.py", "B"), ("a.py", "A"), ("sub/c.py", "C"), ("test/x.py", "T"),
                       ("site-packages/y.py", "S"), ("z.txt", "Z")]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert corpus_module.stdlib_bytes(str(tmp_path)) == b"ABC"


def test_split_is_first_ninety_percent_then_last_ten(tmp_path):
    text = tiny_text(200).encode()
    path = tmp_path / "t.txt"
    path.write_bytes(text)
    corpus = load_corpus(str(path), context=CONTEXT)
    cut = int(len(text) * 0.9)
    assert corpus.train.tobytes() == text[:cut] and corpus.val.tobytes() == text[cut:]
    assert corpus.val_bytes == len(text) - cut


def test_fingerprint_follows_content_tokenizer_and_split(tmp_path):
    path = write_corpus(tmp_path)
    base = load_corpus(str(path), context=CONTEXT).fingerprint
    assert base == load_corpus(str(path), context=CONTEXT).fingerprint
    assert base != load_corpus(str(path), context=CONTEXT, val_fraction=0.2).fingerprint
    path.write_text(tiny_text(400) + "#")
    assert base != load_corpus(str(path), context=CONTEXT).fingerprint


def test_folder_and_module_function_sources(tmp_path, monkeypatch):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("two")
    (tmp_path / "d" / "a.txt").write_text("one")
    (tmp_path / "d" / "sub" / "c.txt").write_text("three")
    (tmp_path / "d" / ".hidden").write_text("no")
    assert read_source(str(tmp_path / "d")) == b"onetwothree"
    (tmp_path / "textsource.py").write_text("def lines():\n    return ['x = 1\\n', b'y = 2\\n']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert read_source("textsource:lines") == b"x = 1\ny = 2\n"


@pytest.mark.parametrize("content,message", [("", "is empty"), ("x" * 20, "too short")])
def test_empty_or_too_short_corpus_is_refused(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_text(content)
    with pytest.raises(WorkbenchError, match=message):
        load_corpus(str(path), context=CONTEXT)


def test_unknown_source_and_tokenizer_are_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="neither 'stdlib'"):
        read_source(str(tmp_path / "missing.txt"))
    with pytest.raises(WorkbenchError, match="unknown tokenizer 'bytes'.*'byte'"):
        load_corpus(str(write_corpus(tmp_path)), tokenizer="bytes", context=CONTEXT)


# ---------------------------------------------------------------------------------------------
# Tokenizers

def test_byte_tokens_are_byte_values_as_in_keras_hub():
    import keras_hub

    text = "def f(x):\n    return 'é'\n"
    ids = ByteTokens().encode(text)
    assert list(ids) == list(text.encode("utf-8"))
    assert list(ids) == list(np.asarray(keras_hub.tokenizers.ByteTokenizer()(text)))
    assert ByteTokens().decode(ids) == text


def test_bpe_round_trips_and_keeps_bytes_below_256():
    text = tiny_text(300).encode()
    tokenizer = BytePairTokens.train(text, vocabulary_size=300)
    assert tokenizer.vocabulary_size == 300
    ids = tokenizer.encode_bytes(text)
    assert len(ids) < len(text) / 1.5 and ids.max() < 300
    assert tokenizer.decode_bytes(ids) == text
    assert tokenizer.encode_bytes(b"\x00\xff").tolist() == [0, 255]
    # Runs of one byte pair up left to right: "aaaaa" -> (aa)(aa)a.
    runs = BytePairTokens([(97, 97)])
    assert runs.encode_bytes(b"aaaaa").tolist() == [256, 256, 97]
    assert int(tokenizer.token_bytes()[ids].sum()) == len(text)


# ---------------------------------------------------------------------------------------------
# Windows

def test_evaluation_windows_score_every_token_once():
    tokens = np.arange(100, dtype=np.uint8)
    starts = window_starts(len(tokens), 8)
    targets = np.concatenate([y for _, y in windows_dataset(tokens, 8, starts).as_numpy_iterator()])
    assert targets.tolist() == list(range(1, 1 + len(targets)))
    assert len(targets) > 100 - 8 - 1
    for x, y in windows_dataset(tokens, 8, starts[:2]).as_numpy_iterator():
        assert x.dtype == np.int32 and (y[:-1] == x[1:]).all()


def test_random_batches_are_reproducible_and_resumable():
    tokens = np.frombuffer(tiny_text(100).encode(), dtype=np.uint8)
    first = [b for b in random_batches(tokens, 8, 4, seed=3).take(5).as_numpy_iterator()]
    again = [b for b in random_batches(tokens, 8, 4, seed=3, first_step=3)
             .take(2).as_numpy_iterator()]
    for (x1, y1), (x2, y2) in zip(first[3:], again):
        assert (x1 == x2).all() and (y1 == y2).all()
    x, y = first[0]
    assert x.shape == (4, 8) and (x[:, 1:] == y[:, :-1]).all()
    other = next(random_batches(tokens, 8, 4, seed=4).as_numpy_iterator())
    assert not (other[0] == x).all()


# ---------------------------------------------------------------------------------------------
# Model

@pytest.mark.parametrize("block", ["fused", "keras_hub"])
def test_gpt_is_causal_tied_and_round_trips(tmp_path, block):
    model = tiny_gpt(block=block)
    x = np.random.default_rng(0).integers(0, 256, (2, CONTEXT)).astype("int32")
    logits = np.asarray(model(x))
    assert logits.shape == (2, CONTEXT, 256) and logits.dtype == np.float32
    changed = x.copy()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    np.testing.assert_allclose(np.asarray(model(changed))[:, :10], logits[:, :10], atol=1e-5)
    assert not np.allclose(np.asarray(model(changed))[:, 10:], logits[:, 10:])
    embeddings = [w for w in model.weights if w.shape == (256, 32)]
    assert len(embeddings) == 1  # the output layer reuses the input embedding
    if block == "fused":
        assert not any("bias" in w.path or w.path.endswith("beta") for w in model.weights)
    path = tmp_path / "gpt.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x)), logits, atol=1e-6)
    assert len(reloaded.transformer_layers) == 2


def test_fused_block_gelu_is_exact_and_old_saves_keep_the_approximation():
    from workbench.lm.model import GPT, DecoderBlock

    x = np.linspace(-4, 4, 2 * 3 * 32, dtype="float32").reshape(2, 3, 32)
    exact, approximate = DecoderBlock(2, 64), DecoderBlock(2, 64, approximate_gelu=True)
    exact.build(x.shape)
    approximate.build(x.shape)
    weights = [10 * w if w.ndim == 2 else w for w in exact.get_weights()]  # visible branches
    exact.set_weights(weights)
    approximate.set_weights(weights)
    assert not exact.approximate_gelu and not build_gpt().approximate_gelu
    branch = np.asarray(exact(x)) - x
    assert np.abs(branch).max() > 1.0
    assert np.abs(branch - (np.asarray(approximate(x)) - x)).max() > 1e-4
    # A configuration saved before the setting existed was trained with the tanh form.
    old = {key: value for key, value in exact.get_config().items() if key != "approximate_gelu"}
    assert DecoderBlock.from_config(old).approximate_gelu
    config = {key: value for key, value in tiny_gpt().get_config().items()
              if key != "approximate_gelu"}
    assert all(block.approximate_gelu for block in GPT.from_config(config).transformer_layers)
    assert not any(block.approximate_gelu for block in tiny_gpt().transformer_layers)


def test_default_gpt_is_nanogpt_cpu_config_and_flops_per_token():
    model = build_gpt()
    assert model.input_shape == (None, 64) and model.output_shape == (None, 64, 256)
    assert (model.num_layers, model.num_heads, model.hidden_dim) == (4, 4, 128)
    n = model.count_params() - 64 * 128  # without the position table
    assert n == 4 * (12 * 128 * 128 + 2 * 128) + 256 * 128 + 128
    assert flops_per_token(model) == 6 * n + 12 * 4 * 64 * 128
    assert flops_per_token(model, training=False) == 2 * n + 4 * 4 * 64 * 128


# ---------------------------------------------------------------------------------------------
# Training

def _train(tmp_path, steps=40, resume=False, callbacks=(), **changes):
    from workbench.context import RunDir
    from workbench.lm.training import compile_language_model, train_language_model

    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = tiny_recipe(write_corpus(tmp_path), lm__steps=steps, **changes)
    corpus = load_corpus(recipe.data, context=CONTEXT)
    model = tiny_gpt(seed=1)
    compile_language_model(model, recipe, recipe.lm, steps_per_execution=5)
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir(exist_ok=True)
    state, reason = train_language_model(model, corpus.train, corpus.val, recipe, recipe.lm,
                                         run_dir=run_dir, resume=resume, say=lambda *a: None,
                                         extra_callbacks=callbacks)
    return model, state, reason, run_dir


def test_training_counts_steps_validates_on_schedule_and_learns(tmp_path):
    model, state, reason, run_dir = _train(tmp_path, lm__checkpoint_steps=20)
    assert reason is None and state.eval_steps == [20, 40]
    assert int(model.optimizer.iterations.numpy()) == 40
    assert state.val_loss[-1] < math.log(256) - 1.5  # far below the uniform guess (5.55)
    assert state.measured_tokens > 0
    # Training seconds at each validation grow, end at the training total and leave the
    # validations (timed on their own) out.
    assert len(state.eval_train_seconds) == 2
    assert 0 < state.eval_train_seconds[0] < state.eval_train_seconds[1]
    assert state.eval_train_seconds[1] <= state.train_seconds + 1e-6
    assert state.validation_seconds > 0
    assert abs(state.train_seconds + state.validation_seconds - state.total_seconds) < 1e-6
    # Backed up every 20 steps; a finished training leaves no backup behind.
    assert not (run_dir / "backup").exists() and not (run_dir / "lm_state.json").exists()


def test_weight_decay_skips_vectors_and_schedule_is_warmup_then_cosine(tmp_path):
    from workbench.lm.training import learning_rate_schedule, make_optimizer

    recipe = tiny_recipe(tmp_path / "unused", lm__steps=100, lm__warmup_steps=10,
                         lm__min_learning_rate=1e-4, learning_rate=1e-3)
    model = tiny_gpt()
    optimizer = make_optimizer(recipe, recipe.lm, model)
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed == {v.path for v in model.trainable_variables if len(v.shape) >= 2}
    schedule = learning_rate_schedule(recipe, recipe.lm)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 200)]
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-5, atol=1e-9)


class _Crash(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 5
        if self.seen >= self.after:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_after_a_crash_continues_exactly(tmp_path):
    reference, _, _, _ = _train(tmp_path / "a", steps=20, lm__eval_interval=20,
                                lm__checkpoint_steps=10)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", steps=20, lm__eval_interval=20, lm__checkpoint_steps=10,
               callbacks=[_Crash(15)])
    model, state, _, _ = _train(tmp_path / "b", steps=20, resume=True, lm__eval_interval=20,
                                lm__checkpoint_steps=10)
    assert int(model.optimizer.iterations.numpy()) == 20
    for resumed, uninterrupted in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    model, state, _, _ = _train(tmp_path, steps=5, lm__eval_interval=5, lm__accumulation=2)
    assert state.eval_steps == [5] and state.micro_step == 10
    assert int(model.optimizer.iterations.numpy()) == 5


# ---------------------------------------------------------------------------------------------
# Evaluation and generation

def test_evaluation_is_mean_token_nll_perplexity_and_bits_per_byte():
    from workbench.lm.evaluate import evaluate_split

    model = tiny_gpt()
    tokens = np.frombuffer(tiny_text(30).encode(), dtype=np.uint8)
    metrics = evaluate_split(model, tokens, CONTEXT, batch_size=7)
    starts = window_starts(len(tokens), CONTEXT)
    x = np.stack([tokens[s:s + CONTEXT] for s in starts]).astype("int32")
    y = np.stack([tokens[s + 1:s + CONTEXT + 1] for s in starts])
    logits = np.asarray(model(x), dtype=np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, y[..., None].astype(int), -1).mean()
    assert metrics["tokens"] == y.size
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(expected / math.log(2), rel=1e-5)


def test_greedy_generation_is_argmax_of_each_next_token():
    from workbench.lm.generate import generate_text

    model = tiny_gpt(seed=2)
    prompt = "def main("
    sample = generate_text(model, ByteTokens(), [prompt], max_tokens=9, sampler="greedy")[0]
    ids = list(prompt.encode())
    for _ in range(9):  # past the 16-token context: a sliding window
        window = (ids[-CONTEXT:] + [0] * CONTEXT)[:CONTEXT]
        position = min(len(ids), CONTEXT) - 1
        ids.append(int(np.asarray(model(np.array([window], "int32")))[0, position].argmax()))
    assert sample["continuation"] == ByteTokens().decode(ids[len(prompt):])
    # In one batch with a shorter prompt, each prompt still gets its own greedy continuation.
    both = generate_text(model, ByteTokens(), ["x", prompt], max_tokens=9, sampler="greedy")
    assert both[1] == sample and both[0]["prompt"] == "x"
    assert len(both[0]["continuation"].encode("utf-8", "replace")) >= 9


@pytest.mark.parametrize("sampler", ["top_k", "top_p", "random"])
def test_random_samplers_are_seeded(sampler):
    from workbench.lm.generate import generate_text

    model = tiny_gpt()
    runs = [generate_text(model, ByteTokens(), ["x = "], max_tokens=8, sampler=sampler, k=5,
                          p=0.9, temperature=1.5, seed=7)[0]["continuation"] for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0].encode("utf-8", "replace")) >= 1


def test_generation_refuses_a_model_that_is_not_a_language_model():
    from workbench.lm.generate import generate_text

    classifier = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    with pytest.raises(WorkbenchError, match="needs a language model"):
        generate_text(classifier, ByteTokens(), ["x"], max_tokens=2)
