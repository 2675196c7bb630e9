"""The run's training split divided among federated clients.

A client's examples are *positions* in the training split's fixed order (`Data.stable_train`):
sources that reshuffle their training split every epoch (image and text folders) keep a second,
unshuffled copy of it for this, so position `i` is the same example on every pass and in every
process that loads the data with the same source, options and seed. Only the labels are read
into memory (one streaming pass); a client's dataset streams the training split and keeps its
own positions.

| partition   | who gets what                                                                |
|-------------|------------------------------------------------------------------------------|
| `iid`       | a seeded permutation cut into `clients` near-equal parts                     |
| `dirichlet` | label skew (Hsu et al. 2019, "Measuring the effects of non-identical data    |
|             | distribution for federated visual classification"): each class's examples    |
|             | split among the clients in proportions drawn from Dir(alpha), as in Flower   |
|             | Datasets' `DirichletPartitioner`; redrawn until every client has enough      |
| `shards`    | McMahan et al. 2017 ("Communication-efficient learning of deep networks from |
|             | decentralized data"): sorted by label, cut into `clients * shards_per_client`|
|             | shards, `shards_per_client` random shards each                               |
| `by_folder` | the folder `client_folder_level` levels below the class folder names the     |
|             | client (`DIR/<class>/<client>/file` for level 1)                             |
| `by_column` | a CSV column (`client_column`) names the client                              |

Each client then keeps `holdout_fraction` of its examples (seeded, at least one when it has two
or more) out of its training: `Partition.clients[i]` is what client `i` trains on and
`Partition.holdout[i]` what it holds out, disjoint; together they are its examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from workbench.errors import WorkbenchError, suggest
from workbench.settings.federated import PARTITIONS

# Redraws of a Dirichlet partition that leaves a client too small (Flower Datasets' default).
DIRICHLET_ATTEMPTS = 10
LABEL_BATCH = 1024


@dataclass
class Partition:
    """Which training positions each client trains on and holds out.

    Args:
        kind: the partition's name (`federated.partition`).
        clients: per client, the sorted int64 positions (in `Data.stable_train`'s order) it
            trains on.
        holdout: per client, the sorted int64 positions it holds out of its training (on which
            the global model is evaluated); disjoint from `clients[i]`.
        labels: the training labels in that order, as class ids (`None` when the task's labels
            are not one class id per example).
        names: a name per client: `client-0`, ... or the folder or column value it stands for.
    """

    kind: str
    clients: list
    holdout: list
    labels: Optional[np.ndarray]
    names: list

    def examples(self, client):
        """All of `client`'s positions, sorted: what it trains on and what it holds out."""
        return np.union1d(self.clients[client], self.holdout[client]).astype(np.int64)


def training_labels(data):
    """The training labels in the stable order, in one streaming pass (only the labels are kept),
    and the number of training examples. Labels are class ids (int64) when each example has one
    class id, else `None`."""
    labels = data.stable_train().map(lambda x, y: y).batch(LABEL_BATCH)
    parts = [np.asarray(batch) for batch in labels.as_numpy_iterator()]
    values = np.concatenate(parts) if parts else np.zeros((0,))
    count = len(values)
    # Multi-label rows are vectors and regression targets have no classes: neither is a class id.
    if data.info.num_classes is None or values.ndim != 1:
        return None, count
    return values.astype(np.int64), count


def partition_training_split(data, recipe, settings, seed) -> Partition:
    """Divide `data`'s training split among `settings.clients` clients (`settings`:
    `FederatedSettings`), fixed by `seed`; bad settings for this data raise `WorkbenchError`."""
    kind = settings.partition
    if kind not in PARTITIONS:
        raise WorkbenchError(f"unknown federated.partition '{kind}': {suggest(kind, PARTITIONS)}")
    if settings.clients < 1:
        raise WorkbenchError(f"federated.clients must be at least 1, got {settings.clients}")
    where = f"data '{recipe.data if recipe is not None else data.info.source}'"
    labels, count = training_labels(data)
    minimum = minimum_examples(settings)
    rng = np.random.default_rng([seed, 0])
    if kind in ("by_folder", "by_column"):
        parts, names = _by_group(data, settings, where, count)
    else:
        if settings.clients > count:
            raise WorkbenchError(f"federated.clients={settings.clients} is more than the "
                                 f"{count} training examples of {where}; use fewer clients")
        names = [f"client-{i}" for i in range(settings.clients)]
        if kind == "iid":
            parts = np.array_split(rng.permutation(count), settings.clients)
        elif kind == "dirichlet":
            parts = _dirichlet(_class_labels(labels, kind, where), settings, minimum, rng)
        else:
            parts = _shards(_class_labels(labels, kind, where), settings, rng, where)
    for name, part in zip(names, parts):
        if len(part) < minimum:
            raise WorkbenchError(_too_small(kind, name, len(part), settings))
    own, held = _hold_out(parts, settings.holdout_fraction, np.random.default_rng([seed, 1]))
    return Partition(kind=kind, clients=own, holdout=held, labels=labels, names=names)


def minimum_examples(settings):
    """Examples a client needs: one to train on, and one more to hold out when there is a
    holdout."""
    return 2 if settings.holdout_fraction > 0 else 1


def _too_small(kind, name, size, settings):
    need = minimum_examples(settings)
    why = ("one to train on and one held out, with federated.holdout_fraction="
           f"{settings.holdout_fraction:g}" if need > 1 else "one to train on")
    fixes = (["more training examples in its group"] if kind.startswith("by_")
             else ["fewer federated.clients"])
    if need > 1:
        fixes.append("federated.holdout_fraction=0")
    return (f"federated.partition '{kind}' leaves client '{name}' with {size} example(s) of "
            f"the training split; each client needs at least {need} ({why}); try "
            + " or ".join(fixes))


def _class_labels(labels, kind, where):
    if labels is None:
        raise WorkbenchError(f"federated.partition '{kind}' splits by class, and the labels of "
                             f"{where} are not one class id per example; use iid")
    return labels


def _dirichlet(labels, settings, minimum, rng):
    """Each class's examples split among the clients by proportions ~ Dir(alpha), redrawn (at
    most `DIRICHLET_ATTEMPTS` times) until every client has `minimum` examples."""
    if not settings.alpha > 0:
        raise WorkbenchError(f"federated.alpha must be positive, got {settings.alpha}")
    clients = settings.clients
    smallest = 0
    for _ in range(DIRICHLET_ATTEMPTS):
        parts = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, float(settings.alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for part, piece in zip(parts, np.split(members, cuts)):
                part.append(piece)
        parts = [np.concatenate(part) for part in parts]
        smallest = min(len(part) for part in parts)
        if smallest >= minimum:
            return parts
    raise WorkbenchError(
        f"federated.partition 'dirichlet' with alpha={settings.alpha:g} left a client with "
        f"{smallest} example(s) in each of {DIRICHLET_ATTEMPTS} draws (each needs at least "
        f"{minimum}); use a larger federated.alpha or fewer federated.clients")


def _shards(labels, settings, rng, where):
    """Sorted by label (ties in a seeded random order), cut into clients * shards_per_client
    near-equal shards, dealt out `shards_per_client` at random to each client."""
    count = settings.clients * settings.shards_per_client
    if count > len(labels):
        raise WorkbenchError(
            f"federated.partition 'shards' needs {count} shards (federated.clients="
            f"{settings.clients} x shards_per_client={settings.shards_per_client}) but {where} "
            f"has {len(labels)} training examples; use fewer clients or shards")
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, count)
    dealt = rng.permutation(count).reshape(settings.clients, settings.shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in dealt]


def _by_group(data, settings, where, count):
    """One client per distinct group name (sorted), from the source's per-example groups."""
    kind = settings.partition
    if kind == "by_folder":
        reader, key = data.groups.get("folder"), settings.client_folder_level
        if reader is None:
            raise WorkbenchError(f"federated.partition 'by_folder' needs an image or text "
                                 f"folder source (DIR/<class>/<client>/FILE); {where} is not "
                                 "one; use iid, dirichlet or shards")
        what = f"client folders at federated.client_folder_level={key}"
    else:
        reader, key = data.groups.get("column"), settings.client_column
        if reader is None:
            raise WorkbenchError(f"federated.partition 'by_column' needs a CSV source; {where} "
                                 "is not one; use iid, dirichlet or shards")
        if not key:
            raise WorkbenchError("federated.partition 'by_column' needs federated.client_column,"
                                 " the CSV column that names each example's client")
        if key in getattr(data.info.preprocessing, "features", {}):
            raise WorkbenchError(
                f"federated.client_column '{key}' is also a feature of the model; leave it out "
                f"of the features with --set data_options.exclude={key}")
        what = f"values of column '{key}'"
    try:
        groups = np.asarray(reader(key), dtype=object)
    except WorkbenchError as error:
        raise WorkbenchError(f"federated.partition '{kind}': {error}") from None
    if len(groups) != count:  # the source's groups and its training split disagree: a bug
        raise RuntimeError(f"{len(groups)} group names for {count} training examples")
    names = sorted(set(groups))
    if len(names) != settings.clients:
        shown = ", ".join(map(str, names[:10])) + (", ..." if len(names) > 10 else "")
        raise WorkbenchError(
            f"federated.partition '{kind}' found {len(names)} {what} in the training split "
            f"({shown}) but federated.clients is {settings.clients}; set "
            f"--set federated.clients={len(names)}")
    return [np.flatnonzero(groups == name) for name in names], [str(n) for n in names]


def _hold_out(parts, fraction, rng):
    """Each part split into (trained on, held out), both sorted int64; at least one example is
    held out of a part of two or more when `fraction` > 0, and at least one is trained on."""
    own, held = [], []
    for part in parts:
        part = np.sort(np.asarray(part, dtype=np.int64))
        size = len(part)
        count = 0 if fraction <= 0 or size < 2 else min(size - 1, max(1, round(size * fraction)))
        chosen = np.zeros(size, dtype=bool)
        chosen[rng.choice(size, count, replace=False)] = True
        own.append(part[~chosen])
        held.append(part[chosen])
    return own, held


def client_dataset(data, positions):
    """The training examples at `positions` (in the stable order), as single `(x, y)` examples
    in that order, streamed from the training split: batch it like any data split."""
    from workbench.data.checks import select_split

    positions = np.asarray(positions, dtype=np.int64)
    size = int(data.info.sizes["train"])
    if positions.size and (positions.min() < 0 or positions.max() >= size):
        raise WorkbenchError(f"client positions must be in [0, {size}), the training split's "
                             f"size; got {positions.min()}..{positions.max()}")
    chosen = np.zeros(size, dtype=np.int8)
    chosen[positions] = 1
    wanted = int(chosen.sum())
    # `take` ends the pass at the client's last example instead of reading the rest; the
    # asserted size lets Keras know an epoch's length (and checks the selection).
    import tensorflow as tf

    return select_split(data.stable_train(), chosen, 1).take(wanted).apply(
        tf.data.experimental.assert_cardinality(wanted))


def stats_rows(partition, class_names=None) -> list[dict]:
    """Per client: its name, examples, how many it trains on and holds out, and its examples'
    label counts `{class name: count}` (empty without class labels)."""
    rows = []
    for index, name in enumerate(partition.names):
        examples = partition.examples(index)
        counts = {}
        if partition.labels is not None:
            values, numbers = np.unique(partition.labels[examples], return_counts=True)
            counts = {_class_name(v, class_names): int(n) for v, n in zip(values, numbers)}
        rows.append({"name": name, "examples": int(len(examples)),
                     "train": int(len(partition.clients[index])),
                     "holdout": int(len(partition.holdout[index])), "labels": counts})
    return rows


def _class_name(value, class_names):
    value = int(value)
    if class_names is not None and 0 <= value < len(class_names):
        return str(class_names[value])
    return str(value)


def stats_markdown(partition, class_names=None) -> str:
    """The clients as a markdown table for report.md: client | examples | held out | labels."""
    lines = [f"Partition `{partition.kind}` over {len(partition.names)} clients.", "",
             "| client | examples | held out | label counts |", "|---|---|---|---|"]
    for row in stats_rows(partition, class_names):
        labels = ", ".join(f"{name}: {count}" for name, count in row["labels"].items()) or "-"
        lines.append(f"| {row['name']} | {row['examples']} | {row['holdout']} | {labels} |")
    return "\n".join(lines)


def data_options_for(recipe):
    """The recipe's `data_options`, with a `by_column` partition's client column left out of
    the features (it names the client, it does not describe the example): load the data with
    these so that the column is not one of the model's inputs."""
    options = dict(recipe.data_options)
    settings = recipe.federated
    # Only a CSV reads `exclude`; on another source by_column is refused with its own message.
    is_csv = str(recipe.data).lower().endswith(".csv")
    if settings.partition == "by_column" and settings.client_column and is_csv:
        exclude = options.get("exclude", ())
        exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        if settings.client_column not in exclude:
            options["exclude"] = [*exclude, settings.client_column]
    return options
