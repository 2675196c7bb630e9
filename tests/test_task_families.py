"""Task families: the registry, the layering of the package (no stage names a family, the
language-model family never imports the stages, no import circles), what a family does not offer
or read refused before any work, and `import workbench` registering every saveable object."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env, run_cli, run_cli_cases

PACKAGE = REPO / "workbench"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path, top_level_only=False):
    """Absolute names of the workbench modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "workbench"}


def test_the_registry_knows_every_family_and_suggests_on_a_typo():
    from workbench.errors import WorkbenchError
    from workbench.hub import CausalLMTask
    from workbench.lm import LanguageModelTask
    from workbench.supervised import SupervisedTask
    from workbench.tasks import task_class, task_names

    assert task_names() == ["binary", "causal_lm", "language_model", "multiclass", "multilabel",
                            "regression"]
    assert task_class("regression") is SupervisedTask
    assert task_class("language_model") is LanguageModelTask
    assert task_class("causal_lm") is CausalLMTask
    with pytest.raises(WorkbenchError, match="unknown task 'regresion'.*regression"):
        task_class("regresion")


def test_the_language_model_family_never_imports_the_stages():
    offenders = [f"{module} imports {name}" for module, path in _modules()
                 if module.startswith(("workbench.lm", "workbench.hub"))
                 for name in _imports(path)
                 if name.startswith("workbench.stages")]
    assert offenders == []


def test_no_stage_nor_the_run_nor_the_report_names_a_task_family():
    import workbench.hub  # noqa: F401  (each family registers itself when imported)
    import workbench.lm  # noqa: F401
    import workbench.supervised  # noqa: F401
    from workbench.tasks import task_names

    names = task_names()
    checked = [*sorted((PACKAGE / "stages").glob("*.py")), PACKAGE / "run.py",
               PACKAGE / "report.py"]
    offenders = []
    for path in checked:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                offenders += [f"{path.name}: {name!r}" for name in names
                              if f"'{name}'" in repr(node.value) or node.value == name]
    # The data sources ask the family's label reader (a workbench.data.LabelReader) what the
    # labels mean; not even their comments name a task.
    for path in sorted((PACKAGE / "data").glob("*.py")):
        text = path.read_text()
        offenders += [f"data/{path.name}: {name}" for name in names
                      if re.search(rf"\b{name}\b", text)]
    assert offenders == []


def test_what_a_family_does_not_offer_or_read_is_refused_before_any_work(tmp_path):
    cases = {
        "gpt_prune": (["gpt", "--stages", "train,prune"],
                      "stage 'prune' does not apply to task 'language_model'"),
        "gpt_cluster": (["gpt", "--stages", "train,cluster"],
                        "stage 'cluster' does not apply to task 'language_model'"),
        "gpt_lr_find": (["gpt", "--stages", "lr_find,train"],
                        "stage 'lr_find' does not apply to task 'language_model'"),
        "gpt_patience": (["gpt", "--set", "early_stopping.patience=3"],
                         "setting 'early_stopping.patience' does not apply to task "
                         "'language_model'"),
        "gpt_epochs": (["gpt", "--epochs", "3"],
                       "setting 'epochs' does not apply to task 'language_model'"),
        "gpt_int8": (["gpt", "--set", "export.formats=int8"],
                     "unknown language-model export format 'int8'"),
        "digits_generate": (["digits", "--stages", "train,generate"],
                            "stage 'generate' does not apply to the tasks multiclass"),
        "digits_lm_steps": (["digits", "--set", "lm.context=32"],
                            "setting 'lm.context' does not apply to the tasks multiclass"),
        "digits_distill_steps": (["digits", "--set", "distill.steps=10"],
                                 "setting 'distill.steps' does not apply to the tasks "
                                 "multiclass"),
        "old_export_name": (["gpt", "--set", "lm_compress.export_formats=float32"],
                            "setting 'lm_compress.export_formats' is now 'export.formats'"),
        "old_val_fraction": (["gpt", "--set", "lm.val_fraction=0.2"],
                             "setting 'lm.val_fraction' is now 'data_options.val_fraction'"),
    }
    argvs = {name: [*argv, "--out", str(tmp_path / name)] for name, (argv, _) in cases.items()}
    for (name, (_, expected)), result in zip(cases.items(), run_cli_cases(list(argvs.values()))):
        assert result["code"] == 2, (name, result["stderr"][-800:])
        assert expected in result["stderr"], (name, result["stderr"])
        assert result["stderr"].count("\n") == 1, (name, result["stderr"])
        assert not (tmp_path / name).exists(), name


