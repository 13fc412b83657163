"""jdt-array: Jaccard, Dice and Tversky losses for soft labels, on any array library.

The loss math is written once against the Python array API standard and runs on
NumPy, PyTorch, JAX, CuPy and array-api-strict arrays, on CPU or GPU.
"""

from . import metrics
from .grad import value_and_grad
from .jdt import dice_loss, jaccard_loss, jdt_loss, tversky_loss

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "dice_loss",
    "jaccard_loss",
    "jdt_loss",
    "metrics",
    "tversky_loss",
    "value_and_grad",
]
