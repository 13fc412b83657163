"""jdt-array: Jaccard, Dice and Tversky losses for soft labels, on any array library.

The loss math is written once against the Python array API standard and runs on
NumPy, PyTorch, JAX, CuPy and array-api-strict arrays, on CPU or GPU.
"""

from . import metrics, soft_labels
from .compound import ce_jdt_loss, generalized_dice_loss
from .cross_entropy import cross_entropy, kl_div
from .grad import value_and_grad
from .jdt import jdt_loss
from .lovasz import lovasz_hinge_loss, lovasz_softmax_loss
from .named_losses import dice_loss, jaccard_loss, tversky_loss

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ce_jdt_loss",
    "cross_entropy",
    "dice_loss",
    "generalized_dice_loss",
    "jaccard_loss",
    "jdt_loss",
    "kl_div",
    "lovasz_hinge_loss",
    "lovasz_softmax_loss",
    "metrics",
    "soft_labels",
    "tversky_loss",
    "value_and_grad",
]
