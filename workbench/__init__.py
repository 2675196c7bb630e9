"""workbench: a Keras 3 / TensorFlow training workbench.

`import workbench` gives the recipe mechanism; the Keras objects live in subpackages that are
ordinary Keras classes: `workbench.optimizers`, `workbench.schedules`, `workbench.regularizers`,
`workbench.callbacks`. Run a recipe end to end with `python -m workbench.run RECIPE`.
"""

from workbench.errors import WorkbenchError
from workbench.recipe import Recipe

__version__ = "0.1.0"

__all__ = ["Recipe", "WorkbenchError", "__version__"]
