"""The language-model stages in a run: train -> evaluate -> generate on a tiny GPT through a
RunContext, the command line's bad-input answers (exit 2, one line), a saved run's generate, and
(slow) mirrored training on two logical CPUs and kill -9 + --resume."""

import json
import math
import signal
import time

import pytest

from conftest import REPO, run_cli, start_cli
from lm_tiny import tiny_recipe, write_corpus


def _context(recipe, run_dir):
    import keras
    import tensorflow as tf

    from workbench.context import RunContext, RunDir
    from workbench.lm import LanguageModelTask
    from workbench.lm.pipeline import load_language_data

    keras.utils.set_random_seed(recipe.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(recipe=recipe, run_dir=RunDir(run_dir), verbose=0,
                      data=load_language_data(recipe), strategy=tf.distribute.get_strategy(),
                      task=LanguageModelTask("language_model"))


def test_train_evaluate_generate_fill_the_report(tmp_path):
    from workbench.stages import STAGES

    recipe = tiny_recipe(write_corpus(tmp_path), lm__max_eval_windows=64)
    ctx = _context(recipe, tmp_path / "run")
    info = ctx.data.info
    assert info.task == "language_model" and info.input_shape == (16,)
    assert info.vocabulary_size == 256 and info.fingerprint
    for stage in ("train", "evaluate", "generate"):
        ctx = STAGES[stage](ctx)
    train, evaluate = ctx.results["train"], ctx.results["evaluate"]
    assert train["steps"] == 40 and train["eval_steps"] == [20, 40]
    assert train["tokens_per_second"] > 0 and train["flops_per_token"] > 0
    assert train["fingerprint"] == info.fingerprint
    assert len(ctx.learning_rates) == 40 and len(ctx.history["val_loss"]) == 2
    assert evaluate["val_loss"] < math.log(256) - 1.5
    assert evaluate["perplexity"] == pytest.approx(math.exp(evaluate["val_loss"]))
    assert evaluate["windows"] == 64 and evaluate["tokens"] == 64 * 16
    sample = ctx.results["generate"]["samples"][0]
    assert sample["prompt"] == "def main(" and len(sample["continuation"].encode()) >= 12
    assert (ctx.run_dir / "model.keras").is_file()
    assert "def main(" in (ctx.run_dir / "samples.txt").read_text()


def test_training_a_model_of_another_context_is_refused(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.lm.task import LanguageModelTask

    recipe = tiny_recipe(write_corpus(tmp_path), lm__context=12)
    recipe.model = lambda hp, info: tiny_recipe(None).model(hp, _with_context(info, 16))
    ctx = _context(recipe, tmp_path / "run")
    with pytest.raises(WorkbenchError, match="lm.context is 12 but model 'gpt' reads 16"):
        LanguageModelTask().preflight(recipe, ctx.data, ("train",), has_model=False)


def _with_context(info, context):
    import dataclasses

    return dataclasses.replace(info, input_shape=(context,))


TINY_RECIPE_FILE = '''
import sys
sys.path.insert(0, {tests!r})
from lm_tiny import tiny_recipe
RECIPE = tiny_recipe({data!r})
'''


def _recipe_file(tmp_path, data=None):
    data = data or write_corpus(tmp_path)
    path = tmp_path / "tiny_gpt_recipe.py"
    path.write_text(TINY_RECIPE_FILE.format(tests=str(REPO / "tests"), data=str(data)))
    return path


CONTEXT_MISMATCH_RECIPE = '''
import sys
sys.path.insert(0, {tests!r})
from lm_tiny import tiny_recipe
from workbench.lm.model import build_gpt
RECIPE = tiny_recipe({data!r})
RECIPE.model = lambda hp, info: build_gpt(context=8, layers=1, heads=2, width=16)
'''


def test_a_model_reading_another_context_is_refused_before_any_work(tmp_path, capsys):
    from workbench import run

    path = tmp_path / "mismatch.py"
    path.write_text(CONTEXT_MISMATCH_RECIPE.format(tests=str(REPO / "tests"),
                                                   data=str(write_corpus(tmp_path))))
    code = run.main([str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "lm.context is 16 but model 'gpt' reads 8" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,message", [
    (["--set", "lm.tokenizer=bytes"], "unknown lm.tokenizer 'bytes': did you mean 'byte'"),
    (["--set", "generate.sampler=topk"], "unknown generate.sampler 'topk'"),
    (["--set", "lm.context=1"], "lm.context must be at least 2"),
    (["--set", "data=EMPTY"], "is empty: a language model needs text"),
    (["--set", "lm.context=100000"], "too short"),
])
def test_bad_language_model_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    from workbench import run

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    extra = [part.replace("EMPTY", str(empty)) for part in extra]
    code = run.main([str(_recipe_file(tmp_path)), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_generate_for_a_model_without_the_language_model_task_is_refused(tmp_path, capsys):
    from workbench import run

    code = run.main(["digits", "--stages", "generate", "--model", str(tmp_path / "x.keras"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    (tmp_path / "x.keras").write_bytes(b"")
    code = run.main(["digits", "--stages", "generate", "--model", str(tmp_path / "x.keras"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "stage 'generate' does not apply to the tasks multiclass" in err
    assert "generate continues text with a language model" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_trains_then_generates_from_the_saved_model(tmp_path):
    recipe = _recipe_file(tmp_path)
    result = run_cli(recipe, "--out", tmp_path / "run", "--stages", "train,evaluate")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["stages"]["train"]["tokens_per_second"] > 0
    assert report["stages"]["evaluate"]["val_loss"] < 4
    result = run_cli(recipe, "--model", tmp_path / "run" / "model.keras", "--stages", "generate",
                     "--set", "generate.prompt=class ", "--out", tmp_path / "gen")
    assert result.returncode == 0, result.stderr
    samples = json.loads((tmp_path / "gen" / "report.json").read_text())
    assert samples["stages"]["generate"]["samples"][0]["prompt"] == "class "


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(tmp_path):
    result = run_cli(_recipe_file(tmp_path), "--out", tmp_path / "run", "--stages", "train",
                     "--strategy", "mirrored", "--set", "lm.steps=20", "--set",
                     "lm.eval_interval=10", env={"WORKBENCH_CPU_DEVICES": 2})
    assert result.returncode == 0, result.stderr
    train = json.loads((tmp_path / "run" / "report.json").read_text())["stages"]["train"]
    assert train["replicas"] == 2 and train["global_batch_size"] == 16 and train["steps"] == 20
    assert train["final_val_loss"] < math.log(256)


@pytest.mark.slow
def test_kill_9_then_resume_loses_at_most_the_checkpoint_interval(tmp_path):
    recipe = _recipe_file(tmp_path)
    run_dir = tmp_path / "run"
    process = start_cli(recipe, "--out", run_dir, "--stages", "train", "--set", "lm.steps=2000",
                        "--set", "lm.eval_interval=2000", "--set", "lm.checkpoint_steps=20",
                        log=tmp_path / "log.txt")
    checkpoint = run_dir / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    while not checkpoint.is_file() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file()
    result = run_cli(recipe, "--resume", run_dir, "--stages", "train", "--set", "lm.steps=2000",
                     "--set", "lm.eval_interval=2000", "--set", "lm.checkpoint_steps=20")
    assert result.returncode == 0, result.stderr
    assert "resuming at step" in result.stdout
    resumed_at = int(result.stdout.split("resuming at step")[1].split()[0])
    assert resumed_at >= 20 and resumed_at % 20 == 0
