"""PyTorch adapter: autograd for ``value_and_grad``, a lean backward, ``nn.Module``s,
and statistics synchronised over ``torch.distributed`` for data-parallel training.

``functional`` holds the functions, ``modules`` the ``torch.nn.Module`` forms and
``metrics`` the evaluation over ``torch.distributed``; this package re-exports them.
"""

try:
    import torch  # noqa: F401
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jdt_array.backends.torch needs PyTorch: pip install 'jdt-array[torch]' (for "
        "the CPU build see the README's 'CPU-only PyTorch')",
        name=err.name,
    ) from err

# array-api-compat's PyTorch namespace, imported now so that torch.compile finds it
# without tracing array-api-compat's caches (see jdt_array._array).
import array_api_compat.torch  # noqa: F401

from .functional import BACKWARDS, jdt_loss, replica_sum, value_and_grad
from .metrics import gather_statistics, sync_metrics
from .modules import (
    CEJDTLoss,
    CrossEntropyLoss,
    DiceLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    JDTLoss,
    KLDivLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
)

__all__ = [
    "BACKWARDS",
    "CEJDTLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "GeneralizedDiceLoss",
    "JDTLoss",
    "JaccardLoss",
    "KLDivLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
    "gather_statistics",
    "jdt_loss",
    "replica_sum",
    "sync_metrics",
    "value_and_grad",
]
