"""Instruction tuning in the causal-LM family: conversation data (every format, read as a stream,
split by example), chat templates (named ones, a checkpoint's own, sandboxed), the assistant mask,
best-fit-decreasing packing with the weights, the weighted loss, and the `sft` recipe end to end on
a KerasHub preset and on Hugging Face Llama 3 and Qwen3 checkpoint directories (tiny, random
weights: tests/hub_presets.py, tests/hf_checkpoints.py), with its bad inputs refused."""

import csv
import json
import shutil

import numpy as np
import pytest

from conftest import run_cli_cases
from hf_checkpoints import QWEN3_TEMPLATE, make_llama3_checkpoint, make_qwen3_checkpoint
from hub_presets import vocabulary

QUESTIONS = [("dedent?", "Removes indent."), ("wrap?", "Splits lines."),
             ("fill?", "Wraps text."), ("indent?", "Adds a prefix."),
             ("shorten?", "Cuts text.")]


def chats(count=60):
    """Short conversations, a third with a system turn and a third with two assistant turns."""
    records = []
    for index in range(count):
        question, answer = QUESTIONS[index % len(QUESTIONS)]
        messages = [{"role": "system", "content": "Be brief."}] if index % 3 == 0 else []
        messages += [{"role": "user", "content": f"{index} {question}"},
                     {"role": "assistant", "content": answer}]
        if index % 3 == 1:
            messages += [{"role": "user", "content": "More?"},
                         {"role": "assistant", "content": "No."}]
        records.append({"messages": messages})
    return records


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def make_chat_preset(directory):
    """A tiny KerasHub GPT-2 preset (random weights, tests/hub_presets.py's vocabulary) with
    room for a few short conversations per window."""
    import keras

    from workbench.hub.pretrain import build_causal_lm

    keras.utils.set_random_seed(0)
    words, merges = vocabulary()
    build_causal_lm(words, merges, layers=2, heads=2, width=64, max_sequence_length=256,
                    context=128).save_to_preset(str(directory))
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {"gpt2": make_chat_preset(root / "gpt2"),
            "llama3": make_llama3_checkpoint(root / "llama3"),
            "qwen3": make_qwen3_checkpoint(root / "qwen3")}


# ---- data formats --------------------------------------------------------------------------

