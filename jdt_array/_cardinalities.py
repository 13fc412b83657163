"""Per-(image, class) statistics of a prediction against a label, and their gradient.

Everything the JDT losses need is in four (B, C) arrays: the cardinalities |x|, |y| and
|x - y| (the p-norm to the power p over the spatial axes) of the probabilities x and the
label y, and the largest label value of each image and class (for "present" classes).
They are sums and maxima over pixels, so statistics of several batches or devices
combine by adding (and taking the maximum), which is what a distributed loss needs.

The gradient runs the other way: from d loss / d |x| and d loss / d |x - y| (|y| does
not depend on the prediction) to every probability, then through the softmax to the
logits. Hard labels go through the kernels (``jdt_array._kernels``), which may keep a
residual from the statistics for the gradient.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import _kernels
from ._activation import kept_along
from ._array import Array
from ._inputs import Prepared
from ._pixels import along_classes, power, spatial_axes


class Statistics(NamedTuple):
    """Cardinalities per image and class, each of shape (B, C)."""

    prob_card: Array  # sum over kept pixels of |x|^p
    label_card: Array  # sum over kept pixels of |y|^p
    diff_card: Array  # sum over kept pixels of |x - y|^p
    label_max: Array  # max over kept pixels of y (0 where no pixel is kept)


def statistics(inputs: Prepared) -> tuple[Statistics, _kernels.Residual]:
    """The (B, C) statistics of ``inputs`` with their probabilities computed (see
    :func:`jdt_array._inputs.with_probabilities`), and the residual a kernel kept for
    :func:`statistics_vjp` (valid while ``inputs.prob`` is unchanged; ``None`` when
    nothing was kept)."""
    xp, prob, keep, axis, p = (inputs.xp, inputs.prob, inputs.keep, inputs.class_axis,
                               inputs.norm)  # fmt: skip
    if inputs.class_ids:
        (prob_card, label_card, diff_card), residual = inputs.kernels.hard_statistics(
            prob, inputs.label, keep, axis, p
        )
        label_max = xp.astype(label_card > 0, prob.dtype)
        return Statistics(prob_card, label_card, diff_card, label_max), residual
    axes = spatial_axes(prob.ndim, axis)
    x, y = prob, _soft_label(inputs)
    if keep is not None:
        kept = kept_along(xp, keep, x.ndim, axis)
        x, y = xp.where(kept, x, 0.0), xp.where(kept, y, 0.0)
    stats = Statistics(
        prob_card=xp.sum(power(x, p), axis=axes),
        label_card=xp.sum(power(y, p), axis=axes),
        diff_card=xp.sum(power(xp.abs(x - y), p), axis=axes),
        label_max=_largest(xp, y, axes),
    )
    return stats, None


def statistics_vjp(
    inputs: Prepared,
    g_prob_card: Array,
    g_diff_card: Array,
    *,
    residual: _kernels.Residual = None,
    overwrite: bool = False,
) -> Array:
    """The gradient with respect to the logits of ``sum(g_prob_card * |x|) +
    sum(g_diff_card * |x - y|)``, both (B, C), in the accumulation dtype.

    ``residual`` is what :func:`statistics` of the same inputs returned;
    ``overwrite=True`` lets a kernel write the gradient into ``inputs.prob`` (for a
    caller that owns the probabilities and needs them no more).
    """
    xp, x, axis, p = inputs.xp, inputs.prob, inputs.class_axis, inputs.norm
    kernels, activation = inputs.kernels, inputs.activation
    if inputs.class_ids:
        return kernels.hard_statistics_vjp(
            x, inputs.label, inputs.keep, axis, p, g_prob_card, g_diff_card,
            residual=residual, overwrite=overwrite,
        )  # fmt: skip
    y = _soft_label(inputs)
    return activation.soft_statistics_vjp(
        xp, kernels, x, y, inputs.keep, axis, p, g_prob_card, g_diff_card
    )


def label_vjp(inputs: Prepared, g_label_card: Array, g_diff_card: Array) -> Array:
    """The gradient with respect to a soft label of ``sum(g_label_card * |y|) +
    sum(g_diff_card * |x - y|)``, in the accumulation dtype (0 at dropped pixels).

    For training the label itself (a learned teacher, say); ``|y|^p`` has derivative
    ``p y^(p-1)`` (labels are >= 0), ``|x - y|^p`` has ``-p sign(x - y) |x - y|^(p-1)``.
    """
    xp, x, axis, p = inputs.xp, inputs.prob, inputs.class_axis, inputs.norm
    y = _soft_label(inputs)
    g_y = along_classes(xp, g_label_card, x.ndim, axis)
    g_d = along_classes(xp, g_diff_card, x.ndim, axis)
    diff = x - y
    d_card = 1.0 if p == 1 else p * y ** (p - 1)
    d_diff = xp.sign(diff) if p == 1 else p * xp.abs(diff) ** (p - 1) * xp.sign(diff)
    g = g_y * d_card - g_d * d_diff
    if inputs.keep is not None:
        g = xp.where(kept_along(xp, inputs.keep, x.ndim, axis), g, 0.0)
    return g


def _largest(xp: Any, y: Array, axes: tuple[int, ...]) -> Array:
    """The maximum of ``y`` over ``axes``; 0 over no pixels (images of size 0)."""
    if not axes:
        return y
    if math.prod([y.shape[a] for a in axes]) == 0:
        return xp.sum(y, axis=axes)  # zeros of the reduced shape
    return xp.max(y, axis=axes)


def _soft_label(inputs: Prepared) -> Array:
    label, dtype = inputs.label, inputs.prob.dtype
    return label if label.dtype == dtype else inputs.xp.astype(label, dtype)
