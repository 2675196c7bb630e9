"""A byte-level BPE vocabulary in GPT-2's format (`vocabulary.json` ids, `merges.txt` pairs), so
that KerasHub's `GPT2Tokenizer` tokenizes with it.

GPT-2 (Radford et al. 2019) first splits text into pre-tokens (a letter run with its leading
space, a digit run, a punctuation run, whitespace) and merges byte pairs only inside one; bytes
are spelled with GPT-2's printable byte-to-unicode table. The merges are learned here the way
Sennrich et al. (2016) do it: repeatedly the most frequent adjacent pair over the pre-tokens,
weighted by how often each occurs.
"""

from __future__ import annotations

import collections
import re

import numpy as np

# GPT-2's pre-token pattern with Python's `re` classes (letters are [^\W\d_]).
PRE_TOKENS = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
END_OF_TEXT = "<|endoftext|>"
SAMPLE_CHARACTERS = 2_000_000


def byte_characters():
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    byte_list, characters = bytes_to_unicode()
    return {b[0]: c for b, c in zip(byte_list, characters)}


def _merge_pair(ids, weights, pair, new_id):
    from workbench.lm.tokenizers import merge_positions

    positions, keep = merge_positions(ids, pair)
    ids = ids.copy()
    ids[positions] = new_id
    return ids[keep], weights[keep]


def train_vocabulary(text: str, vocabulary_size=512):
    """`(vocabulary, merges)`: the 256 bytes, learned merges up to `vocabulary_size` tokens, and
    GPT-2's end-of-text token last."""
    words = collections.Counter(PRE_TOKENS.findall(text[:SAMPLE_CHARACTERS]))
    pieces, weights = [], []
    for word, count in words.items():
        encoded = list(word.encode("utf-8"))
        pieces += encoded + [-1]  # -1 separates pre-tokens: no pair crosses it
        weights += [count] * (len(encoded) + 1)
    ids, weights = np.array(pieces, np.int64), np.array(weights, np.float64)
    characters = byte_characters()
    spelled = [characters[b] for b in range(256)]
    merges = []
    limit = vocabulary_size - 1  # the end-of-text token takes the last id
    while len(spelled) < limit and len(ids) > 1:
        left, right = ids[:-1], ids[1:]
        valid = (left >= 0) & (right >= 0)
        codes = left[valid] * limit + right[valid]
        counts = np.bincount(codes, weights=weights[:-1][valid])
        if not len(counts) or counts.max() < 2:
            break
        best = int(counts.argmax())
        pair = divmod(best, limit)
        new_id = len(spelled)
        merges.append(f"{spelled[pair[0]]} {spelled[pair[1]]}")
        spelled.append(spelled[pair[0]] + spelled[pair[1]])
        ids, weights = _merge_pair(ids, weights, pair, new_id)
    vocabulary = {}
    for piece in spelled:
        vocabulary.setdefault(piece, len(vocabulary))
    vocabulary[END_OF_TEXT] = len(vocabulary)
    return vocabulary, merges
