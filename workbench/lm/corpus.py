"""Text corpora for language models: where the bytes come from, how they become tokens, how they
are split, and the `tf.data` windows training and evaluation read.

Sources (`data` setting):
- `stdlib`: every `*.py` file of the standard library, exactly
  `sorted(p for p in glob(root + "/**/*.py", recursive=True) if "site-packages" not in p and
  "/test" not in p and "idle_test" not in p)` with `root = sysconfig.get_paths()["stdlib"]`, read as
  bytes and concatenated in that order (734 files, 12.1 MB on Python 3.11.7);
- a text file, or a folder of text files (every file below it, sorted by path, hidden ones left
  out), concatenated as bytes;
- `module:function`: a function returning `str`, `bytes`, or an iterable of them.

The first `1 - val_fraction` of the tokens train, the rest validate (a contiguous cut, as nanoGPT's
`prepare.py` does). Tokens are bytes by default (KerasHub's `ByteTokenizer`: id = byte value), so a
saved model scores raw bytes directly; `bpe` learns byte-level merges on the training split.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.lm.tokenizers import make_tokenizer


def stdlib_paths(root=None):
    """The `stdlib` corpus's files, in corpus order."""
    root = root or sysconfig.get_paths()["stdlib"]
    return sorted(p for p in glob.glob(root + "/**/*.py", recursive=True)
                  if "site-packages" not in p and "/test" not in p and "idle_test" not in p)


def stdlib_bytes(root=None) -> bytes:
    """The `stdlib` corpus as one byte string."""
    return b"".join(Path(p).read_bytes() for p in stdlib_paths(root))


def data_function(spec):
    """The function a `"module:function"` data source names; a missing one is bad input."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise WorkbenchError(f"data '{spec}': cannot import module '{module_name}' ({error})")
    function = getattr(module, function_name, None)
    if not callable(function):
        raise WorkbenchError(f"data '{spec}': module '{module_name}' has no function "
                             f"'{function_name}'")
    return function


def _call_source(spec):
    value = data_function(spec)()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return b"".join(part.encode("utf-8") if isinstance(part, str) else bytes(part)
                        for part in value)
    except TypeError:
        raise WorkbenchError(f"data '{spec}': the function returned {type(value).__name__}; "
                             "return text, bytes, or an iterable of them") from None


def read_source(spec: str) -> bytes:
    """The raw bytes of a corpus source (see the module docstring)."""
    if spec == "stdlib":
        return stdlib_bytes()
    path = Path(spec)
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        return b"".join(p.read_bytes() for p in files)
    if ":" in spec and not path.exists():
        return _call_source(spec)
    raise WorkbenchError(f"data '{spec}' for a language model is neither 'stdlib', an existing "
                         "text file or folder, nor a 'module:function' source")


@dataclass
class Corpus:
    """A tokenized corpus cut into a training and a validation part.

    Attributes:
        train, val: token ids (`uint8` for bytes, `int32` otherwise).
        tokenizer: encodes text to ids and back (`workbench.lm.tokenizers`).
        fingerprint: SHA-256 (16 hex digits) of the bytes, the tokenizer and the cut.
        num_bytes: bytes in the source; `val_bytes`: bytes the validation part covers.
    """

    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    fingerprint: str
    num_bytes: int
    val_bytes: int
    source: str


def load_corpus(spec="stdlib", tokenizer="byte", val_fraction=0.1, context=64,
                bpe_vocabulary_size=512) -> Corpus:
    """Read, tokenize and split a corpus; each split must hold at least one window."""
    raw = read_source(spec)
    if not raw:
        raise WorkbenchError(f"data '{spec}' is empty: a language model needs text to train on")
    cut_byte = int(len(raw) * (1 - val_fraction))
    tokenizer = make_tokenizer(tokenizer, raw[:cut_byte], vocabulary_size=bpe_vocabulary_size)
    train = tokenizer.encode_bytes(raw[:cut_byte])
    val = tokenizer.encode_bytes(raw[cut_byte:])
    for name, part in (("training", train), ("validation", val)):
        if len(part) < context + 1:
            raise WorkbenchError(
                f"data '{spec}' is too short: its {name} part has {len(part)} tokens, fewer than "
                f"one window of context + 1 = {context + 1}; give more text or a smaller lm.context")
    digest = hashlib.sha256(raw)
    digest.update(f"|{tokenizer.describe()}|{val_fraction!r}".encode())
    return Corpus(train=train, val=val, tokenizer=tokenizer, fingerprint=digest.hexdigest()[:16],
                  num_bytes=len(raw), val_bytes=len(raw) - cut_byte, source=spec)


def window_starts(num_tokens, context, count=None):
    """Starts of the non-overlapping windows that score every token once: windows of
    `context + 1` tokens every `context` tokens (each window's targets follow the last one's).
    With `count`, that many starts spread evenly instead (a fixed validation set)."""
    last = num_tokens - context - 1
    if count is None:
        return np.arange(0, last + 1, context, dtype=np.int64)
    return np.linspace(0, last, min(count, last + 1)).astype(np.int64)


def windows_dataset(tokens, context, starts):
    """Unbatched `(x, y)` windows at `starts`: `x` = tokens `[s, s + context)`, `y` the next
    token of each (`[s + 1, s + context + 1)`), both int32."""
    import tensorflow as tf

    source = tf.constant(tokens)
    offsets = tf.range(context + 1, dtype=tf.int64)

    def window(start):
        ids = tf.cast(tf.gather(source, start + offsets), tf.int32)
        return ids[:-1], ids[1:]

    return tf.data.Dataset.from_tensor_slices(np.asarray(starts, np.int64)).map(window)


def random_batches(tokens, context, batch_size, seed, first_step=0):
    """nanoGPT's `get_batch` as a stream: batch `i` holds `batch_size` windows at uniformly random
    offsets of `tokens`, drawn with a stateless generator from `(seed, i)`, so the stream is the
    same on every run and a resumed run continues it from `first_step` exactly."""
    import tensorflow as tf

    source = tf.constant(tokens)
    highest = len(tokens) - context - 1
    offsets = tf.range(context + 1, dtype=tf.int64)

    def batch(step):
        starts = tf.random.stateless_uniform(
            (batch_size,), seed=tf.stack([tf.cast(seed, tf.int64), step]), minval=0,
            maxval=highest + 1, dtype=tf.int64)
        ids = tf.cast(tf.gather(source, starts[:, None] + offsets[None, :]), tf.int32)
        return ids[:, :-1], ids[:, 1:]

    # A fixed two-batch buffer and no autotuning: a batch is one small gather, and an autotuned
    # pipeline that ran for a while could hold `fit` up for tens of seconds when its iterator was
    # torn down at the end of training.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.range(first_step, 2**62).map(batch).prefetch(2)
            .with_options(options))
