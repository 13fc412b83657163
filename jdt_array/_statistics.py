"""Per-(image, class) statistics of a prediction against a label.

Everything the JDT losses need is in four (B, C) arrays: the cardinalities |x|, |y| and
|x - y| (the p-norm to the power p over the spatial axes) of the probabilities x and the
label y, and the largest label value of each image and class (for "present" classes).
They are sums and maxima over pixels, so statistics of several batches or devices
combine by adding (and taking the maximum), which is what a distributed loss needs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._kernels import kernels_for
from ._namespace import device, zero_d


class Statistics(NamedTuple):
    """Cardinalities per image and class, each of shape (B, C)."""

    prob_card: Any  # sum over kept pixels of |x|^p
    label_card: Any  # sum over kept pixels of |y|^p
    diff_card: Any  # sum over kept pixels of |x - y|^p
    label_max: Any  # max over kept pixels of y (0 where no pixel is kept)

    def tp_fp_fn(self) -> tuple[Any, Any, Any]:
        """Soft true positives, false positives and false negatives.

        tp = (|x| + |y| - |x - y|) / 2, fp = |x| - tp, fn = |y| - tp (Wang et al.,
        NeurIPS 2023, eq. 8): the set operations of the Jaccard index written with
        norms, which is what keeps the losses correct for soft labels.
        """
        tp = (self.prob_card + self.label_card - self.diff_card) / 2
        return tp, self.prob_card - tp, self.label_card - tp


def softmax(xp: Any, logits: Any, axis: int, dtype: Any) -> Any:
    """Softmax over ``axis`` computed in ``dtype``; the max shift keeps exp finite."""
    x = logits if logits.dtype == dtype else xp.astype(logits, dtype)
    native = kernels_for(xp).softmax(x, axis)
    if native is not None:
        return native
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _power(xp: Any, x: Any, norm: float) -> Any:
    return x if norm == 1 else x**norm


def hard_statistics(
    xp: Any,
    prob: Any,
    label: Any,
    keep: Any,
    class_axis: int,
    norm: float,
    *,
    scratch: dict | None = None,
) -> Statistics:
    """Statistics for an integer label, without building a float one-hot label.

    With y one-hot, |y|^p is 1 on the pixels labelled c, so |y| is a pixel count and
    |x - y|^p is (1 - x)^p there and x^p elsewhere. For p = 1 that gives
    |x - y| = |x| + |y| - 2 * sum over the pixels labelled c of x.
    """
    if norm == 1 and class_axis == 1:
        native = kernels_for(xp).hard_l1_statistics(prob, label, keep, scratch=scratch)
        if native is not None:
            prob_card, label_card, overlap = native
            diff_card = prob_card + label_card - 2 * overlap
            return Statistics(
                prob_card, label_card, diff_card, xp.astype(label_card > 0, prob.dtype)
            )
    axes = _spatial_axes(prob.ndim, class_axis)
    is_class = class_mask(xp, label, keep, class_axis, prob.shape[class_axis])
    kept = None if keep is None else xp.expand_dims(keep, axis=class_axis)

    dtype = prob.dtype
    # A float sum: count_nonzero is several times slower in PyTorch.
    label_card = xp.sum(xp.astype(is_class, dtype), axis=axes)
    x_p = _power(xp, prob, norm)
    x_p = x_p if kept is None else xp.where(kept, x_p, 0.0)
    prob_card = xp.sum(x_p, axis=axes)
    if norm == 1:
        overlap = xp.sum(xp.where(is_class, prob, 0.0), axis=axes)
        diff_card = prob_card + label_card - 2 * overlap
    else:
        diff_card = xp.sum(xp.where(is_class, (1 - prob) ** norm, x_p), axis=axes)
    label_max = xp.astype(label_card > 0, dtype)
    return Statistics(prob_card, label_card, diff_card, label_max)


def soft_statistics(
    xp: Any, prob: Any, label: Any, keep: Any, class_axis: int, norm: float
) -> Statistics:
    """Statistics for a label of per-class probabilities shaped like ``prob``."""
    axes = _spatial_axes(prob.ndim, class_axis)
    y = label if label.dtype == prob.dtype else xp.astype(label, prob.dtype)
    x = prob
    if keep is not None:
        kept = xp.expand_dims(keep, axis=class_axis)
        x = xp.where(kept, x, 0.0)
        y = xp.where(kept, y, 0.0)
    return Statistics(
        prob_card=xp.sum(_power(xp, x, norm), axis=axes),
        label_card=xp.sum(_power(xp, y, norm), axis=axes),
        diff_card=xp.sum(_power(xp, xp.abs(x - y), norm), axis=axes),
        label_max=xp.max(y, axis=axes) if axes else y,
    )


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
        return zero_d(xp, xp.mean(values, axis=axis))
    count = xp.sum(xp.astype(mask, values.dtype), axis=axis)
    total = xp.sum(xp.where(mask, values, 0.0), axis=axis)
    has = count > 0
    return zero_d(xp, xp.where(has, total / xp.where(has, count, 1.0), 0.0))


def _spatial_axes(ndim: int, class_axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(1, ndim) if a != class_axis)
