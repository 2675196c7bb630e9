"""The federated partitions of a run's training split: client sizes and label counts for every
partition, client datasets that hold exactly their positions' examples in the stable training
order, holdouts, determinism, and one clear error for each bad input."""

import csv
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.data import load_data
from workbench.errors import WorkbenchError
from workbench.federated.partition import (Partition, client_dataset, data_options_for,
                                           partition_training_split, stats_markdown, stats_rows)
from workbench.settings.federated import FederatedSettings

SITES = ("north", "south", "west")


def split(data, seed=0, **settings):
    return partition_training_split(data, None, FederatedSettings(**settings), seed)


def labels_of(dataset):
    return np.asarray([int(y) for _, y in dataset.as_numpy_iterator()], dtype=np.int64)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0, task="multiclass")


def site_image_folder(root, per_site=4):
    """`root/<class>/<site>/<n>.png`: the site sets the image's brightness, so an example's
    pixels tell which site it came from without its path."""
    from PIL import Image

    for label, name in enumerate(("a", "b", "c")):
        for index, site in enumerate(SITES):
            folder = root / name / site
            folder.mkdir(parents=True)
            for n in range(per_site):
                pixels = np.full((4, 4, 3), 40 * index + 10, dtype="uint8")
                pixels[0, 0, 0] = 200 + label  # the images of a site differ by class and file
                pixels[1, 1, 1] = n
                Image.fromarray(pixels).save(folder / f"{n}.png")
    return root


def site_table(path, rows=90, seed=0):
    """A CSV whose `site` column names the client; `kind` is the class."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["size", "site", "kind"])
        for row in range(rows):
            size = rng.normal()
            writer.writerow([f"{size:.4f}", SITES[row % 3], "ab"[int(size > 0)]])
    return path


@pytest.fixture(scope="module")
def image_sites(tmp_path_factory):
    folder = site_image_folder(tmp_path_factory.mktemp("images") / "sites")
    return load_data(str(folder), seed=0, image_size=(4, 4), val_fraction=0.15,
                     test_fraction=0.15)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return site_table(tmp_path_factory.mktemp("csv") / "sites.csv")


@pytest.fixture(scope="module")
def csv_sites(table):
    return load_data(str(table), seed=0, target="kind", exclude=["site"])


def skew(partition):
    """The mean total-variation distance between a client's label distribution and the whole
    training split's: 0 for identical mixtures, near 1 for clients of one rare class each."""
    classes = partition.labels.max() + 1
    overall = np.bincount(partition.labels, minlength=classes) / len(partition.labels)
    distances = []
    for index in range(len(partition.names)):
        counts = np.bincount(partition.labels[partition.examples(index)], minlength=classes)
        distances.append(0.5 * np.abs(counts / counts.sum() - overall).sum())
    return float(np.mean(distances))


def test_iid_sizes_differ_by_at_most_one_and_cover_the_split(digits):
    partition = split(digits, clients=7, partition="iid")
    sizes = [len(partition.examples(i)) for i in range(7)]
    assert max(sizes) - min(sizes) <= 1
    everyone = np.concatenate([partition.examples(i) for i in range(7)])
    assert sorted(everyone) == list(range(digits.info.sizes["train"]))
    assert partition.names == [f"client-{i}" for i in range(7)]
    assert len(partition.labels) == digits.info.sizes["train"]
    assert skew(partition) < 0.15


def test_dirichlet_small_alpha_is_more_skewed_than_large(digits):
    skewed = split(digits, clients=5, partition="dirichlet", alpha=0.1)
    mixed = split(digits, clients=5, partition="dirichlet", alpha=100.0)
    assert skew(skewed) > 0.4 > 0.1 > skew(mixed)
    for partition in (skewed, mixed):
        assert min(len(p) for p in partition.clients) >= 1
        assert min(len(h) for h in partition.holdout) >= 1
        everyone = np.concatenate([partition.examples(i) for i in range(5)])
        assert sorted(everyone) == list(range(digits.info.sizes["train"]))


def test_shards_give_each_client_few_labels(digits):
    partition = split(digits, clients=10, partition="shards", shards_per_client=2)
    distinct = [len(np.unique(partition.labels[partition.examples(i)])) for i in range(10)]
    # A shard is a run of the label-sorted split, at most two classes when it straddles a border.
    assert max(distinct) <= 2 * 2
    assert np.mean(distinct) <= 3
    sizes = [len(partition.examples(i)) for i in range(10)]
    assert max(sizes) - min(sizes) <= 2
    assert skew(partition) > 0.6


