"""Conversation and instruction data for the causal-LM family, read as a stream.

Sources (`data`): a JSON Lines file (`.jsonl`, `.ndjson`, `.json`), a CSV file (`.csv`), a folder
of them (every file below it, sorted by path, hidden ones left out), or a `module:function` that
returns an iterable of records (dicts). Records, one format per file, detected from its first
record (`data_options.format` forces one; `text` reads the source as plain text instead):

- `messages`: `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}]}`, the
  OpenAI / TRL convention; several assistant turns are allowed, at least one is needed;
- `prompt_completion`: `{"prompt": ..., "completion": ...}` or `{"prompt": ..., "response": ...}`
  (each side a string, or a list of messages as TRL's conversational prompt-completion has);
- `alpaca`: `{"instruction": ..., "input": ..., "output": ...}` (`input` optional; it follows the
  instruction after a blank line);
- `csv`: a header row and two columns, the user's and the assistant's: the columns that
  `data_options.columns` names, else the pair whose names say so (`prompt`/`question`/
  `instruction`/`input` and `completion`/`response`/`answer`/`output`), else the only two.

Nothing holds the whole source: the records are read one at a time, and each goes to the training
or the validation split by a hash of its index and the seed (BLAKE2b), so the split is the same on
every run, whatever the size, without a shuffle buffer. Every bad record is one `WorkbenchError`
that names the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError, suggest
from workbench.lm.corpus import data_function

ROLES = ("system", "user", "assistant")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
RECORD_FORMATS = ("messages", "prompt_completion", "alpaca")
PROMPT_COLUMNS = ("prompt", "question", "instruction", "input", "user", "query")
RESPONSE_COLUMNS = ("completion", "response", "answer", "output", "assistant", "target")


@dataclass
class Conversation:
    """One example: its messages (`{"role", "content"}` each) and where it came from."""

    messages: list
    where: str


def _is_call_source(spec):
    return ":" in spec and not Path(spec).exists() and "/" not in spec.split(":", 1)[0]


def _call(spec):
    return data_function(spec)()


def _files(path):
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def _kind(path):
    suffix = path.suffix.lower()
    return "jsonl" if suffix in JSONL_SUFFIXES else "csv" if suffix in CSV_SUFFIXES else None


def is_conversation_source(spec, fmt="auto"):
    """Whether `data` is conversations (else the language-model family reads it as text)."""
    if fmt == "text" or spec == "stdlib":
        return False
    path = Path(spec)
    if fmt != "auto":
        return True
    if path.is_file():
        return _kind(path) is not None
    if path.is_dir():
        kinds = {_kind(p) for p in _files(path)}
        if None in kinds and len(kinds) > 1:
            raise WorkbenchError(
                f"data '{spec}' holds both conversation files (.jsonl, .csv) and other files; "
                "keep them in separate folders, or set data_options.format=text to read all of "
                "it as text")
        return bool(kinds) and None not in kinds
    if _is_call_source(spec):
        value = _call(spec)
        if isinstance(value, (str, bytes, bytearray)):
            return False
        first = next(iter(value), None)
        return isinstance(first, dict)
    return False


def _text(value, what, where):
    if not isinstance(value, str):
        raise WorkbenchError(f"{where}: {what} must be text, got {type(value).__name__}")
    return value


def _messages(items, where):
    if not isinstance(items, list) or not items:
        raise WorkbenchError(f"{where}: 'messages' must be a non-empty list of "
                             "{\"role\", \"content\"} objects")
    messages = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            raise WorkbenchError(f"{where}: message {number} is not a {{\"role\", \"content\"}} "
                                 "object")
        role = item["role"]
        if role not in ROLES:
            raise WorkbenchError(f"{where}: unknown role {role!r} in message {number} "
                                 f"({suggest(str(role), ROLES)})")
        messages.append({"role": role,
                         "content": _text(item["content"], f"message {number}'s content",
                                          where)})
    return messages


def _side(value, role, where):
    """One side of a prompt/completion record: a string, or a list of messages."""
    if isinstance(value, list):
        return _messages(value, where)
    return [{"role": role, "content": _text(value, f"the {role} side", where)}]


def record_format(record, where):
    """The format a record's keys say it is in."""
    if not isinstance(record, dict):
        raise WorkbenchError(f"{where}: expected a JSON object, got {type(record).__name__}")
    keys = set(record)
    if "messages" in keys:
        return "messages"
    if "prompt" in keys and keys & {"completion", "response"}:
        return "prompt_completion"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    raise WorkbenchError(
        f"{where}: a record with keys {sorted(keys)} is none of the conversation formats: "
        "{\"messages\": [...]}, {\"prompt\", \"completion\"}, {\"prompt\", \"response\"}, "
        "{\"instruction\", \"input\", \"output\"}")


