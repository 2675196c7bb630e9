"""Text that comes with Python, for the `finetune` recipe: the workbench's own preset learns
Python source (`stdlib_code`), and fine-tunes on English prose it never saw (`python_docs`).

Both are `module:function` data sources (`--set data=workbench.hub.corpora:python_docs`)."""

from __future__ import annotations

from pathlib import Path


def python_docs() -> str:
    """The reference manual's topics that `help()` shows (`pydoc_data.topics`, 79 topics, 465 kB
    of reStructuredText-like prose on Python 3.11), in name order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def stdlib_code() -> bytes:
    """The `stdlib` corpus (workbench.lm.corpus) without `pydoc_data`, whose topics are
    `python_docs`."""
    from workbench.lm.corpus import stdlib_paths

    return b"".join(Path(p).read_bytes() for p in stdlib_paths() if "pydoc_data" not in p)