def test_every_format_reads_as_the_same_conversation(tmp_path):
    from workbench.hub.chats import conversations, is_conversation_source

    expected = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    sources = {
        "messages.jsonl": [{"messages": expected}],
        "completion.jsonl": [{"prompt": "Q", "completion": "A"}],
        "response.jsonl": [{"prompt": "Q", "response": "A"}],
        "listed.jsonl": [{"prompt": [expected[0]], "completion": [expected[1]]}],
        "alpaca.jsonl": [{"instruction": "Q", "input": "", "output": "A"}],
    }
    for name, records in sources.items():
        path = write_jsonl(tmp_path / name, records)
        assert is_conversation_source(str(path))
        assert [c.messages for c in conversations(str(path))] == [expected], name
    alpaca = write_jsonl(tmp_path / "input.jsonl",
                         [{"instruction": "Q", "input": "text", "output": "A"}])
    assert next(conversations(str(alpaca))).messages[0]["content"] == "Q\n\ntext"
    for name, header in (("named.csv", ["id", "question", "answer"]),
                         ("two.csv", ["left", "right"])):
        with open(tmp_path / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerow(["7", "Q", "A"][-len(header):])
        assert [c.messages for c in conversations(str(tmp_path / name))] == [expected], name
    assert [c.messages for c in conversations(str(tmp_path / "named.csv"), "csv",
                                              ("answer", "question"))] == [
        [{"role": "user", "content": "A"}, {"role": "assistant", "content": "Q"}]]
    # A folder of them reads every file in path order; text is not conversations.
    assert len(list(conversations(str(tmp_path)))) == 8
    (tmp_path / "notes.txt").write_text("plain text")
    assert not is_conversation_source(str(tmp_path / "notes.txt"))
    assert is_conversation_source(str(tmp_path / "notes.txt"), "messages")
    assert not is_conversation_source(str(tmp_path / "messages.jsonl"), "text")
    assert is_conversation_source("workbench.hub.stdlib_chats:stdlib_conversations")
    assert not is_conversation_source("workbench.hub.corpora:python_docs")


def test_the_source_is_streamed_and_split_by_example_with_the_seed(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.hub.chats import conversations, split_conversations

    path = write_jsonl(tmp_path / "many.jsonl", chats(2000))
    with open(path, "a") as handle:
        handle.write("{not json\n")
    stream = conversations(str(path))
    assert len([next(stream) for _ in range(1999)]) == 1999  # read lazily: line 2001 not yet
    with pytest.raises(WorkbenchError, match="line 2001 is not valid JSON"):
        list(stream)
    path = write_jsonl(tmp_path / "clean.jsonl", chats(2000))
    first = [(i, v) for i, v, _ in split_conversations(str(path), 0, 0.1)]
    assert first == [(i, v) for i, v, _ in split_conversations(str(path), 0, 0.1)]
    other = [(i, v) for i, v, _ in split_conversations(str(path), 1, 0.1)]
    assert first != other
    share = sum(v for _, v in first) / len(first)
    assert 0.08 < share < 0.12


# ---- templates ------------------------------------------------------------------------------

def test_named_templates_give_the_assistant_turns_and_a_generation_prompt():
    from workbench.hub.chat_template import NAMED_TEMPLATES, resolve_template

    class Tokenizer:
        start_token, end_token = "<s>", "</s>"

    messages = chats(2)[1]["messages"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    for name in NAMED_TEMPLATES:
        template = resolve_template(name, "/nonexistent", Tokenizer())
        text, spans = template.assistant_spans(messages)
        assert [text[a:b].strip() for a, b in spans] == [
            answer + template.end_of_turn for answer in answers], name
        prompt = template.generation_prompt("Hi?")
        assert "Hi?" in prompt and prompt == template.render(
            [{"role": "user", "content": "Hi?"}], add_generation_prompt=True)
    assert resolve_template("plain", "/nonexistent", Tokenizer()).end_of_turn == "</s>"
    assert resolve_template("llama3", "/nonexistent", Tokenizer()).render(
        chats(1)[0]["messages"]).startswith("<s><|start_header_id|>system")


def test_a_checkpoints_own_template_is_found_and_rendered_in_a_sandbox(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.hub.chat_template import ChatTemplate, checkpoint_template

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<s>"}, "eos_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "tools"},
                          {"name": "default", "template": "{{ bos_token }}default"}]}))
    source, tokens = checkpoint_template(tmp_path)
    assert source == "{{ bos_token }}default" and tokens == {"bos_token": "<s>",
                                                             "eos_token": "</s>"}
    (tmp_path / "chat_template.jinja").write_text("jinja file")
    assert checkpoint_template(tmp_path)[0] == "jinja file"  # the file wins, as in Transformers
    failing = ChatTemplate("strict", "{% if messages[0]['role'] == 'system' %}"
                           "{{ raise_exception('System role not supported') }}{% endif %}ok")
    assert failing.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(WorkbenchError, match="System role not supported"):
        failing.render([{"role": "system", "content": "x"}])
    escape = ChatTemplate("escape", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(WorkbenchError, match="SecurityError"):
        escape.render([])
    with pytest.raises(WorkbenchError, match="does not compile"):
        ChatTemplate("broken", "{% for %}")
    # Newest turn first, in capitals: no prefix renders as the whole, and no content as given.
    shouting = ChatTemplate("upper", "{% for m in messages | reverse %}{{ m.content | upper }}|"
                                     "{% endfor %}")
    with pytest.raises(WorkbenchError, match="cannot be told apart"):
        shouting.assistant_spans([{"role": "user", "content": "q"},
                                  {"role": "assistant", "content": "an answer"}])
    trimmed = ChatTemplate("trim", "{% for m in messages %}\n    {% if m %}{{ m.content }}"
                                   "{% endif %}\n{% endfor %}")
    assert trimmed.render([{"role": "user", "content": "a"}]) == "a"  # trim/lstrip blocks


def test_qwen3_renders_earlier_turns_differently_and_the_spans_still_hold():
    from workbench.hub.chat_template import ChatTemplate

    template = ChatTemplate("qwen3", QWEN3_TEMPLATE, eos_token="<|im_end|>")
    assert template.end_of_turn == "<|im_end|>"
    messages = chats(2)[1]["messages"]
    text, spans = template.assistant_spans(messages)
    turns = [text[a:b] for a, b in spans]
    assert turns[0] == "Splits lines.<|im_end|>"
    assert turns[1] == "<think>\n\n</think>\n\nNo.<|im_end|>\n"


# ---- tokens and weights ---------------------------------------------------------------------

def _recipe(data, **settings):
    from workbench.recipe import Recipe, apply_overrides

    recipe = Recipe(name="t", model=None, task="causal_lm", data=str(data),
                    data_options={"val_fraction": 0.2})
    return apply_overrides(recipe, [f"{key.replace('__', '.')}={value}"
                                    for key, value in settings.items()])


def _load(checkpoint, recipe):
    from workbench.hub.presets import PresetTokens, check_preset, load_tokenizer
    from workbench.hub.sft import load_conversation_data

    info = check_preset(checkpoint)
    return load_conversation_data(recipe, PresetTokens(load_tokenizer(info)), info)


def test_only_the_assistant_tokens_weigh_and_packing_keeps_them(checkpoints, tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", chats(60))
    data = _load(checkpoints["gpt2"], _recipe(path, lm__context=128))
    tokens, packed = data.corpus.tokenizer, data.packed
    stats = data.stats
    assert stats["template"] == "plain" and stats["end_of_turn"] == "<|endoftext|>"
    assert stats["train_examples"] + stats["val_examples"] == 60
    assert len(packed) < stats["windows_unpacked"] and packed.width == 129
    assert stats["padding_packed"] < stats["padding_unpacked"]
    assert 0 < stats["trained_fraction"] < 0.6
    trained = tokens.decode(packed.tokens[packed.weights == 1])
    assert "### User" not in trained and "Be brief" not in trained
    assert "No.<|endoftext|>" in trained
    # Every window: examples and separators, then padding; weights sum to the trained tokens.
    assert int(packed.weights.sum()) == stats["trained_tokens"]
    assert all(packed.weights[row, packed.used[row]:].sum() == 0 for row in range(len(packed)))
    # Validation is one conversation per window, and the prompt is what generation sees.
    assert len(data.validation) == stats["val_examples"]
    first = data.validation.tokens[0, :data.validation.used[0]]
    prompt = data.encode_prompt("dedent?")
    assert tokens.decode(prompt).endswith("### Assistant:\n")
    assert data.chat.stop_token_ids() == (int(first[-1]),)  # the end-of-sequence separator
    everything = _load(checkpoints["gpt2"], _recipe(path, lm__context=128, sft__train_on="all"))
    assert everything.stats["trained_fraction"] > 0.95
    unpacked = _load(checkpoints["gpt2"], _recipe(path, lm__context=128, sft__packing=False))
    assert len(unpacked.packed) == unpacked.stats["train_examples"]
    assert unpacked.stats["trained_tokens"] == stats["trained_tokens"]


def test_overlong_conversations_are_cut_keeping_the_response_or_dropped():
    from workbench.hub.sft import fit_to_context

    ids = np.arange(20)
    weights = np.zeros(20, np.uint8)
    weights[14:18] = 1
    cut, kept, was_cut = fit_to_context(ids, weights, 8)
    assert was_cut and list(cut) == list(range(10, 18))  # the response whole, prompt cut
    assert kept[4:].tolist() == [1, 1, 1, 1] and kept[0] == 0
    weights[:] = 0
    weights[3:6] = 1
    assert list(fit_to_context(ids, weights, 8)[0]) == list(range(8))  # the head holds it all
    weights[3:20] = 1
    cut, kept, _ = fit_to_context(ids, weights, 8)
    # A quarter window of prompt (ids 1, 2), then as much response as fits.
    assert list(cut) == list(range(1, 9)) and kept.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert fit_to_context(ids[:5], weights[:5], 8)[2] is False


def test_best_fit_decreasing_packs_tightly_and_the_weights_follow_the_tokens():
    from workbench.lm.packing import best_fit_decreasing, pack, padding_fraction

    sizes = [6, 5, 4, 3, 2, 2, 1, 1]
    bins = best_fit_decreasing(sizes, 8)
    assert sorted(i for b in bins for i in b) == list(range(8))
    assert all(sum(sizes[i] for i in b) <= 8 for b in bins) and len(bins) == 3
    assert bins[0] == [0, 4]  # 6 first, then the 2 that fills it best
    lengths = np.array(sizes) - 1  # each example's tokens, its separator makes the size
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.arange(1, offsets[-1] + 1, dtype=np.int32)
    weights = (ids % 2).astype(np.uint8)
    windows = pack(ids, weights, offsets, bins, 8, separator=0)
    for row, items in enumerate(bins):
        position = 0
        for item in items:
            span = slice(offsets[item], offsets[item + 1])
            length = int(lengths[item])
            assert windows.tokens[row, position:position + length].tolist() == ids[span].tolist()
            assert (windows.weights[row, position:position + length].tolist()
                    == weights[span].tolist())
            assert windows.tokens[row, position + length] == 0
            position += length + 1
        assert windows.used[row] == position
    assert windows.weights.sum() == weights.sum()
    assert padding_fraction(sizes, len(bins), 8) == pytest.approx(1 - 24 / 24)
    assert padding_fraction(sizes, len(sizes), 8) == pytest.approx(1 - 24 / 64)
    assert windows.stream().tolist() == [t for row, n in enumerate(windows.used)
                                         for t in windows.tokens[row, :n]]


def test_packed_batches_see_every_window_once_an_epoch_and_resume_exactly():
    from workbench.lm.packing import PackedWindows, batch_rows, packed_batches

    rows = np.concatenate([batch_rows(10, 5, 3, step) for step in range(4)])
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))
    windows = PackedWindows(np.arange(10 * 5, dtype=np.int32).reshape(10, 5),
                            np.ones((10, 5), np.uint8))
    stream = list(packed_batches(windows, 4, seed=3).take(5))
    resumed = list(packed_batches(windows, 4, seed=3, first_step=3).take(2))
    for (x, y, w), (x2, y2, w2) in zip(stream[3:], resumed):
        assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.array_equal(w, w2)
    x, y, w = stream[0]
    assert x.shape == (4, 4) and np.array_equal(x[:, 1:], y[:, :-1]) and w.dtype == "float32"


