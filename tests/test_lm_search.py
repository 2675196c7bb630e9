"""Search on the gpt recipe at a tiny budget, through the generic search stage: learning rate,
weight decay and the builder's width (an `hp` choice), with val_loss as the objective."""

import json
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO / "recipes" / "gpt.py").is_file(),
                       reason="needs the gpt recipe (recipes/gpt.py)"),
]

CORPUS = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"


def _search(tmp_path, *extra):
    return run_cli(
        "gpt", "--fast", "--stages", "search", "--set", f"data={CORPUS}",
        "--set", "lm.context=16", "--set", "search.max_trials=2", "--set", "search.epochs=1",
        "--set", "search.learning_rate_min=3e-4", "--set", "search.learning_rate_max=3e-3",
        "--set", "search.weight_decays=0.01,0.1", *extra, "--out", tmp_path / "run",
        timeout=900)


def test_search_finds_rates_decays_and_widths_by_validation_loss(tmp_path):
    result = _search(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    search = json.loads((tmp_path / "run" / "report.json").read_text())["stages"]["search"]
    assert search["objective"] == "val_loss"
    finished = [t for t in search["trials"] if t["score"] is not None]
    assert len(finished) == 2
    assert search["best_score"] == min(t["score"] for t in finished)
    for trial in finished:
        values = trial["hyperparameters"]
        assert 3e-4 <= values["learning_rate"] <= 3e-3
        assert values["weight_decay"] in (0.01, 0.1)
        assert values["width"] in (64, 128, 192, 256)
        assert 0 < trial["score"] < 6.0  # nats/token over 256 bytes: below a uniform guess (5.5)


@pytest.mark.skipif("warmup_steps" not in
                    __import__("workbench.settings", fromlist=["SearchSettings"])
                    .SearchSettings.__dataclass_fields__,
                    reason="search.warmup_steps (choices of lm.warmup_steps) is not wired yet")
def test_search_over_warmup_steps(tmp_path):
    result = _search(tmp_path, "--set", "search.warmup_steps=0,10")
    assert result.returncode == 0, result.stderr[-2000:]
    search = json.loads((tmp_path / "run" / "report.json").read_text())["stages"]["search"]
    assert all(t["hyperparameters"]["warmup_steps"] in (0, 10) for t in search["trials"])
