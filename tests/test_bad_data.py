"""Bad data and bad settings are bad input: exit code 2, one line naming what is wrong, no
traceback, and nothing written — before any work starts."""

import numpy as np
import pytest

import datagen
from conftest import REPO, run_cli, run_cli_cases

TINY = str(REPO / "tests" / "fixtures" / "tiny_recipe.py")


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """Every case's data, written once; `{name: (argv, expected words in the message)}`."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)

    def npz(name, **arrays):
        np.savez(root / f"{name}.npz", **arrays)
        return str(root / f"{name}.npz")

    x = rng.random((60, 4)).astype("float32")
    y = rng.integers(0, 3, 60)
    nan_x = x.copy()
    nan_x[:3, 0] = np.nan
    nan_x[5, 1] = np.inf
    good = npz("good", x=x, y=y)
    (root / "empty").mkdir()
    single = datagen.image_folder(root / "single", classes=("circle",), per_class=5)
    corrupt = datagen.image_folder(root / "corrupt", per_class=5)
    (corrupt / "square" / "broken.png").write_bytes(b"\x89PNG not really")
    empty_class = datagen.image_folder(root / "empty_class", per_class=5)
    for png in (empty_class / "stripes").iterdir():
        png.unlink()
    table = str(datagen.csv_table(root / "table.csv"))
    nan_table = root / "nan.csv"
    nan_table.write_text("a,b,target\n1,2,0\nnan,3,1\n,4,0\n" + "1,1,1\n" * 20)
    syntax = root / "broken_recipe.py"
    syntax.write_text("from workbench.recipe import Recipe\nRECIPE = Recipe(name=\n")
    missing = root / "missing_module_recipe.py"
    missing.write_text("import no_such_module_anywhere\n")
    ragged = root / "ragged.py"
    ragged.write_text(
        "import tensorflow as tf\n"
        "def examples():\n"
        "    def gen():\n"
        "        for i in range(40):\n"
        "            yield [0.5] * (3 if i % 7 else 4), i % 2\n"
        "    return tf.data.Dataset.from_generator(gen, output_signature=(\n"
        "        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)))\n")
    shapes = npz("shapes", x_train=x, y_train=y, x_test=rng.random((10, 5)), y_test=y[:10])
    cases = {
        "nan_inputs": (["--set", f"data={npz('nan', x=nan_x, y=y)}"], ["4 input value", "NaN"]),
        "float_labels": (["--set", f"data={npz('floats', x=x, y=y + 0.5)}",
                          "--set", "task=multiclass"], ["integer class ids"]),
        "labels_out_of_range": (["--set", f"data={good}", "--set", "task=binary"],
                                ["out of range", "2 classes"]),
        "negative_labels": (["--set", f"data={npz('negative', x=x, y=y - 1)}",
                             "--set", "task=multiclass"], [">= 0"]),
        "too_small": (["--set", f"data={npz('small', x=x[:4], y=y[:4])}"], ["too few"]),
        "no_training_left": (["--set", f"data={good}", "--set", "data_options.val_fraction=0.99"],
                             ["leaves no training data"]),
        "fraction_out_of_range": (["--set", "data_options.test_fraction=1.5"], ["(0, 1)"]),
        "empty_folder": (["--set", f"data={root / 'empty'}"], ["no class subfolders"]),
        "single_class_folder": (["--set", f"data={single}"], ["single class folder"]),
        "empty_class_folder": (["--set", f"data={empty_class}"], ["stripes", "holds no images"]),
        "corrupt_image": (["--set", f"data={corrupt}"], ["1 image file", "broken.png"]),
        "csv_without_target": (["--set", f"data={table}", "--set", "data_options.target=cost"],
                               ["no column 'cost'", "price"]),
        "csv_nan": (["--set", f"data={nan_table}", "--set", "data_options.target=target"],
                    ["column 'a'", "2 value"]),
        "inconsistent_shapes": (["--set", f"data={shapes}"], ["shapes differ"]),
        "ragged_stream": (["--set", f"data={ragged}:examples"], ["inconsistent shapes"]),
        "model_cannot_take_shape": (["digits", "--set", f"data={good}"],
                                    ["cannot take", "(4,)"]),
        "unknown_loss": (["--set", "loss=banana"], ["unknown loss 'banana'"]),
        "unknown_metric": (["--set", "metrics=accuracy,accurracy"], ["unknown metric 'accurracy'"]),
        "unknown_monitor": (["--set", "early_stopping.monitor=val_acc"],
                            ["early_stopping.monitor", "val_accuracy"]),
        "unknown_plateau_monitor": (["--set", "plateau.monitor=val_los"],
                                    ["plateau.monitor", "val_loss"]),
        "optimizer_argument_type": (["--set", "optimizer_config.beta_1=banana"],
                                    ["beta_1", "number"]),
        "recipe_syntax_error": ([str(syntax)], ["failed to import", "SyntaxError"]),
        "recipe_missing_module": ([str(missing)], ["failed to import", "no_such_module"]),
        "verify_without_export": (["--stages", "verify"], ["nothing to check"]),
        "prune_without_model": (["--stages", "prune"], ["needs a model"]),
    }
    return root, cases


def _argv(args, out):
    recipe = [] if args and not args[0].startswith("-") else [TINY]
    return [*recipe, *args, "--out", str(out), "--epochs", "1"]


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(bad_inputs, tmp_path):
    root, cases = bad_inputs
    argvs = {name: _argv(args, tmp_path / name) for name, (args, _) in cases.items()}
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    results = dict(zip(argvs, run_cli_cases(list(argvs.values()), cwd=workdir)))
    problems = []
    for name, result in results.items():
        message = result["stderr"].strip()
        words = cases[name][1]
        if (result["code"] != 2 or len(message.splitlines()) != 1 or "Traceback" in message
                or not message.startswith("workbench: error:")
                or not all(w in message for w in words)):
            problems.append(f"{name}: exit {result['code']}, stderr {message[-300:]!r}")
        if (tmp_path / name).exists():
            problems.append(f"{name}: wrote {tmp_path / name}")
    assert not list(workdir.iterdir()), "a failed check wrote into the working directory"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", [
    "nan_inputs", pytest.param("corrupt_image", marks=pytest.mark.slow),
    pytest.param("recipe_syntax_error", marks=pytest.mark.slow)])
def test_a_bad_input_in_its_own_process(bad_inputs, tmp_path, name):
    _, cases = bad_inputs
    args, words = cases[name]
    result = run_cli(*_argv(args, tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(w in result.stderr for w in words), result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "saved_models").exists()
