"""Instruction tuning data of the causal-LM family: conversations (workbench.hub.chats) rendered
with a chat template (workbench.hub.chat_template), tokenized with the preset's tokenizer, each
token weighed 1 where it is trained on and 0 elsewhere, and packed into windows of `lm.context`
tokens (workbench.lm.packing).

- **Weights** (`sft.train_on`): `assistant`, the tokens of every assistant turn (its content
  and the template's end-of-turn token); `all`, every token. The template's text is tokenized in
  spans (before, inside and after each assistant turn), so a token never straddles a boundary, and
  a prompt's tokens are the ones generation will see. The first token of a conversation is never a
  target (nothing of it comes before).
- **Too long** (`sft.overlong`): a conversation of more than `lm.context` tokens is dropped, or
  cut to `lm.context` tokens: the first ones when every trained token is among them; else the
  last ones before the end of the last trained token when all of them fit, so the responses are
  whole and the prompt loses its start; else a quarter window of prompt before the first trained
  token and as much response as fits. A conversation left with no trained token is dropped.
- **Packing** (`sft.packing`): the training conversations, each followed by the end-of-sequence
  token, best-fit decreasing into windows of `lm.context + 1` tokens; without it, one per window.
  Validation conversations are always one per window, so the validation loss does not depend on
  the packing. The windows' weights go to Keras as `sample_weight`, and the loss is their
  weighted mean (`reduction="mean_with_sample_weight"`).

The tokens live in memory maps under a temporary folder for the run (`TokenSpool`), not in RAM.
"""

from __future__ import annotations

import hashlib
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.lm.pipeline import DEFAULT_VAL_FRACTION, LanguageData

# Conversations rendered and tokenized per call into the tokenizer.
CHUNK = 256


@dataclass
class ChatFormat:
    """A chat template with the tokenizer it is tokenized by."""

    template: Any
    tokens: Any

    @property
    def separator(self):
        tokenizer = self.tokens.tokenizer
        for name in ("end_token_id", "pad_token_id"):
            value = getattr(tokenizer, name, None)
            if value is not None:
                return int(value)
        return 0

    def encode_prompt(self, prompt):
        """`prompt` as a user turn with the template's generation prompt, as token ids."""
        return [int(i) for i in self.tokens.encode(self.template.generation_prompt(prompt))]

    def stop_token_ids(self):
        """The end-of-turn token (when it is one token) and the end-of-sequence token."""
        stops = {self.separator}
        ids = self.tokens.encode(self.template.end_of_turn) if self.template.end_of_turn else []
        if len(ids) == 1:
            stops.add(int(ids[0]))
        return tuple(sorted(stops))

    def answer(self, ids):
        """Generated ids as the answer's text: up to the first stop token, and cut at the
        end-of-turn text."""
        stops = set(self.stop_token_ids())
        ids = [int(i) for i in ids]
        cut = next((i for i, token in enumerate(ids) if token in stops), len(ids))
        text = self.tokens.decode(ids[:cut])
        end = self.template.end_of_turn
        return text.split(end)[0] if end else text


@dataclass
class ConversationData(LanguageData):
    """`LanguageData` of conversations: `packed`, the training windows, and `validation`, one
    conversation per window, both with weights; `corpus.train` / `corpus.val` are their tokens
    flattened (what quantization calibrates and verification scores on), `stats` what the
    report gives."""

    packed: Any = None
    validation: Any = None
    chat: Any = None
    stats: dict = field(default_factory=dict)
    workspace: Any = None

    def training_splits(self):
        return self.packed, self.validation

    def encode_prompt(self, prompt):
        return self.chat.encode_prompt(prompt)


def _segments(template, messages, train_on, where):
    """`[(text, trained)]` spans of the rendered conversation, in order."""
    if train_on == "all":
        return [(template.render(messages, where=where), True)]
    text, spans = template.assistant_spans(messages, where=where)
    segments, cursor = [], 0
    for start, end in spans:
        segments += [(text[cursor:start], False), (text[start:end], True)]
        cursor = end
    return segments + [(text[cursor:], False)]


def _tokenize(tokenizer, texts):
    if not texts:
        return []
    ids = tokenizer(list(texts))
    if hasattr(ids, "to_list"):
        ids = ids.to_list()
    return [[int(i) for i in row] for row in ids]


