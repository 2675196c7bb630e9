"""Examples of different lengths as fixed windows of token ids with a weight per token: spooled to
disk, packed best-fit decreasing, and read back as `(x, y, sample_weight)` batches.

- `TokenSpool` appends each example's token ids (int32) and weights (uint8) to files and reads
  them back as memory maps, so a data set larger than memory is held on disk, not in RAM.
- `best_fit_decreasing` puts the examples, longest first, each into the fullest window it still
  fits in (Johnson 1973; at most 11/9 of the optimal number of windows plus one); every example
  is followed by the separator (the end-of-sequence token), and windows are padded with it.
- `PackedWindows` are the windows, `(n, width)` ids and weights. A window of `width =
  context + 1` tokens is read as `x = ids[:-1]`, `y = ids[1:]`, `w = weights[1:]`: the weight of
  a token is whether it is trained on as a target. Separators and padding weigh 0.
- `packed_batches` is the training stream: batch `i` holds the windows at positions
  `[i * b, (i + 1) * b)` of a sequence of epochs, each a permutation of the windows drawn from
  `(seed, epoch)`, so every window is seen once an epoch and a resumed run continues the stream
  exactly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class TokenSpool:
    """Examples' token ids and weights appended to two files under `directory`."""

    def __init__(self, directory, name):
        directory = Path(directory)
        self.paths = (directory / f"{name}.ids", directory / f"{name}.weights")
        self._handles = [open(path, "wb") for path in self.paths]
        self.lengths = []

    def append(self, ids, weights):
        ids = np.asarray(ids, dtype=np.int32)
        self._handles[0].write(ids.tobytes())
        self._handles[1].write(np.asarray(weights, dtype=np.uint8).tobytes())
        self.lengths.append(len(ids))

    def close(self):
        """`(ids, weights, offsets)`: the examples concatenated (memory maps) and where each
        starts (`offsets[i]:offsets[i + 1]`)."""
        for handle in self._handles:
            handle.close()
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        if offsets[-1] == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.uint8), offsets
        return (np.memmap(self.paths[0], dtype=np.int32, mode="r"),
                np.memmap(self.paths[1], dtype=np.uint8, mode="r"), offsets)


def best_fit_decreasing(sizes, capacity):
    """Bins (lists of item indices) of at most `capacity` each: items longest first, each into
    the bin it leaves the least room in, a new bin when none has room. Remaining capacities are
    kept as a sorted list of distinct values (at most `capacity` of them), so each placement is
    one bisection."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) and sizes.max() > capacity:
        raise ValueError(f"an item of size {int(sizes.max())} exceeds the capacity {capacity}")
    bins, free, levels = [], {}, []
    for item in np.argsort(-sizes, kind="stable"):
        size = int(sizes[item])
        position = bisect.bisect_left(levels, size)
        if position < len(levels):
            level = levels[position]
            index = free[level].pop()
            if not free[level]:
                del free[level]
                levels.pop(position)
        else:
            level, index = capacity, len(bins)
            bins.append([])
        bins[index].append(int(item))
        left = level - size
        if left > 0:
            if left not in free:
                bisect.insort(levels, left)
                free[left] = []
            free[left].append(index)
    return bins


@dataclass
class PackedWindows:
    """`(n, width)` token ids (int32) and weights (uint8) of packed windows, and how many of each
    window's positions the examples and their separators fill (`used`; the rest is padding)."""

    tokens: np.ndarray
    weights: np.ndarray
    used: np.ndarray = None

    def __len__(self):
        return int(self.tokens.shape[0])

    @property
    def width(self):
        return int(self.tokens.shape[1])

    def stream(self, path=None):
        """The windows' tokens without their padding, one after the other (a memory map at
        `path` when given)."""
        used = self.used if self.used is not None else np.full(len(self), self.width)
        total = int(np.sum(used))
        flat = (np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(total,))
                if path is not None else np.empty(total, np.int32))
        position = 0
        for row, length in enumerate(used):
            flat[position:position + length] = self.tokens[row, :length]
            position += int(length)
        return flat

    def rows(self, index):
        """`(x, y, w)` of the windows at `index`: inputs, next tokens, float32 weights."""
        tokens = np.asarray(self.tokens[index], dtype=np.int32)
        weights = np.asarray(self.weights[index], dtype=np.float32)
        return tokens[:, :-1], tokens[:, 1:], weights[:, 1:]


