"""Pixel-level pieces shared by the losses and the metrics: which pixels count, the
one-hot class mask of a hard label, and means over masked pixels."""

from __future__ import annotations

import math
from typing import Any

from ._array import device, zero_d


def is_class_id(xp: Any, ids: Any, num_classes: int) -> Any:
    """``0 <= ids < num_classes`` (the lower bound only for signed ids)."""
    ok = ids < num_classes
    return ok & (ids >= 0) if xp.iinfo(ids.dtype).min < 0 else ok


def not_ignored(xp: Any, label: Any, ignore_index: int | None) -> Any:
    """``label != ignore_index``, or None when no pixel can be ``ignore_index``: none
    given, or a value the label's dtype cannot hold (255 for int8 labels, say), which
    matches no pixel (and must not overflow in the comparison)."""
    if ignore_index is None or label.dtype == xp.bool:
        return None
    info = xp.iinfo(label.dtype)
    if not info.min <= ignore_index <= info.max:
        return None
    return label != ignore_index


def kept_pixels(xp: Any, label: Any, ignore_index: int | None, keep_mask: Any) -> Any:
    """The pixels a hard-label loss uses (``keep_mask`` and not ``ignore_index``), or
    None when all are."""
    kept = not_ignored(xp, label, ignore_index)
    if kept is None:
        return keep_mask
    return kept if keep_mask is None else keep_mask & kept


def class_mask(xp: Any, label: Any, keep: Any, class_axis: int, num_classes: int) -> Any:
    """Boolean one-hot of ``label`` along ``class_axis``, False where not kept."""
    shape = [1] * (label.ndim + 1)
    shape[class_axis] = num_classes
    classes = xp.arange(num_classes, dtype=label.dtype, device=device(label))
    is_class = xp.expand_dims(label, axis=class_axis) == xp.reshape(classes, tuple(shape))
    return is_class if keep is None else is_class & xp.expand_dims(keep, axis=class_axis)


def masked_mean(xp: Any, values: Any, mask: Any, axis: Any = None) -> Any:
    """Mean of ``values`` where ``mask`` (all if None) over ``axis``; 0 where nothing is.

    The double where keeps 0 / 0 out of both the value and the gradient.
    """
    if mask is None:
        axes = range(values.ndim) if axis is None else (axis,) if isinstance(axis, int) \
            else axis  # fmt: skip
        count = math.prod([values.shape[a] for a in axes])
        # An empty mean is 0, the mean over nothing (and no 0 / 0).
        return zero_d(xp, xp.sum(values, axis=axis) / count if count else
                      xp.sum(values, axis=axis) * 0.0)  # fmt: skip
    count = xp.sum(xp.astype(mask, values.dtype), axis=axis)
    total = xp.sum(xp.where(mask, values, 0.0), axis=axis)
    has = count > 0
    return zero_d(xp, xp.where(has, total / xp.where(has, count, 1.0), 0.0))


def spatial_axes(ndim: int, class_axis: int) -> tuple[int, ...]:
    """The axes of a (B, ..., C, ...) array other than the batch and the classes."""
    return tuple(a for a in range(1, ndim) if a != class_axis)


def along_classes(xp: Any, values: Any, ndim: int, class_axis: int) -> Any:
    """(B, C) values reshaped to broadcast against (B, ..., C at class_axis, ...)."""
    shape = [1] * ndim
    shape[0], shape[class_axis] = values.shape
    return xp.reshape(values, tuple(shape))


def power(x: Any, p: float) -> Any:
    """``x ** p``, and ``x`` itself for p = 1 (no pass over the pixels)."""
    return x if p == 1 else x**p


def soft_cardinalities_grad(
    xp: Any, x: Any, y: Any, keep: Any, class_axis: int, norm: float,
    g_prob_card: Any, g_diff_card: Any,
) -> Any:  # fmt: skip
    """d/dx of sum(g_prob_card |x|^p) + sum(g_diff_card |x - y|^p) with (B, C)
    cotangents, for probabilities x >= 0 and a soft label y; 0 where ``keep`` (per
    pixel, or per entry with x's shape) is False."""
    p = norm
    g_p = along_classes(xp, g_prob_card, x.ndim, class_axis)
    g_d = along_classes(xp, g_diff_card, x.ndim, class_axis)
    diff = x - y
    # d x^p / dx and d |x - y|^p / dx; for p = 1 without a power (no 0^0).
    d_pow = 1.0 if p == 1 else p * x ** (p - 1)
    d_diff = xp.sign(diff) if p == 1 else p * xp.abs(diff) ** (p - 1) * xp.sign(diff)
    g = g_p * d_pow + g_d * d_diff
    if keep is not None:
        kept = keep if keep.ndim == x.ndim else xp.expand_dims(keep, axis=class_axis)
        g = xp.where(kept, g, 0.0)
    return g