def test_the_weighted_loss_is_the_mean_over_trained_tokens_only():
    import keras

    from workbench.lm.evaluate import evaluate_windows
    from workbench.lm.packing import PackedWindows
    from workbench.lm.training import language_model_loss

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(11)(keras.layers.Embedding(11, 4)(inputs)))
    rng = np.random.default_rng(0)
    windows = PackedWindows(rng.integers(0, 11, (3, 7)).astype(np.int32),
                            (rng.random((3, 7)) < 0.4).astype(np.uint8))
    x, y, w = windows.rows(np.arange(3))
    losses = keras.ops.convert_to_numpy(keras.ops.sparse_categorical_crossentropy(
        y, model(x), from_logits=True))
    expected = float((losses * w).sum() / w.sum())
    assert float(language_model_loss(weighted=True)(y, model(x), sample_weight=w)) == \
        pytest.approx(expected, rel=1e-5)
    metrics = evaluate_windows(model, windows, batch_size=2)
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["tokens"] == int(w.sum()) and metrics["positions"] == 18


# ---- the recipe, end to end, and its bad inputs ---------------------------------------------

FAST = ["--set", "lm.context=128", "--set", "lm.steps=6", "--set", "lm.eval_interval=3",
        "--set", "lm.warmup_steps=1", "--set", "generate.max_tokens=8"]


