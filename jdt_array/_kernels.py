"""Where a library's native kernels may replace generic array-API code, for speed.

The loss maths is written once in array-API code; a few hot spots have a faster form
in some libraries: the softmax, the argmax and the (label, prediction) pair counts of
the metrics, the label range check, the hard-label statistics (a per-class sum over the
pixels of each class, which the array API can only write as a one-hot comparison over
all C classes) and its gradient, which may reuse what the statistics found (the
``scratch`` of ``jdt.Prepared``). ``kernels_for(xp)`` gives the object holding them:
the generic array-API versions here, or an adapter from ``jdt_array.backends`` that
must return the same values. JAX keeps the generic code, which XLA fuses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from array_api_compat import is_numpy_namespace, is_torch_namespace


class Generic:
    """The array-API forms (``None`` means: use the generic code path)."""

    @staticmethod
    def softmax(x: Any, axis: int) -> Any:
        return None

    @staticmethod
    def argmax(x: Any, axis: int) -> Any:
        """The first index of the maximum along ``axis`` (the first NaN if any), in an
        integer dtype that holds the number of classes, or None."""
        return None

    @staticmethod
    def class_counts(ids: Any, num_classes: int) -> Any:
        """(B, C) counts of each class id in (B, N) ids in [0, C] (C: no class), in the
        default integer dtype, or None."""
        return None

    @classmethod
    def pair_counts(cls, label_ids: Any, pred_ids: Any, num_classes: int) -> Any:
        """(B, C + 1, C + 1) counts of each (label id, predicted id) pair in two (B, N)
        id arrays in [0, C] (C: no class), in the default integer dtype, or None.

        None also where the (C + 1)^2 bins of an image outnumber its pixels: then
        counting class by class is cheaper."""
        size = (num_classes + 1) ** 2
        if size > max(label_ids.shape[1], 1024):
            return None
        return cls.count_pairs(label_ids, pred_ids, num_classes, size)

    @staticmethod
    def count_pairs(label_ids: Any, pred_ids: Any, num_classes: int, size: int) -> Any:
        """``pair_counts`` with the table's ``size`` per image checked, or None."""
        return None

    @staticmethod
    def value_range(values: Any) -> Any:
        """(min, max) of ``values`` in one pass, or None."""
        return None

    @staticmethod
    def hard_l1_statistics(
        prob: Any, label: Any, keep: Any, *, scratch: dict | None = None
    ) -> Any:
        """(prob_card, label_card, overlap) for channels-first (B, C, ...) probabilities
        and an integer label, or None. A kernel may leave pixel-level values in
        ``scratch`` for ``hard_l1_vjp`` of the same, unchanged arrays."""
        return None

    @staticmethod
    def hard_l1_vjp(
        prob: Any,
        label: Any,
        keep: Any,
        g_prob_card: Any,
        g_diff_card: Any,
        *,
        overwrite: bool = False,
        scratch: dict | None = None,
    ) -> Any:
        """The logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|) for
        channels-first probabilities and an integer label, or None. ``overwrite=True``
        allows the kernel to write the gradient into ``prob``'s memory."""
        return None


class Buffers(threading.local):
    """Scratch arrays of the native kernels on CPU, kept between calls: per thread, the
    last shape of each name and dtype.

    A fresh pixel-sized buffer costs a page fault per 4 KiB page at every training step
    (freed memory of that size goes back to the operating system), which on CPU can
    cost more than the arithmetic on it. Only for temporaries that do not outlive a
    kernel call; GPU caching allocators already reuse memory.
    """

    def get(self, name: str, shape: tuple, dtype: Any, empty: Callable) -> Any:
        arrays = self.__dict__.setdefault("arrays", {})
        kept = arrays.get((name, dtype))
        if kept is None or tuple(kept.shape) != tuple(shape):
            kept = arrays[(name, dtype)] = empty(shape, dtype)
        return kept


def kernels_for(xp: Any) -> Any:
    if is_torch_namespace(xp):
        from .backends.torch_kernels import TorchKernels

        return TorchKernels
    if is_numpy_namespace(xp):
        from .backends.numpy_kernels import NumPyKernels

        return NumPyKernels
    return Generic


def argmax(xp: Any, x: Any, axis: int) -> Any:
    native = kernels_for(xp).argmax(x, axis)
    return xp.argmax(x, axis=axis) if native is None else native
