"""Every data source trains end to end through the CLI, with int8 TFLite verified on the test
split; the loaders split deterministically and stratify classes."""

import json
import sys

import numpy as np
import pytest

import datagen
from conftest import REPO, run_cli

TINY = REPO / "tests" / "fixtures" / "tiny_recipe.py"


def _int8_run(tmp_path, data, *extra):
    out = tmp_path / "run"
    result = run_cli(TINY, "--quiet", "--out", out, "--set", f"data={data}",
                     "--set", "export.formats=int8", "--set", "export.representative_examples=8",
                     *extra)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    verified = report["stages"]["verify"]["int8"]
    assert verified["examples"] == report["data"]["sizes"]["test"] > 0
    return report, verified


def test_png_folder_trains_and_int8_verifies(tmp_path):
    folder = datagen.image_folder(tmp_path / "shapes")
    report, verified = _int8_run(tmp_path, folder, "--set", "data_options.image_size=[16,16]",
                                 "--set", "epochs=8")
    assert report["data"]["task"] == "multiclass"
    assert report["data"]["class_names"] == ["circle", "square", "stripes"]
    assert verified["accuracy"] > 0.5  # three drawable patterns; chance is 1/3


@pytest.mark.slow
def test_csv_with_string_column_and_regression_target(tmp_path):
    table = datagen.csv_table(tmp_path / "prices.csv")
    report, verified = _int8_run(tmp_path, table, "--set", "data_options.target=price",
                                 "--set", "epochs=30")
    assert report["data"]["task"] == "regression"
    assert verified["mae"] < 2.0  # the target's spread is about 3.5 around its mean
    assert (tmp_path / "run" / "preprocessing.keras").is_file()


@pytest.mark.slow
def test_text_folder(tmp_path):
    folder = datagen.text_folder(tmp_path / "topics")
    report, verified = _int8_run(tmp_path, folder, "--set", "data_options.sequence_length=16",
                                 "--set", "epochs=10")
    assert report["data"]["task"] == "multiclass"
    assert report["data"]["vocabulary_size"] > 10
    assert verified["accuracy"] > 0.5


@pytest.mark.slow
def test_tfrecord_file(tmp_path):
    path = datagen.tfrecord_file(tmp_path / "blobs.tfrecord")
    report, verified = _int8_run(tmp_path, path, "--set",
                                 f"data_options.features={datagen.TFRECORD_FEATURES}",
                                 "--set", "data_options.label=label", "--set", "epochs=10")
    assert report["data"]["sizes"] == {"train": 84, "val": 12, "test": 24}
    assert verified["accuracy"] > 0.6


@pytest.mark.slow
def test_module_function_source(tmp_path):
    module = datagen.function_module(tmp_path)
    report, verified = _int8_run(tmp_path, f"{module}:blobs", "--set", "epochs=10")
    assert report["data"]["task"] == "binary"
    assert report["data"]["sizes"]["test"] == 30  # the function's own test split
    assert set(verified) >= {"accuracy", "auc"}
    assert verified["auc"] > 0.7


def test_splits_are_fixed_by_the_seed_and_stratified(tmp_path):
    from workbench.data import load_data

    folder = datagen.image_folder(tmp_path / "shapes", per_class=30)
    first = load_data(str(folder), seed=3, image_size=(16, 16))
    again = load_data(str(folder), seed=3, image_size=(16, 16))
    other = load_data(str(folder), seed=4, image_size=(16, 16))
    assert first.info.fingerprint == again.info.fingerprint != other.info.fingerprint
    labels = np.concatenate([y for _, y in first.test.batch(100).as_numpy_iterator()])
    assert np.bincount(labels).tolist() == [6, 6, 6]  # 20% of 30 per class


def test_sklearn_tables_infer_their_task():
    from workbench.data import load_data

    tasks = {name: load_data(f"sklearn:{name}").info.task
             for name in ("breast_cancer", "wine", "iris", "diabetes")}
    assert tasks == {"breast_cancer": "binary", "wine": "multiclass", "iris": "multiclass",
                     "diabetes": "regression"}


def test_tfds_without_the_package_is_one_clear_error():
    from workbench.data import load_data
    from workbench.errors import WorkbenchError

    if "tensorflow_datasets" in sys.modules or _installed("tensorflow_datasets"):
        pytest.skip("tensorflow-datasets is installed here")
    with pytest.raises(WorkbenchError, match="needs tensorflow-datasets"):
        load_data("tfds:mnist")


def _installed(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None