def fit_to_context(ids, weights, context):
    """`(ids, weights, cut)` of at most `context` tokens (see the module docstring)."""
    if len(ids) <= context:
        return ids, weights, False
    trained = np.flatnonzero(weights)
    first, last = (int(trained[0]), int(trained[-1]) + 1) if len(trained) else (0, len(ids))
    if last <= context:
        start = 0
    elif last - first <= context:
        start = last - context
    else:
        start = first - min(first, context // 4)
    ids, weights = ids[start:start + context], weights[start:start + context].copy()
    weights[0] = 0  # nothing of the window comes before it
    return ids, weights, True


def _example(token_rows, trained_flags):
    ids = np.concatenate([np.asarray(row, np.int32) for row in token_rows] or
                         [np.zeros(0, np.int32)])
    weights = np.concatenate([np.full(len(row), int(flag), np.uint8)
                              for row, flag in zip(token_rows, trained_flags)] or
                             [np.zeros(0, np.uint8)])
    if len(weights):
        weights[0] = 0
    return ids, weights


class _Counts:
    def __init__(self):
        self.examples = self.truncated = self.dropped_overlong = self.dropped_untrained = 0
        self.tokens = self.trained = 0


def _spool_examples(recipe, chat, spools, digest):
    """Render, tokenize, weigh and fit every conversation into the two spools; the counts."""
    from workbench.hub.chats import split_conversations

    settings, context = recipe.sft, recipe.lm.context
    counts = {"train": _Counts(), "val": _Counts()}
    options = recipe.data_options
    stream = split_conversations(
        recipe.data, recipe.seed, options.get("val_fraction", DEFAULT_VAL_FRACTION),
        options.get("format", "auto"), options.get("columns"))
    while True:
        chunk = [item for _, item in zip(range(CHUNK), stream)]
        if not chunk:
            break
        segments = [_segments(chat.template, conversation.messages, settings.train_on,
                              conversation.where) for _, _, conversation in chunk]
        rows = iter(_tokenize(chat.tokens.tokenizer,
                              [text for parts in segments for text, _ in parts]))
        for (_, validation, _), parts in zip(chunk, segments):
            token_rows = [next(rows) for _ in parts]
            ids, weights = _example(token_rows, [trained for _, trained in parts])
            digest.update(ids.tobytes())
            split = "val" if validation else "train"
            count = counts[split]
            count.examples += 1
            if len(ids) > context and settings.overlong == "drop":
                count.dropped_overlong += 1
                continue
            ids, weights, cut = fit_to_context(ids, weights, context)
            if not weights.any():
                count.dropped_untrained += 1
                continue
            count.truncated += cut
            count.tokens += len(ids)
            count.trained += int(weights.sum())
            spools[split].append(ids, weights)
    return counts


def _check_left(counts, recipe):
    context = recipe.lm.context
    for split, name in (("train", "training"), ("val", "validation")):
        count = counts[split]
        kept = count.examples - count.dropped_overlong - count.dropped_untrained
        if kept:
            continue
        if not count.examples:
            raise WorkbenchError(
                f"data '{recipe.data}': the {name} split got none of its conversations; give "
                "more conversations or change data_options.val_fraction")
        why = (f"all {count.examples} are longer than lm.context {context} tokens and "
               "sft.overlong=drop leaves them out; raise lm.context or set sft.overlong=truncate"
               if count.dropped_overlong else
               "none has a token to train on once cut to lm.context; raise lm.context")
        raise WorkbenchError(f"nothing to train: of the {name} conversations of data "
                             f"'{recipe.data}', {why}")


def load_conversation_data(recipe, tokens, info):
    """The recipe's conversations as `ConversationData` for the preset `info` whose tokenizer
    is `tokens` (`PresetTokens`)."""
    from workbench.data.core import DataInfo
    from workbench.hub.chat_template import resolve_template
    from workbench.lm.corpus import Corpus
    from workbench.lm.packing import TokenSpool, best_fit_decreasing, pack, padding_fraction

    settings, context = recipe.sft, recipe.lm.context
    chat = ChatFormat(resolve_template(settings.template, info.path, tokens.tokenizer), tokens)
    workspace = tempfile.TemporaryDirectory(prefix="workbench-sft-")
    digest = hashlib.sha256(f"{chat.template.source}|{tokens.describe()}|{settings}|"
                            f"{recipe.seed}|{recipe.data_options}".encode())
    try:
        spools = {split: TokenSpool(workspace.name, split) for split in ("train", "val")}
        counts = _spool_examples(recipe, chat, spools, digest)
        _check_left(counts, recipe)
        width = context + 1
        windows, stats = {}, {}
        for split, spool in spools.items():
            ids, weights, offsets = spool.close()
            sizes = np.diff(offsets) + 1  # each conversation and its separator
            single = [[i] for i in range(len(sizes))]
            bins = (best_fit_decreasing(sizes, width)
                    if split == "train" and settings.packing else single)
            windows[split] = pack(ids, weights, offsets, bins, width, chat.separator,
                                  path=f"{workspace.name}/{split}")
            stats[split] = (sizes, len(bins), len(single))
    except BaseException:
        workspace.cleanup()
        raise
    sizes, packed_count, single_count = stats["train"]
    train, val = counts["train"], counts["val"]
    summary = {
        "template": chat.template.name, "end_of_turn": chat.template.end_of_turn,
        "train_on": settings.train_on, "packing": settings.packing,
        "overlong": settings.overlong,
        "train_examples": train.examples, "val_examples": val.examples,
        "truncated": train.truncated + val.truncated,
        "dropped_overlong": train.dropped_overlong + val.dropped_overlong,
        "dropped_untrained": train.dropped_untrained + val.dropped_untrained,
        "train_tokens": train.tokens, "trained_tokens": train.trained,
        "trained_fraction": train.trained / train.tokens,
        "train_windows": len(windows["train"]), "val_windows": len(windows["val"]),
        "windows_packed": len(best_fit_decreasing(sizes, width)) if not settings.packing
        else packed_count,
        "windows_unpacked": single_count,
    }
    summary["padding_packed"] = padding_fraction(sizes, summary["windows_packed"], width)
    summary["padding_unpacked"] = padding_fraction(sizes, single_count, width)
    streams = {split: _at_least(windows[split].stream(f"{workspace.name}/{split}.stream.npy"),
                                width, chat.separator) for split in windows}
    corpus = Corpus(train=streams["train"], val=streams["val"], tokenizer=tokens,
                    fingerprint=digest.hexdigest()[:16], num_bytes=_source_bytes(recipe.data),
                    val_bytes=0, source=recipe.data)
    info_ = DataInfo(
        name=recipe.data, task="causal_lm", input_shape=(context,), input_dtype="int32",
        vocabulary_size=tokens.vocabulary_size,
        sizes={"train": train.examples, "val": val.examples, "test": val.examples},
        fingerprint=corpus.fingerprint, source=recipe.data)
    data = ConversationData(train=None, val=None, test=None, info=info_, corpus=corpus,
                            packed=windows["train"], validation=windows["val"], chat=chat,
                            stats=summary, workspace=workspace)
    weakref.finalize(data, workspace.cleanup)
    return data


def _at_least(stream, length, filler):
    """`stream`, padded with `filler` to `length` tokens (one window) if it is shorter."""
    if len(stream) >= length:
        return stream
    return np.concatenate([np.asarray(stream), np.full(length - len(stream), filler, np.int32)])


def _source_bytes(spec):
    from pathlib import Path

    path = Path(spec)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def describe(stats):
    """The console's lines about the data."""
    return [
        f"  {stats['train_examples']:,} training and {stats['val_examples']:,} validation "
        f"conversations, template '{stats['template']}' (end of turn "
        f"{stats['end_of_turn']!r}); {stats['truncated']} cut to lm.context, "
        f"{stats['dropped_overlong']} too long and dropped, {stats['dropped_untrained']} with "
        "nothing to train dropped",
        f"  trained on {stats['trained_fraction']:.1%} of {stats['train_tokens']:,} training "
        f"tokens (sft.train_on={stats['train_on']}); {stats['train_windows']:,} windows "
        f"({'packed' if stats['packing'] else 'one per conversation'}): padding "
        f"{stats['padding_packed']:.1%} packed, {stats['padding_unpacked']:.1%} unpacked"]


def score(ctx, model):
    """Response-only (the weighted) loss, perplexity and bits per byte on the validation
    conversations."""
    from workbench.lm.evaluate import evaluate_windows
    from workbench.lm.generate import check_language_model
    from workbench.lm.training import check_context

    data = ctx.require_data("evaluate")
    check_language_model(model, "evaluate")
    settings = ctx.recipe.lm
    check_context(model, settings.context)
    tokenizer = data.corpus.tokenizer
    metrics = evaluate_windows(model, data.validation, batch_size=settings.eval_batch_size,
                               max_windows=settings.max_eval_windows,
                               token_bytes=getattr(tokenizer, "token_bytes", lambda: None)())
    metrics["train_on"] = ctx.recipe.sft.train_on
    return metrics


def generate(ctx):
    """Each `generate` prompt as a user turn of the template, answered until its end of turn."""
    from workbench.lm.generate import (check_language_model, continue_ids, generate_prompts,
                                       make_sampler)

    model = ctx.require_model("generate")
    data = ctx.require_data("generate")
    settings = ctx.recipe.generate
    prompts = generate_prompts(settings)
    check_language_model(model)
    chat = data.chat
    encoded = [chat.encode_prompt(prompt) for prompt in prompts]
    sampler = make_sampler(settings.sampler, k=settings.k, p=settings.p,
                           temperature=settings.temperature, seed=settings.seed)
    outputs = continue_ids(model, encoded, settings.max_tokens, sampler,
                           stop_token_ids=chat.stop_token_ids())
    samples = [{"prompt": prompt, "continuation": chat.answer(out[len(ids):]),
                "rendered_prompt": chat.template.generation_prompt(prompt)}
               for prompt, ids, out in zip(prompts, encoded, outputs)]
    return samples, settings