def to_messages(record, fmt, where):
    """A record of format `fmt` as checked messages, with at least one assistant turn."""
    if not isinstance(record, dict):
        raise WorkbenchError(f"{where}: expected a JSON object, got {type(record).__name__}")
    try:
        if fmt == "messages":
            messages = _messages(record["messages"], where)
        elif fmt == "prompt_completion":
            answer = record["completion"] if "completion" in record else record["response"]
            messages = (_side(record["prompt"], "user", where)
                        + _side(answer, "assistant", where))
        elif fmt == "alpaca":
            instruction = _text(record["instruction"], "'instruction'", where)
            extra = _text(record.get("input") or "", "'input'", where)
            messages = [{"role": "user",
                         "content": instruction + (f"\n\n{extra}" if extra else "")},
                        {"role": "assistant",
                         "content": _text(record["output"], "'output'", where)}]
        else:
            raise WorkbenchError(f"unknown data_options.format '{fmt}'")
    except KeyError as missing:
        raise WorkbenchError(f"{where}: a '{fmt}' record needs the key {missing}") from None
    if not any(message["role"] == "assistant" for message in messages):
        raise WorkbenchError(f"{where}: the conversation has no assistant turn, so nothing in it "
                             "can be trained on; give every conversation at least one "
                             "assistant message")
    return messages


def _jsonl_records(path):
    """`(record, where)` for every non-blank line of a JSON Lines file."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"data '{path}' line {number}"
            try:
                yield json.loads(line), where
            except json.JSONDecodeError as error:
                hint = ("; a JSON array is not JSON Lines: write one object per line"
                        if number == 1 and line.lstrip().startswith("[") else "")
                raise WorkbenchError(f"{where} is not valid JSON ({error.msg} at column "
                                     f"{error.colno}){hint}") from None


def _csv_columns(header, columns, path):
    if columns:
        columns = tuple(columns)
        missing = [name for name in columns if name not in header]
        if len(columns) != 2 or missing:
            raise WorkbenchError(
                f"data_options.columns must name two columns of '{path}' (the user's and the "
                f"assistant's), got {columns}; its columns are {', '.join(header)}")
        return columns
    prompt = next((name for name in header if name.lower() in PROMPT_COLUMNS), None)
    response = next((name for name in header if name.lower() in RESPONSE_COLUMNS), None)
    if prompt and response and prompt != response:
        return prompt, response
    if len(header) == 2:
        return tuple(header)
    raise WorkbenchError(
        f"data '{path}' has the columns {', '.join(header) or 'none'}; a conversation CSV needs "
        "two, the user's and the assistant's: name them with "
        "--set data_options.columns=\"('QUESTION','ANSWER')\"")


def _csv_conversations(path, columns):
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if not header:
            return
        prompt, response = _csv_columns(header, columns, path)
        for row in reader:
            where = f"data '{path}' line {reader.line_num}"
            if row.get(prompt) is None or row.get(response) is None:
                raise WorkbenchError(f"{where}: the row has fewer columns than the header")
            yield Conversation([{"role": "user", "content": row[prompt]},
                                {"role": "assistant", "content": row[response]}], where)


def _records_conversations(records, fmt):
    """Conversations from `(record, where)` pairs, all of one format (the first's, unless
    forced)."""
    detected = None if fmt in ("auto", "csv") else fmt
    for record, where in records:
        if detected is None:
            detected = record_format(record, where)
        yield Conversation(to_messages(record, detected, where), where)


def conversations(spec, fmt="auto", columns=None):
    """Every conversation of a source, in order, one at a time (call again for another pass)."""
    path = Path(spec)
    if path.is_dir():
        files = _files(path)
    elif path.is_file():
        files = [path]
    elif _is_call_source(spec):
        value = _call(spec)
        records = ((record, f"data '{spec}' record {number}")
                   for number, record in enumerate(value, start=1))
        yield from _records_conversations(records, fmt)
        return
    else:
        raise WorkbenchError(f"data '{spec}' is neither a conversation file (.jsonl, .csv), a "
                             "folder of them, nor a 'module:function' source")
    for file in files:
        kind = "csv" if fmt == "csv" else "jsonl" if fmt in RECORD_FORMATS else _kind(file)
        if kind == "csv":
            yield from _csv_conversations(file, columns)
        else:
            yield from _records_conversations(_jsonl_records(file), fmt)


def in_validation(index, seed, fraction):
    """Whether example `index` validates: a BLAKE2b hash of `(seed, index)` below `fraction`."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def split_conversations(spec, seed, fraction, fmt="auto", columns=None):
    """`(index, is_validation, conversation)` for every conversation of the source."""
    stream = conversations(spec, fmt, columns)
    first = next(stream, None)
    if first is None:
        raise WorkbenchError(f"data '{spec}' is empty: it holds no conversations")
    for index, conversation in enumerate(itertools.chain([first], stream)):
        yield index, in_validation(index, seed, fraction), conversation
