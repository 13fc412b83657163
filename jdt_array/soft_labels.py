r"""Soft labels for the three settings of the JDT papers.

* :func:`label_smoothing`: :math:`(1 - \epsilon)\,\text{one-hot} + \epsilon / C`,
  everywhere or only near class boundaries (Wang et al., NeurIPS 2023; MICCAI 2023);
* :func:`average_annotators`: the mean of several annotators' one-hot masks (the
  multi-rater setting of Wang et al., MICCAI 2023);
* :func:`teacher_probabilities`: a teacher's softmax at temperature T, for knowledge
  distillation (Hinton et al., 2014; Wang et al., NeurIPS 2023).

Each returns a floating (B, C, *spatial) array (classes at ``class_axis``) that
:func:`jdt_array.jdt_loss` and :func:`jdt_array.cross_entropy` accept as a soft label.

Pixels without a label (``ignore_index``, or ignored by every annotator) become all-zero
class vectors. A zero vector is a valid soft label, but the prediction is still
compared with it there; to drop those pixels, pass ``keep_mask`` to the loss (for
:func:`label_smoothing`, ``keep_mask = label != ignore_index``; for
:func:`average_annotators`, the sum of the soft label over the classes being > 0).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from . import _checks as checks
from ._array import compute_dtype, device, namespace_of
from ._kernels import softmax
from ._pixels import class_mask, not_ignored

__all__ = ["average_annotators", "label_smoothing", "teacher_probabilities"]

Array = Any


def label_smoothing(
    label: Array,
    num_classes: int,
    *,
    epsilon: float = 0.1,
    boundary_window: int | None = None,
    ignore_index: int | None = None,
    class_axis: int = 1,
    dtype: Any = None,
) -> Array:
    r"""A hard label smoothed to :math:`(1 - \epsilon)\,\text{one-hot} + \epsilon / C`.

    With ``boundary_window = k`` only pixels near a class boundary are smoothed: those
    whose k x k (x k ...) window, centred on the pixel and cut at the image border,
    holds a labelled pixel of another class. Ignored pixels neither are smoothed nor
    make their neighbours boundary pixels. Other pixels keep their one-hot label.

    Args:
        label: integer (B, *spatial) class ids in [0, num_classes), or ``ignore_index``.
        num_classes: C >= 1.
        epsilon: the probability mass spread uniformly over the C classes, in [0, 1].
        boundary_window: None to smooth every pixel, or an odd window size k >= 1
            (k = 1 smooths nothing); any number of spatial axes.
        ignore_index: label value of unlabelled pixels; they get an all-zero vector
            (pass ``keep_mask = label != ignore_index`` to the loss to drop them).
        class_axis: where the class axis goes in the result (1 or -1, say).
        dtype: a floating dtype of the label's namespace; float32 when None.

    Returns:
        The soft label, shape (B, C, *spatial) for ``class_axis=1``.

    Raises:
        TypeError: a non-integer label, a non-int ``num_classes`` or window.
        ValueError: ``epsilon`` outside [0, 1], an even or non-positive window, a
            ``class_axis`` out of range, class ids outside [0, C) that are not
            ``ignore_index`` (not checked inside ``jax.jit``; there they get zero
            vectors).
    """
    xp = namespace_of(label=label)
    epsilon = checks.check_real("epsilon", epsilon, low=0.0)
    if epsilon > 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    num_classes = _check_num_classes(num_classes)
    window = _check_window(boundary_window)
    ignore_index = checks.check_ignore_index(ignore_index)
    _check_integer_label(xp, label, "label")
    axis = _output_class_axis(class_axis, tuple(label.shape))
    dtype = _float_dtype(xp, dtype)
    keep = not_ignored(xp, label, ignore_index)
    checks.check_hard_label_values(xp, label, num_classes, ignore_index, None)

    one_hot = xp.astype(class_mask(xp, label, None, axis, num_classes), dtype)
    smoothed = (1.0 - epsilon) * one_hot + epsilon / num_classes
    if window is not None:
        near = near_boundary(xp, label, keep, num_classes, window)
        smoothed = xp.where(xp.expand_dims(near, axis=axis), smoothed, one_hot)
    if keep is not None:
        # Also covers an ignore_index inside [0, C), which the one-hot would count.
        smoothed = xp.where(xp.expand_dims(keep, axis=axis), smoothed, 0.0)
    return smoothed


def average_annotators(
    labels: Array,
    num_classes: int,
    *,
    annotator_axis: int = 0,
    class_axis: int = 1,
    ignore_index: int | None = None,
    dtype: Any = None,
) -> Array:
    r"""The mean of A annotators' one-hot masks, :math:`y_c = \frac1A \sum_a [l_a = c]`.

    Where some annotators left a pixel unlabelled (``ignore_index``), the mean is over
    the others; where all did, the pixel gets an all-zero vector.

    Args:
        labels: integer class ids of A annotators stacked along ``annotator_axis``,
            e.g. (A, B, *spatial) (``xp.stack`` a list of masks first).
        num_classes: C >= 1.
        annotator_axis: the axis of ``labels`` holding the annotators.
        class_axis: where the class axis goes in the (B, C, *spatial) result.
        ignore_index: label value of unlabelled pixels.
        dtype: a floating dtype of the labels' namespace; float32 when None.

    Returns:
        The soft label, shape (B, C, *spatial) for ``class_axis=1``; its classes sum to
        1 where any annotator labelled the pixel and to 0 elsewhere.

    Raises:
        TypeError: non-integer labels. ValueError: axes out of range, class ids outside
            [0, C) that are not ``ignore_index`` (not checked inside ``jax.jit``).
    """
    xp = namespace_of(labels=labels)
    num_classes = _check_num_classes(num_classes)
    ignore_index = checks.check_ignore_index(ignore_index)
    _check_integer_label(xp, labels, "labels")
    if labels.ndim < 2:
        raise ValueError(
            f"labels must have an annotator axis and a batch axis, got shape "
            f"{tuple(labels.shape)}"
        )
    a_axis = _axis("annotator_axis", annotator_axis, labels.ndim, 0, tuple(labels.shape))
    if labels.shape[a_axis] == 0:
        raise ValueError(
            f"labels with shape {tuple(labels.shape)} hold no annotator (axis "
            f"annotator_axis={annotator_axis} has size 0): there is no vote to average"
        )
    labels = xp.moveaxis(labels, a_axis, 0)  # (A, B, *spatial)
    axis = _output_class_axis(class_axis, tuple(labels.shape[1:]))
    dtype = _float_dtype(xp, dtype)
    checks.check_hard_label_values(xp, labels, num_classes, ignore_index, None)

    votes = xp.astype(class_mask(xp, labels, None, axis + 1, num_classes), dtype)
    total = xp.sum(votes, axis=0)
    voted = not_ignored(xp, labels, ignore_index)
    if voted is None:
        return total / labels.shape[0]
    count = xp.sum(xp.astype(voted, dtype), axis=0)
    count = xp.expand_dims(count, axis=axis)
    has = count > 0
    return xp.where(has, total / xp.where(has, count, 1.0), 0.0)


def teacher_probabilities(
    teacher_logits: Array, *, temperature: float = 1.0, class_axis: int = 1
) -> Array:
    r"""The teacher's distribution :math:`\mathrm{softmax}(z / T)` over ``class_axis``.

    A soft label for :func:`jdt_array.jdt_loss` and the ``target_prob`` of
    :func:`jdt_array.kl_div` (use the same T there). Higher T gives softer labels that
    carry more of the teacher's knowledge about similar classes.

    Args:
        teacher_logits: floating (B, C, *spatial) or (B, *spatial, C).
        temperature: T > 0.
        class_axis: the class axis.

    Returns:
        Probabilities shaped like ``teacher_logits``, float64 for float64 logits and
        float32 otherwise.

    Raises:
        TypeError: non-floating logits. ValueError: ``temperature`` not > 0, fewer than
            2 axes, ``class_axis`` out of range.
    """
    xp = namespace_of(teacher_logits=teacher_logits)
    checks.check_logits(xp, teacher_logits)
    axis = checks.normalize_class_axis(
        class_axis, teacher_logits.ndim, tuple(teacher_logits.shape)
    )
    temperature = checks.check_real("temperature", temperature, low=0.0, strict=True)
    z = xp.astype(teacher_logits, compute_dtype(xp, teacher_logits.dtype))
    return softmax(xp, z / temperature if temperature != 1 else z, axis, z.dtype)


def near_boundary(xp: Any, label: Array, keep: Array | None, num_classes: int, k: int):
    """Boolean (B, *spatial): kept pixels whose k-window holds a kept pixel of another
    class.

    The window's smallest and largest class id are box filters, which separate into one
    sliding minimum (maximum) per spatial axis; the window holds two classes exactly
    when they differ. Ignored pixels take values that never win the min (max).
    """
    ids = xp.astype(label if keep is None else xp.where(keep, label, 0), xp.int32)
    low = ids if keep is None else xp.where(keep, ids, num_classes)
    high = ids if keep is None else xp.where(keep, ids, -1)
    for axis in range(1, label.ndim):
        low = _sliding(xp, low, axis, k // 2, xp.minimum, num_classes)
        high = _sliding(xp, high, axis, k // 2, xp.maximum, -1)
    near = high > low
    return near if keep is None else near & keep


def _sliding(xp, x, axis, radius, op, fill):
    """``op`` over the window [i - radius, i + radius] along ``axis``; ``fill`` outside."""
    result = x
    n = x.shape[axis]
    for shift in range(1, min(radius, n - 1) + 1):
        pad_shape = list(x.shape)
        pad_shape[axis] = shift
        pad = xp.full(tuple(pad_shape), fill, dtype=x.dtype, device=device(x))
        before = _slice(x, axis, 0, n - shift)
        after = _slice(x, axis, shift, n)
        result = op(result, xp.concat([pad, before], axis=axis))  # neighbour at i - shift
        result = op(result, xp.concat([after, pad], axis=axis))  # neighbour at i + shift
    return result


def _slice(x, axis, start, stop):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_window(window: Any) -> int | None:
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, Integral):
        raise TypeError(f"boundary_window must be an odd int or None, got {window!r}")
    if window < 1 or window % 2 == 0:
        raise ValueError(
            f"boundary_window must be an odd window size >= 1 (centred on the pixel), "
            f"got {window}"
        )
    return int(window)


def _check_integer_label(xp, label, name):
    if not xp.isdtype(label.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array of class ids, got {label.dtype}")
    if label.ndim < 1:
        raise ValueError(f"{name} must have shape (B, *spatial), got a 0-d array")


def _output_class_axis(class_axis: Any, label_shape: tuple) -> int:
    """``class_axis`` of the (B, C, *spatial) result as a non-negative axis >= 1."""
    ndim = len(label_shape) + 1
    return _axis("class_axis", class_axis, ndim, 1, label_shape, what="result")


def _axis(name, value, ndim, low, shape, what="labels"):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    axis = value + ndim if value < 0 else value
    if not low <= axis < ndim:
        raise ValueError(
            f"{name}={value} is out of range for a {what} with {ndim} axes (input shape "
            f"{shape}); it must be in [{low}, {ndim}) or a negative equivalent"
        )
    return axis


def _float_dtype(xp, dtype):
    if dtype is None:
        return xp.float32
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype!r}")
    return dtype
