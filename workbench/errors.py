"""Errors that are the user's to fix.

A `WorkbenchError` carries one sentence for a person: what was wrong, what was expected and what to
try. The CLI prints it on one line and exits with code 2; anything else is a bug or a failed run.
"""

import difflib


class WorkbenchError(Exception):
    """Bad input: an unknown recipe, a mistyped setting, a missing file, a value out of range."""


def suggest(word, choices, limit=3):
    """Return `choices` with the close matches of `word` first, as a readable string."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=limit, cutoff=0.5)
    rest = [c for c in choices if c not in close]
    if close:
        head = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        return head + (f" (all: {', '.join(choices)})" if rest else "")
    return "valid: " + ", ".join(choices)
