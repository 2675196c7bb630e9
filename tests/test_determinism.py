"""The same seed gives the same result (op determinism is on in every run)."""

import json

import pytest


def _test_metrics(cli, out, seed):
    result = cli("digits", "--fast", "--quiet", "--stages", "train,evaluate", "--seed", seed,
                 "--out", out)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "report.json").read_text())["stages"]["evaluate"]


@pytest.mark.slow
def test_same_seed_same_accuracy_other_seed_other_model(cli, tmp_path):
    first = _test_metrics(cli, tmp_path / "a", 3)
    second = _test_metrics(cli, tmp_path / "b", 3)
    other = _test_metrics(cli, tmp_path / "c", 4)
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["test_loss"] == second["test_loss"]
    # Another seed changes the split, the initialization and the shuffling.
    assert other["test_loss"] != first["test_loss"]