def test_a_refusal_in_its_own_process(tmp_path):
    result = run_cli("gpt", "--stages", "train,prune", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'quantize'" in result.stderr
    assert not (tmp_path / "out").exists()


SAVE = """
import sys
import keras
import numpy as np
import workbench as wb
from workbench.lm.model import build_gpt

keras.utils.set_random_seed(0)
gpt = build_gpt(vocabulary_size=256, context=8, layers=1, heads=2, width=16)
gpt.save(sys.argv[1] + "/gpt.keras")
tokens = np.arange(16, dtype="int32").reshape(2, 8)
np.save(sys.argv[1] + "/gpt_out.npy", keras.ops.convert_to_numpy(gpt(tokens)))
dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
    3, kernel_regularizer=wb.regularizers.GroupLasso(1e-3))])
dense.compile(optimizer=wb.optimizers.Lookahead(keras.optimizers.Adam()), loss="mse")
dense.fit(np.ones((8, 4)), np.ones((8, 3)), verbose=0)
dense.save(sys.argv[1] + "/group_lasso.keras")
np.save(sys.argv[1] + "/dense_out.npy", keras.ops.convert_to_numpy(dense(np.ones((2, 4)))))
"""

LOAD = """
import sys
import keras, workbench
tensorflow_at_import = "tensorflow" in sys.modules
import numpy as np

gpt = keras.models.load_model(sys.argv[1] + "/gpt.keras")
tokens = np.arange(16, dtype="int32").reshape(2, 8)
np.testing.assert_allclose(keras.ops.convert_to_numpy(gpt(tokens)),
                           np.load(sys.argv[1] + "/gpt_out.npy"), atol=1e-5)
dense = keras.models.load_model(sys.argv[1] + "/group_lasso.keras")
np.testing.assert_allclose(keras.ops.convert_to_numpy(dense(np.ones((2, 4)))),
                           np.load(sys.argv[1] + "/dense_out.npy"), atol=1e-6)
print(json.dumps({"gpt": type(gpt).__name__,
                  "regularizer": type(dense.layers[0].kernel_regularizer).__name__,
                  "optimizer": type(dense.optimizer).__name__,
                  "tensorflow": tensorflow_at_import}))
""".replace("import sys\n", "import json, sys\n", 1)


def _python(code, *args, **env):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                          env=cli_env(**env), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    result = _python(SAVE, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_a_fresh_process_with_only_keras_and_workbench_loads_what_the_workbench_saved(saved):
    result = _python(LOAD, saved)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"gpt": "GPT", "regularizer": "GroupLasso", "optimizer": "Lookahead",
                      "tensorflow": True}


def test_the_same_on_jax_and_import_workbench_imports_no_tensorflow(saved):
    # (Deserializing the GPT then imports KerasHub, which imports TensorFlow where installed.)
    result = _python(LOAD, saved, KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"gpt": "GPT", "regularizer": "GroupLasso", "optimizer": "Lookahead",
                      "tensorflow": False}


def test_import_workbench_before_keras_registers_once_keras_is_imported():
    code = ("import sys, workbench\nassert 'keras' not in sys.modules\nimport keras\n"
            "print(keras.saving.get_registered_object('workbench>GroupLasso').__name__, "
            "keras.saving.get_registered_object('workbench>GPT').__name__, "
            "'tensorflow' in sys.modules)")
    result = _python(code, KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["GroupLasso", "GPT", "False"]
