"""A conversation set built offline from text Python already has, for the `sft` recipe: questions
about standard-library functions, classes and methods, answered by the first paragraph of their
docstrings (and, for half of those with a signature, a second turn asking for it).

`python -m workbench.run sft` reads it as the `module:function` source
`workbench.hub.stdlib_chats:stdlib_conversations`; the split by example (workbench.hub.chats)
holds whole functions out for validation. `write_jsonl(PATH)` writes it as JSON Lines, the
format a user brings.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from pathlib import Path

# Modules that import without side effects, in the order their entries come.
MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "colorsys", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "filecmp",
    "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "inspect", "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging",
    "math", "mimetypes", "operator", "os", "os.path", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "secrets", "shlex", "shutil", "statistics", "string", "struct", "tempfile",
    "textwrap", "threading", "time", "tokenize", "traceback", "types", "typing",
    "unicodedata", "urllib.parse", "uuid", "warnings", "weakref", "zipfile", "zlib")
SYSTEM = "You answer questions about the Python standard library in one paragraph."
QUESTIONS = ("What does `{name}` do?", "What is `{name}` in the `{module}` module for?",
             "Explain `{module}.{name}`.", "Tell me about `{name}` from `{module}`.")
SIGNATURE_QUESTION = "What arguments does it take?"
MAX_ANSWER_CHARACTERS = 400


def _choice(text, count):
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") % count


def first_paragraph(doc, limit=MAX_ANSWER_CHARACTERS):
    """A docstring's first paragraph on one line, cut after the last full sentence within
    `limit` characters."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    if len(paragraph) <= limit:
        return paragraph
    cut = paragraph.rfind(". ", 0, limit)
    return paragraph[:cut + 1] if cut > 0 else paragraph[:limit].rstrip() + "..."


def _members(module):
    """`(name, object)` of the module's public functions and classes, and of those classes'
    public methods, defined in the module, by name."""
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value):
            yield name, value
            for method, member in sorted(vars(value).items()):
                if not method.startswith("_") and callable(member):
                    yield f"{name}.{method}", member
        elif callable(value):
            yield name, value


def _signature(value):
    try:
        signature = str(inspect.signature(value))
    except (TypeError, ValueError):
        return None
    # A default shown by its address (`<object object at 0x...>`) differs from run to run.
    return None if re.search(r" at 0x[0-9a-fA-F]+", signature) else signature


def stdlib_conversations():
    """The conversations, one per documented member, as `{"messages": [...]}` records."""
    seen = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, value in _members(module):
            doc = inspect.getdoc(value)
            if not doc:
                continue
            answer = first_paragraph(doc)
            # Skip docstrings that open with the signature, and ones already answered.
            if len(answer) < 20 or re.match(rf"{re.escape(name.split('.')[-1])}\(", answer) \
                    or answer in seen:
                continue
            seen.add(answer)
            key = f"{module_name}.{name}"
            question = QUESTIONS[_choice(key, len(QUESTIONS))].format(name=name,
                                                                      module=module_name)
            messages = [{"role": "system", "content": SYSTEM}] if _choice(key + "s", 2) else []
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]
            signature = _signature(value)
            if signature and _choice(key + "t", 2):
                messages += [{"role": "user", "content": SIGNATURE_QUESTION},
                             {"role": "assistant",
                              "content": f"`{name.split('.')[-1]}{signature}`"}]
            yield {"messages": messages}


def write_jsonl(path):
    """The conversation set as a JSON Lines file."""
    with open(Path(path), "w", encoding="utf-8") as handle:
        for record in stdlib_conversations():
            handle.write(json.dumps(record) + "\n")
    return Path(path)
