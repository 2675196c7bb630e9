"""workbench: a Keras 3 / TensorFlow training workbench.

`import workbench` gives the recipe mechanism and registers every Keras object the workbench can
save with Keras (its optimizers, schedules, regularizers, callbacks, and the GPT and its blocks),
the way `import keras_hub` registers KerasHub's: a new process that did `import keras, workbench`
loads any `.keras` file a run wrote with `keras.models.load_model(path)`. The objects are
ordinary Keras classes, reachable the way Keras' own are (`wb.optimizers.Shampoo` like
`keras.optimizers.Adam`): `workbench.optimizers`, `workbench.schedules`, `workbench.regularizers`,
`workbench.callbacks`, and the TensorFlow-only `workbench.compression` (loaded on first use).
Run a recipe end to end with `python -m workbench.run RECIPE`.

Registration imports Keras' backend, not TensorFlow: under `KERAS_BACKEND=jax` or `torch`,
`import workbench` imports no TensorFlow. When Keras is not imported yet, registration waits for
its import, so `import workbench` alone (and `python -m workbench.run --list`) stays cheap.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from workbench.errors import WorkbenchError
from workbench.recipe import Recipe

__version__ = "0.1.0"

_SUBPACKAGES = ("callbacks", "compression", "optimizers", "regularizers", "schedules")
# Importing these registers their classes with Keras (`register_keras_serializable`).
_REGISTERING_MODULES = ("workbench.optimizers", "workbench.schedules", "workbench.regularizers",
                        "workbench.callbacks", "workbench.lm.model")

__all__ = ["Recipe", "WorkbenchError", "__version__", *_SUBPACKAGES]


def register_keras_objects():
    """Register every saveable workbench class with Keras (idempotent)."""
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs `register_keras_objects` right after `keras` finishes importing."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            try:
                register_keras_objects()
            except Exception as error:  # never break the user's `import keras`
                warnings.warn(f"workbench could not register its Keras objects: {error}")

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())


def __getattr__(name):
    # PEP 562: called only for names not found the usual way, i.e. a subpackage not yet
    # imported; importing it binds it here, so this runs once per subpackage.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"workbench.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))
