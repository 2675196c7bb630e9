"""Tokenizers of the language-model task: bytes (the default) and byte-level BPE.

Both keep ids 0-255 for the bytes themselves, so any byte string can be encoded and a model's
ids read back without a vocabulary file. `byte` follows KerasHub's `ByteTokenizer` (id = byte
value; `ByteTokenizer` itself encodes prompts); `bpe` adds merges learned on the training split
(Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units"; byte-level as
in GPT-2), merge `i` becoming id `256 + i`.
"""

from __future__ import annotations

import json

import numpy as np

from workbench.errors import WorkbenchError, suggest
from workbench.settings.lm import TOKENIZERS

# Enough text to learn frequent merges; the whole corpus is then encoded with them.
BPE_SAMPLE_BYTES = 2_000_000


class ByteTokens:
    """Token id = byte value (KerasHub's `ByteTokenizer` semantics); vocabulary 256."""

    name = "byte"
    vocabulary_size = 256

    def encode_bytes(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).copy()

    def encode(self, text: str) -> np.ndarray:
        import keras_hub

        ids = keras_hub.tokenizers.ByteTokenizer(dtype="int32")(text)
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids) -> bytes:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256)

    def token_bytes(self):
        """Bytes each id stands for (`None`: one each)."""
        return None

    def describe(self):
        return "byte"

    def to_json(self):
        return json.dumps({"tokenizer": "byte"})


def merge_positions(ids, pair):
    """Where a merge of `pair` lands in `ids` (every non-overlapping occurrence, left to right),
    and the mask of the ids that stay (the second of each merged pair goes)."""
    first, second = pair
    hits = (ids[:-1] == first) & (ids[1:] == second)
    if first == second and hits.any():
        # In runs such as "aaaa", take every other match from the left: the 1st, 3rd, ...
        index = np.arange(len(hits))
        run_start = np.maximum.accumulate(
            np.where(hits & ~np.concatenate([[False], hits[:-1]]), index, 0))
        hits &= (index - run_start) % 2 == 0
    positions = np.flatnonzero(hits)
    keep = np.ones(len(ids), dtype=bool)
    keep[positions + 1] = False
    return positions, keep


def _merge(ids, pair, new_id):
    """Replace every non-overlapping occurrence of `pair` (left to right) by `new_id`."""
    positions, keep = merge_positions(ids, pair)
    if not len(positions):
        return ids
    out = ids.copy()
    out[positions] = new_id
    return out[keep]


class BytePairTokens(ByteTokens):
    """Byte-level BPE: `merges[i] = (a, b)` makes id `256 + i`, applied in order."""

    name = "bpe"

    def __init__(self, merges):
        self.merges = [tuple(int(v) for v in pair) for pair in merges]
        self.vocabulary_size = 256 + len(self.merges)
        self._pieces = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self._pieces.append(self._pieces[a] + self._pieces[b])

    @classmethod
    def train(cls, data: bytes, vocabulary_size=512):
        ids = np.frombuffer(data[:BPE_SAMPLE_BYTES], dtype=np.uint8).astype(np.int32)
        merges = []
        for new_id in range(256, vocabulary_size):
            if len(ids) < 2:
                break
            counts = np.bincount(ids[:-1].astype(np.int64) * vocabulary_size + ids[1:])
            best = int(counts.argmax())
            if counts[best] < 2:
                break
            pair = divmod(best, vocabulary_size)
            merges.append(pair)
            ids = _merge(ids, pair, new_id)
        return cls(merges)

    def encode_bytes(self, data: bytes) -> np.ndarray:
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
        for offset, pair in enumerate(self.merges):
            ids = _merge(ids, pair, 256 + offset)
        return ids

    def encode(self, text: str) -> np.ndarray:
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self._pieces[int(i)] for i in ids if 0 <= int(i) < len(self._pieces))

    def token_bytes(self):
        return np.array([len(piece) for piece in self._pieces], dtype=np.int64)

    def describe(self):
        return f"bpe{self.vocabulary_size}"

    def to_json(self):
        return json.dumps({"tokenizer": "bpe", "merges": self.merges})


def make_tokenizer(name, training_bytes=b"", vocabulary_size=512):
    """A tokenizer by name, or `name` itself when it is already one (a preset's tokenizer)."""
    if not isinstance(name, str):
        return name
    if name == "byte":
        return ByteTokens()
    if name == "bpe":
        return BytePairTokens.train(training_bytes, vocabulary_size)
    raise WorkbenchError(f"unknown tokenizer '{name}': {suggest(name, TOKENIZERS)}")


def tokenizer_from_json(text):
    config = json.loads(text)
    if config.get("tokenizer") == "bpe":
        return BytePairTokens(config["merges"])
    return ByteTokens()