def test_holdout_is_disjoint_seeded_and_sized(digits):
    partition = split(digits, clients=4, partition="iid", holdout_fraction=0.25)
    for own, held in zip(partition.clients, partition.holdout):
        assert own.dtype == held.dtype == np.int64
        assert not np.intersect1d(own, held).size
        assert list(own) == sorted(own) and list(held) == sorted(held)
        assert len(held) == round(0.25 * (len(own) + len(held)))
    none = split(digits, clients=4, partition="iid", holdout_fraction=0.0)
    assert all(len(h) == 0 for h in none.holdout)
    # A client of two examples still holds one out and trains on the other.
    tiny = split(digits, clients=digits.info.sizes["train"] // 2, holdout_fraction=0.01)
    assert min(len(h) for h in tiny.holdout) == 1 and min(len(c) for c in tiny.clients) >= 1


def test_the_same_seed_gives_the_same_partition(digits):
    for kind in ("iid", "dirichlet", "shards"):
        first, again = (split(digits, seed=3, clients=4, partition=kind) for _ in range(2))
        other = split(digits, seed=4, clients=4, partition=kind)
        for a, b in zip(first.clients + first.holdout, again.clients + again.holdout):
            assert np.array_equal(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(first.clients, other.clients))


def test_client_dataset_holds_exactly_its_positions(digits):
    partition = split(digits, clients=3, partition="dirichlet", alpha=0.5)
    everything = list(digits.stable_train().as_numpy_iterator())
    positions = partition.clients[1]
    examples = list(client_dataset(digits, positions).as_numpy_iterator())
    assert len(examples) == len(positions)
    for (x, y), position in zip(examples, positions):
        assert np.array_equal(x, everything[position][0]) and y == everything[position][1]
    assert np.array_equal(labels_of(client_dataset(digits, partition.holdout[1])),
                          partition.labels[partition.holdout[1]])
    batches = list(client_dataset(digits, positions).batch(32).as_numpy_iterator())
    assert sum(len(y) for _, y in batches) == len(positions)
    assert len(list(client_dataset(digits, []))) == 0
    with pytest.raises(WorkbenchError, match="training split's size"):
        client_dataset(digits, [digits.info.sizes["train"]])


def test_folder_source_has_a_stable_training_order(image_sites):
    first = labels_of(image_sites.stable_train())
    assert np.array_equal(first, labels_of(image_sites.stable_train()))
    # The training pipeline itself reshuffles: the same examples, in another order.
    shuffled = [labels_of(image_sites.train) for _ in range(3)]
    assert all(sorted(s) == sorted(first) for s in shuffled)
    assert any(not np.array_equal(s, first) for s in shuffled)


def test_by_folder_clients_are_the_site_folders(image_sites):
    partition = split(image_sites, clients=3, partition="by_folder", holdout_fraction=0.2)
    assert partition.names == list(SITES)
    groups = image_sites.groups["folder"](1)
    for index, site in enumerate(SITES):
        positions = partition.examples(index)
        assert {groups[p] for p in positions} == {site}
        brightness = {int(x[2, 2, 0]) for x, _ in
                      client_dataset(image_sites, positions).as_numpy_iterator()}
        assert brightness == {40 * index + 10}
    assert sum(len(partition.examples(i)) for i in range(3)) == image_sites.info.sizes["train"]
    rows = stats_rows(partition, image_sites.info.class_names)
    assert [r["name"] for r in rows] == list(SITES)
    assert all(set(r["labels"]) <= {"a", "b", "c"} for r in rows)


def test_by_folder_bad_settings(image_sites, digits):
    with pytest.raises(WorkbenchError, match=r"found 3 client folders .*federated.clients=3"):
        split(image_sites, clients=4, partition="by_folder")
    with pytest.raises(WorkbenchError, match="2 level"):
        split(image_sites, clients=3, partition="by_folder", client_folder_level=2)
    with pytest.raises(WorkbenchError, match="needs an image or text folder source"):
        split(digits, clients=3, partition="by_folder")


def test_by_folder_on_text_files(tmp_path):
    for name, words in (("sport", "ball goal team"), ("space", "orbit moon star")):
        for site in ("x", "y"):
            (tmp_path / name / site).mkdir(parents=True)
            for n in range(5):
                (tmp_path / name / site / f"{n}.txt").write_text(f"{words} {site} {n}")
    data = load_data(str(tmp_path), seed=0, sequence_length=8)
    partition = split(data, clients=2, partition="by_folder", holdout_fraction=0.0)
    assert partition.names == ["x", "y"]
    for index in range(2):
        assert np.array_equal(labels_of(client_dataset(data, partition.clients[index])),
                              partition.labels[partition.clients[index]])


def test_by_column_clients_are_the_site_values(csv_sites, table):
    partition = split(csv_sites, clients=3, partition="by_column", client_column="site")
    assert partition.names == sorted(SITES)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # The training split keeps the file's row order; its rows are the file's minus val/test.
    groups = csv_sites.groups["column"]("site")
    assert len(groups) == csv_sites.info.sizes["train"]
    assert set(groups) == set(SITES) and len(rows) == 90
    for index, site in enumerate(partition.names):
        assert {groups[p] for p in partition.examples(index)} == {site}
    kinds = labels_of(client_dataset(csv_sites, partition.clients[0]))
    assert np.array_equal(kinds, partition.labels[partition.clients[0]])
    assert "site" not in csv_sites.info.preprocessing.features


def test_by_column_bad_settings(csv_sites, table, digits, image_sites):
    with pytest.raises(WorkbenchError, match="found 3 values of column 'site'"):
        split(csv_sites, clients=2, partition="by_column", client_column="site")
    with pytest.raises(WorkbenchError, match="no column 'sight'.*did you mean 'site'"):
        split(csv_sites, clients=3, partition="by_column", client_column="sight")
    with pytest.raises(WorkbenchError, match="needs a CSV source"):
        split(digits, clients=3, partition="by_column", client_column="site")
    with pytest.raises(WorkbenchError, match="needs a CSV source"):
        split(image_sites, clients=3, partition="by_column", client_column="site")
    with pytest.raises(WorkbenchError, match="needs federated.client_column"):
        split(csv_sites, clients=3, partition="by_column")
    featured = load_data(str(table), seed=0, target="kind")
    with pytest.raises(WorkbenchError, match="also a feature.*data_options.exclude=site"):
        split(featured, clients=3, partition="by_column", client_column="site")


def test_csv_exclude_option(table):
    with pytest.raises(WorkbenchError, match="exclude names the target"):
        load_data(str(table), seed=0, target="kind", exclude=["kind"])
    with pytest.raises(WorkbenchError, match="exclude names 'sit'"):
        load_data(str(table), seed=0, target="kind", exclude=["sit"])
    one = load_data(str(table), seed=0, target="kind", exclude="site")
    assert set(one.info.preprocessing.features) == {"size"}


def test_data_options_for_leaves_the_client_column_out():
    recipe = SimpleNamespace(data="t.csv", data_options={"target": "kind", "exclude": "id"},
                             federated=FederatedSettings(partition="by_column",
                                                         client_column="site"))
    assert data_options_for(recipe) == {"target": "kind", "exclude": ["id", "site"]}
    recipe.federated = replace(recipe.federated, partition="iid")
    assert data_options_for(recipe) == recipe.data_options
    recipe.data, recipe.federated.partition = "digits", "by_column"
    assert data_options_for(recipe) == recipe.data_options


def test_bad_input_is_one_clear_error(digits, table):
    train = digits.info.sizes["train"]
    cases = [
        (dict(partition="dirichlett"), "unknown federated.partition 'dirichlett'.*'dirichlet'"),
        (dict(partition="dirichlet", alpha=0.0), "alpha must be positive"),
        (dict(partition="dirichlet", alpha=-1.0), "alpha must be positive"),
        (dict(clients=train + 1), f"more than the {train} training examples"),
        (dict(clients=train - 1), "leaves client 'client-.*' with 1 example"),
        (dict(clients=train, holdout_fraction=0.0, partition="shards", shards_per_client=1),
         None),
        (dict(clients=train, shards_per_client=2, partition="shards"), "needs .* shards"),
        (dict(clients=200, partition="dirichlet", alpha=0.01), "in each of 10 draws"),
        (dict(clients=0), "at least 1"),
    ]
    for settings, message in cases:
        if message is None:
            assert len(split(digits, **settings).names) == train
            continue
        with pytest.raises(WorkbenchError, match=message):
            split(digits, **settings)
    regression = load_data(str(table), seed=0, target="size", exclude=["site"],
                           task="regression")
    for kind in ("dirichlet", "shards"):
        with pytest.raises(WorkbenchError, match="not one class id per example; use iid"):
            split(regression, clients=2, partition=kind)
    assert split(regression, clients=2).labels is None


def test_stats_rows_and_markdown(digits):
    partition = Partition(kind="iid", clients=[np.array([0, 1]), np.array([3])],
                          holdout=[np.array([2]), np.array([], np.int64)],
                          labels=np.array([0, 1, 1, 2]), names=["client-0", "client-1"])
    rows = stats_rows(partition, ["zero", "one", "two"])
    assert rows == [
        {"name": "client-0", "examples": 3, "train": 2, "holdout": 1,
         "labels": {"zero": 1, "one": 2}},
        {"name": "client-1", "examples": 1, "train": 1, "holdout": 0, "labels": {"two": 1}}]
    table = stats_markdown(partition, ["zero", "one", "two"])
    assert "| client | examples | held out | label counts |" in table
    assert "| client-0 | 3 | 1 | zero: 1, one: 2 |" in table
    assert stats_rows(replace(partition, labels=None))[0]["labels"] == {}
    assert "| client-1 | 1 | 0 | - |" in stats_markdown(replace(partition, labels=None))
