"""Weight regularizers: `keras.regularizers.Regularizer` subclasses that
complement Keras' own L1, L2, L1L2 and OrthogonalRegularizer."""

from workbench.regularizers.group_lasso import GroupLasso
from workbench.regularizers.l2sp import L2SP

__all__ = ["GroupLasso", "L2SP"]