@pytest.fixture(scope="module")
def conversations_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", chats(60))


def _run_all(root, cases):
    argvs = [["sft", "--fast", "--out", root / name.replace(" ", "_"), *FAST, *extra]
             for name, (extra, _) in cases.items()]
    return dict(zip(cases, run_cli_cases(argvs, timeout=900)))


@pytest.fixture(scope="module")
def sft_runs(checkpoints, conversations_file, tmp_path_factory):
    """`sft --fast` on the KerasHub preset and every bad input, in one process."""
    root = tmp_path_factory.mktemp("sft")
    data = conversations_file
    bad = root / "bad"
    bad.mkdir()
    records = chats(4)
    files = {
        "malformed": "".join(json.dumps(r) + "\n" for r in records[:2]) + "{\"messages\": [\n",
        "role": json.dumps({"messages": [{"role": "tool", "content": "x"},
                                         {"role": "assistant", "content": "y"}]}) + "\n",
        "no_assistant": json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n",
        "empty": "",
    }
    for name, text in files.items():
        (bad / f"{name}.jsonl").write_text(text)
    strict = root / "strict"
    shutil.copytree(checkpoints["gpt2"], strict)
    (strict / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}")
    gpt2 = ["--set", f"model_options.preset={checkpoints['gpt2']}"]
    cases = {
        "gpt2": (["--set", f"data={data}", *gpt2], None),
        "malformed": (["--set", f"data={bad / 'malformed.jsonl'}", *gpt2],
                      "line 3 is not valid JSON"),
        "role": (["--set", f"data={bad / 'role.jsonl'}", *gpt2], "unknown role 'tool'"),
        "no assistant": (["--set", f"data={bad / 'no_assistant.jsonl'}", *gpt2],
                         "has no assistant turn"),
        "empty": (["--set", f"data={bad / 'empty.jsonl'}", *gpt2], "is empty"),
        "template": (["--set", f"data={data}", "--set", f"model_options.preset={strict}"],
                     "System role not supported"),
        "too short": (["--set", f"data={data}", *gpt2, "--set", "lm.context=16",
                       "--set", "sft.overlong=drop"], "nothing to train"),
        "format": (["--set", f"data={data}", *gpt2, "--set", "data_options.format=jsonl"],
                   "unknown data_options.format"),
        "template name": (["--set", f"data={data}", *gpt2, "--set", "sft.template=chatlm"],
                          "unknown sft.template 'chatlm'"),
        "text data": (["--set", "data=workbench.hub.corpora:python_docs", *gpt2,
                       "--set", "sft.packing=false"], "applies to conversation data"),
    }
    return root, cases, _run_all(root, cases)