def pack(ids, weights, offsets, bins, width, separator, path=None):
    """The examples of `bins` (indices into `offsets`) laid out in windows of `width` tokens, each
    example followed by `separator`, the rest padded with it (weight 0). Written to `path`
    (`.npy` memory maps beside it) when given, else held in memory."""
    shape = (len(bins), width)
    if path is not None:
        path = Path(path)
        tokens = np.lib.format.open_memmap(path.with_suffix(".ids.npy"), mode="w+",
                                           dtype=np.int32, shape=shape)
        packed_weights = np.lib.format.open_memmap(path.with_suffix(".weights.npy"), mode="w+",
                                                   dtype=np.uint8, shape=shape)
    else:
        tokens = np.empty(shape, np.int32)
        packed_weights = np.empty(shape, np.uint8)
    tokens[:] = separator
    packed_weights[:] = 0
    used = np.zeros(len(bins), np.int64)
    for row, items in enumerate(bins):
        position = 0
        for item in items:
            start, end = int(offsets[item]), int(offsets[item + 1])
            length = end - start
            tokens[row, position:position + length] = ids[start:end]
            packed_weights[row, position:position + length] = weights[start:end]
            position += length + 1  # the separator is already there
        used[row] = position
    if path is not None:
        tokens.flush()
        packed_weights.flush()
    return PackedWindows(tokens, packed_weights, used)


def padding_fraction(sizes, windows, width):
    """The share of `windows` x `width` positions that no example (with its separator) fills."""
    total = windows * width
    return 1.0 - float(np.sum(sizes)) / total if total else 0.0


def _epoch_order(seed, epoch, count, cache):
    if epoch not in cache:
        cache.clear()
        generator = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]))
        cache[epoch] = generator.permutation(count)
    return cache[epoch]


def batch_rows(count, batch_size, seed, step, cache=None):
    """The window indices of batch `step`: positions `[step * b, (step + 1) * b)` of the epochs'
    permutations."""
    cache = {} if cache is None else cache
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    rows = np.empty(batch_size, np.int64)
    for epoch in np.unique(positions // count):
        inside = positions // count == epoch
        rows[inside] = _epoch_order(seed, int(epoch), count, cache)[positions[inside] % count]
    return rows


def _as_dataset(windows, source, read):
    import tensorflow as tf

    width = windows.width - 1

    def batch(value):
        x, y, w = tf.numpy_function(read, [value], [tf.int32, tf.int32, tf.float32],
                                    stateful=False)
        for tensor in (x, y, w):
            tensor.set_shape((None, width))
        return x, y, w

    return source.map(batch)


def packed_batches(windows, batch_size, seed, first_step=0):
    """The training stream of `(x, y, w)` batches from `first_step` on (see the module
    docstring)."""
    import tensorflow as tf

    cache = {}

    def read(step):
        return windows.rows(batch_rows(len(windows), batch_size, seed, int(step), cache))

    options = tf.data.Options()
    options.autotune.enabled = False
    return (_as_dataset(windows, tf.data.Dataset.range(first_step, 2**62), read).prefetch(2)
            .with_options(options))


def evenly_spaced_rows(count, wanted=None):
    """`wanted` window indices spread evenly over `count` windows (all of them when `None`)."""
    if wanted is None or wanted >= count:
        return np.arange(count, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, wanted).astype(np.int64))


def packed_windows_dataset(windows, rows, batch_size):
    """Batches of `(x, y, w)` of the windows at `rows`, in order."""
    import tensorflow as tf

    rows = np.asarray(rows, np.int64)
    source = tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)
    return _as_dataset(windows, source, lambda index: windows.rows(np.asarray(index)))
