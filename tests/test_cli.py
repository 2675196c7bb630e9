"""The command line, end to end, through subprocesses (as a user runs it)."""

import hashlib
import json
import textwrap

import pytest


def _digest(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """One `--fast` run of the default recipe, shared by the tests that read its outputs."""
    from conftest import run_cli

    out = tmp_path_factory.mktemp("runs") / "digits-fast"
    result = run_cli("digits", "--fast", "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_fast_run_writes_every_promised_output(fast_run):
    out, result = fast_run
    for name in ("model.keras", "model_float32.tflite", "model_int8.tflite", "report.json",
                 "report.md", "training_curves.png", "learning_rate.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert not list(out.glob(".partial-*")), "temporary files were left behind"
    for header in ("[1/4] train", "[2/4] evaluate", "[3/4] export", "[4/4] verify", "summary"):
        assert header in result.stdout
    assert "tflite int8" in result.stdout and "test accuracy" in result.stdout
    assert result.stderr.strip() == "", "TensorFlow's native logs leaked into the CLI output"


def test_report_json_holds_config_versions_metrics_and_timings(fast_run):
    out, _ = fast_run
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["recipe"] == "digits"
    assert report["config"]["epochs"] == 2 and report["config"]["seed"] == 0
    assert report["versions"]["keras"].startswith("3.")
    assert set(report["stages"]) == {"train", "evaluate", "export", "verify"}
    assert all(stage["seconds"] > 0 for stage in report["stages"].values())
    assert report["stages"]["train"]["epochs_run"] == 2
    verify = report["stages"]["verify"]
    for fmt in ("float32", "int8"):
        assert 0.0 <= verify[fmt]["accuracy"] <= 1.0
        assert verify[fmt]["examples"] == 100
        assert verify[fmt]["gzip_bytes"] < verify[fmt]["size_bytes"]
        assert verify[fmt]["median_latency_ms"] > 0
    assert verify["int8"]["size_bytes"] < verify["float32"]["size_bytes"]
    steps = report["stages"]["train"]["steps"]
    assert len(report["history"]["loss"]) == 2 and steps > 0
    md = (out / "report.md").read_text()
    assert "| tflite int8 |" in md and "![training_curves.png]" in md


def test_list_shows_the_bundled_recipes(cli):
    result = cli("--list")
    assert result.returncode == 0
    assert result.stdout.startswith("digits") or "\ndigits " in result.stdout


BAD_INPUTS = [
    (["no_such_recipe"], "unknown recipe 'no_such_recipe'"),
    (["digit"], "did you mean 'digits'"),
    (["digits", "--set", "epoch=3"], "unknown setting 'epoch': did you mean 'epochs'"),
    (["digits", "--set", "epochs=many"], "epochs expects a whole number"),
    (["digits", "--set", "epochs=0"], "epochs must be at least 1"),
    (["digits", "--set", "learning_rate"], "--set expects key=value"),
    (["digits", "--set", "optimizer=adamm"], "unknown optimizer 'adamm'"),
    (["digits", "--stages", "train,exprt"], "unknown stage 'exprt'"),
    (["digits", "--model", "missing.keras", "--stages", "evaluate"], "does not exist"),
    (["digits", "--bogus"], "unrecognized arguments"),
    ([], "name a recipe"),
]


# Checked in one process below (TensorFlow starts once); each also runs in its own interpreter
# under `-m slow`, and this one in the default run as well.
REAL_PROCESS_CASE = "digits --set epochs=0"
BAD_INPUT_IDS = [" ".join(a) or "none" for a, _ in BAD_INPUTS]


def _refusal_problems(code, stdout, stderr, message, cwd):
    """What is wrong with how a bad input was refused (empty when refused as promised)."""
    lines = stderr.strip().splitlines()
    problems = []
    if code != 2:
        problems.append(f"exit {code}: {(stdout + stderr)[-300:]!r}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines: {stderr[-300:]!r}")
    elif not (lines[0].startswith("workbench: error: ") and message in lines[0]):
        problems.append(f"stderr {lines[0]!r} lacks {message!r}")
    if "Traceback" in stderr:
        problems.append("a traceback on stderr")
    if (cwd / "saved_models").exists():
        problems.append("bad input must write nothing, but saved_models/ was written")
    return problems


def test_every_bad_input_is_one_clear_line_and_exit_code_2(tmp_path):
    from conftest import run_cli_cases

    norecipe = tmp_path / "norecipe.py"
    norecipe.write_text("VALUE = 1\n")
    cases = {name: (args, message) for name, (args, message) in zip(BAD_INPUT_IDS, BAD_INPUTS)}
    cases["recipe file without RECIPE"] = ([str(norecipe)], "defines no RECIPE")
    cwds = {name: tmp_path / f"case{index}" for index, name in enumerate(cases)}
    for cwd in cwds.values():
        cwd.mkdir()
    results = run_cli_cases([(args, cwds[name]) for name, (args, _) in cases.items()])
    problems = [f"{name}: {problem}"
                for (name, (_, message)), result in zip(cases.items(), results)
                for problem in _refusal_problems(result["code"], result["stdout"],
                                                 result["stderr"], message, cwds[name])]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("args,message", [
    pytest.param(args, message, id=name,
                 marks=() if name == REAL_PROCESS_CASE else pytest.mark.slow)
    for name, (args, message) in zip(BAD_INPUT_IDS, BAD_INPUTS)])
def test_bad_input_is_one_clear_line_and_exit_code_2(cli, tmp_path, args, message):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("workbench: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "saved_models").exists(), "bad input must write nothing"


@pytest.mark.slow
def test_recipe_file_without_recipe_is_refused(cli, tmp_path):
    path = tmp_path / "norecipe.py"
    path.write_text("VALUE = 1\n")
    result = cli(str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "defines no RECIPE" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_earlier_outputs_are_never_touched(cli, fast_run, tmp_path):
    out, _ = fast_run
    before = _digest(out)
    refused = cli("digits", "--fast", "--out", out)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    failed = cli("digits", "--fast", "--out", out, "--set", "optimizer=nope")
    assert failed.returncode == 2
    assert _digest(out) == before


def test_recipe_file_whose_builder_takes_data_info(cli, tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(textwrap.dedent("""
        import keras
        from workbench import Recipe

        def build(hp, info):
            return keras.Sequential([keras.Input(info.input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(info.num_classes, activation="softmax")])

        RECIPE = Recipe(name="tiny", model=build, epochs=5, learning_rate=0.02,
                        stages=("train", "evaluate"))
    """))
    out = tmp_path / "run"
    result = cli(str(path), "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert list(report["stages"]) == ["train", "evaluate"]
    assert report["stages"]["evaluate"]["test_accuracy"] > 0.5


@pytest.mark.slow
def test_a_saved_model_with_workbench_objects_reloads_in_a_new_process(cli, tmp_path):
    first = tmp_path / "first"
    trained = cli("digits", "--stages", "train", "--epochs", "1", "--quiet",
                  "--set", "optimizer=lookahead", "--set", "optimizer_config.inner=shampoo",
                  "--set", "regularizer=group_lasso", "--set", "regularizer_config.strength=1e-5",
                  "--out", first)
    assert trained.returncode == 0, trained.stderr
    second = tmp_path / "second"
    reused = cli("digits", "--model", first / "model.keras", "--stages", "evaluate,export,verify",
                 "--set", "export.formats=float32", "--quiet", "--out", second)
    assert reused.returncode == 0, reused.stderr
    report = json.loads((second / "report.json").read_text())
    assert report["stages"]["verify"]["float32"]["accuracy"] == pytest.approx(
        report["stages"]["evaluate"]["test_accuracy"], abs=1e-6)