def _report(root, name):
    return json.loads((root / name / "report.json").read_text())


def test_sft_fast_on_a_kerashub_preset_trains_on_responses(sft_runs):
    root, _, results = sft_runs
    assert results["gpt2"]["code"] == 0, results["gpt2"]["stderr"][-3000:]
    report = _report(root, "gpt2")
    train = report["stages"]["train"]
    sft = train["sft"]
    assert sft["template"] == "plain" and sft["packing"] and sft["train_on"] == "assistant"
    assert 0 < sft["trained_fraction"] < 0.6
    assert sft["padding_packed"] < sft["padding_unpacked"]
    assert sft["conversation_tokens_per_second"] > 0
    assert train["val_loss_after"] < train["val_loss_before"]
    assert report["stages"]["evaluate"]["train_on"] == "assistant"
    assert report["stages"]["evaluate"]["val_loss"] == pytest.approx(train["val_loss_after"])
    sample = report["stages"]["generate"]["samples"][0]
    assert sample["rendered_prompt"].endswith("### Assistant:\n")
    assert "<|endoftext|>" not in sample["continuation"]
    assert report["stages"]["verify"]["float32"]["greedy_tokens_match_keras"]
    assert "response tokens" in results["gpt2"]["stdout"]


def test_bad_conversation_input_is_one_line_and_exit_2_before_any_work(sft_runs):
    root, cases, results = sft_runs
    for name, (_, expected) in cases.items():
        if expected is None:
            continue
        result = results[name]
        assert result["code"] == 2, (name, result["stderr"][-2000:])
        assert result["stderr"].count("\n") == 1, (name, result["stderr"])
        assert expected in result["stderr"], (name, result["stderr"])
        assert not (root / name.replace(" ", "_")).exists(), name


@pytest.fixture(scope="module")
def hf_runs(checkpoints, conversations_file, tmp_path_factory):
    """`sft --fast` on the Hugging Face checkpoint directories, in one process."""
    root = tmp_path_factory.mktemp("sft_hf")
    cases = {name: (["--set", f"data={conversations_file}", "--set",
                     f"model_options.preset={checkpoints[name]}",
                     "--stages", "train,evaluate,generate"], None)
             for name in ("llama3", "qwen3")}
    return root, _run_all(root, cases)


@pytest.mark.slow
@pytest.mark.parametrize("name, template", [("llama3", "the checkpoint's chat_template"),
                                            ("qwen3", "chat_template.jinja")])
def test_sft_fast_on_hugging_face_checkpoints_uses_their_own_template(hf_runs, name, template):
    root, results = hf_runs
    assert results[name]["code"] == 0, results[name]["stderr"][-3000:]
    report = _report(root, name)
    sft = report["stages"]["train"]["sft"]
    assert sft["template"] == template
    assert sft["end_of_turn"] == {"llama3": "<|eot_id|>", "qwen3": "<|im_end|>"}[name]
    assert report["stages"]["train"]["family"] == {"llama3": "Llama3", "qwen3": "Qwen3"}[name]
    assert np.isfinite(report["stages"]["evaluate"]["val_loss"])
    assert report["stages"]["generate"]["samples"]
