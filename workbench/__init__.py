"""workbench: a Keras 3 / TensorFlow training workbench.

`import workbench` gives the recipe mechanism; the Keras objects live in subpackages that are
ordinary Keras classes, reachable the way Keras' own are (`wb.optimizers.Shampoo` like
`keras.optimizers.Adam`): `workbench.optimizers`, `workbench.schedules`,
`workbench.regularizers`, `workbench.callbacks`, and the TensorFlow-only
`workbench.compression`. Run a recipe end to end with `python -m workbench.run RECIPE`.

The subpackages load on first attribute access, so `import workbench` stays cheap and imports
no TensorFlow under `KERAS_BACKEND=jax` or `torch`. Their classes register with Keras when the
subpackage loads, so a new process touches the ones a `.keras` file holds before loading it
(`wb.optimizers; keras.models.load_model(path)`), as with any custom Keras object.
"""

import importlib

from workbench.errors import WorkbenchError
from workbench.recipe import Recipe

__version__ = "0.1.0"

_SUBPACKAGES = ("callbacks", "compression", "optimizers", "regularizers", "schedules")

__all__ = ["Recipe", "WorkbenchError", "__version__", *_SUBPACKAGES]


def __getattr__(name):
    # PEP 562: called only for names not found the usual way, i.e. a subpackage not yet
    # imported; importing it binds it here, so this runs once per subpackage.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"workbench.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))
