"""The activations that turn a network's output into the probabilities the losses
compare, with their labels, checks and gradients.

* ``"softmax"`` (the default): one class per pixel, the probabilities sum to 1 over the
  class axis; the label holds class ids (B, *spatial) or per-class probabilities shaped
  like the logits. Its hot spots live in ``_kernels``.
* ``"sigmoid"``: binary and multi-label segmentation. Every class is an independent
  foreground probability sigmoid(z); the label is shaped like the logits (0/1 integer
  or bool, or probabilities in [0, 1]), or, for a single channel (B, 1, *spatial), a
  (B, *spatial) 0/1 label.
* ``None``: the input already holds probabilities (checked to lie in [0, 1] and, for
  more than one class, to sum to 1 over the classes); the labels are those of the
  softmax, or of the sigmoid for a single channel. Gradients are with respect to the
  probabilities.

For the two activations besides the softmax the statistics are computed from a dense
floating label (``Prepared.label``) and a keep mask that may drop single (pixel, class)
entries: ``ignore_index`` in a multi-label integer label drops only the classes that
hold it. Whether the label was hard (integer or bool) still picks the
``active_classes_mode_hard`` / ``_soft`` option.
"""

from __future__ import annotations

import math
from typing import Any

from . import _checks as checks
from ._array import Array, compute_dtype, eager_any
from ._pixels import class_mask, not_ignored

ACTIVATIONS = ("softmax", "sigmoid", None)


def check_activation(value: Any) -> str | None:
    if not (value is None or isinstance(value, str)) or value not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {value!r}")
    return value


def is_hard(xp: Any, label: Array) -> bool:
    """Whether a label is hard (integer class ids, or 0/1 integers or bools)."""
    return label.dtype == xp.bool or xp.isdtype(label.dtype, "integral")


def kept_along(xp: Any, keep: Array, ndim: int, axis: int) -> Array:
    """``keep`` broadcastable against a (B, ..., C, ...) array: a per-pixel mask
    (B, *spatial) gains the class axis; a mask with it already is returned as is."""
    return keep if keep.ndim == ndim else xp.expand_dims(keep, axis=axis)


def sigmoid(xp: Any, z: Array) -> Array:
    """1 / (1 + exp(-z)) without overflow: exp only ever sees -|z|. NaN stays NaN,
    +-inf give exactly 1 and 0."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def activate(
    xp: Any, logits: Array, axis: int, keep: Array | None, activation: str | None
) -> Array:
    """sigmoid(logits), or the probabilities themselves (``None``), in the
    accumulation dtype. Dropped entries count as logits 0 (probabilities 0 for
    ``None``), so that what they hold reaches no value and no gradient."""
    x = xp.astype(logits, compute_dtype(xp, logits.dtype))
    if keep is not None:
        x = xp.where(kept_along(xp, keep, x.ndim, axis), x, 0.0)
    return sigmoid(xp, x) if activation == "sigmoid" else x


def activation_vjp(xp: Any, prob: Array, g_prob: Array, activation: str | None) -> Array:
    """The gradient through :func:`activate`: x (1 - x) g for the sigmoid, g for
    ``None`` (dropped entries already carry a zero ``g_prob``)."""
    return g_prob * prob * (1.0 - prob) if activation == "sigmoid" else g_prob


def dense_inputs(
    xp: Any,
    logits: Array,
    label: Array,
    keep_mask: Array | None,
    axis: int,
    *,
    activation: str | None,
    ignore_index: int | None,
    check_values: bool,
) -> tuple[Array, Array, Array | None, bool]:
    """``(prob, y, keep, hard)`` for ``activation`` ``"sigmoid"`` or ``None``.

    ``prob`` and ``y`` are floating arrays shaped like the logits (``y`` 0 where
    dropped), ``keep`` None, a per-pixel mask (B, *spatial) or one shaped like
    ``logits`` (size-1 class axis allowed), ``hard`` whether the label was integer.
    """
    binary_rules = activation == "sigmoid" or logits.shape[axis] == 1
    if binary_rules:
        y, keep, hard = _independent_label(
            xp, logits, label, keep_mask, axis, ignore_index, check_values
        )
    else:
        y, keep, hard = _class_label(
            xp, logits, label, keep_mask, axis, ignore_index, check_values
        )
    if activation is None and check_values:
        check_probabilities(xp, logits, keep, axis, sums_to_one=not binary_rules)
    prob = activate(xp, logits, axis, keep, activation)
    y = xp.astype(y, prob.dtype)
    if keep is not None:
        y = xp.where(kept_along(xp, keep, y.ndim, axis), y, 0.0)
    return prob, y, keep, hard


def _independent_label(xp, logits, label, keep_mask, axis, ignore_index, check_values):
    """A label of independent classes: shaped like the logits, or (B, *spatial) for
    one channel; 0/1 integers or bools (hard) or probabilities (soft)."""
    shape, label_shape = tuple(logits.shape), tuple(label.shape)
    per_pixel = shape[:axis] + shape[axis + 1 :]
    if label_shape == per_pixel and shape[axis] == 1:
        label = xp.expand_dims(label, axis=axis)
    elif label_shape != shape:
        raise ValueError(
            f"with independent classes (activation='sigmoid', or one channel) the label "
            f"must have the shape of logits {shape}, or {per_pixel} for a single "
            f"channel; got {label_shape}"
        )
    keep = None if keep_mask is None else xp.expand_dims(keep_mask, axis=axis)
    hard = is_hard(xp, label)
    if hard:
        not_ign = not_ignored(xp, label, ignore_index)
        if not_ign is not None:
            keep = not_ign if keep is None else keep & not_ign
        if check_values:
            _check_binary_values(xp, label, keep, ignore_index)
        return xp.astype(label, xp.int8) if label.dtype == xp.bool else label, keep, hard
    if not xp.isdtype(label.dtype, "real floating"):
        raise TypeError(
            f"label must be a bool, integer or floating array, got dtype {label.dtype}"
        )
    if check_values:
        checks.check_soft_label_values(xp, label, keep, axis)
    return label, keep, hard


def _check_binary_values(xp, label, keep, ignore_index):
    if label.dtype == xp.bool:
        return
    bad = (label != 0) & (label != 1)
    if keep is not None:
        bad = bad & keep
    message = (
        f"with independent classes (activation='sigmoid', or one channel) an integer "
        f"label must hold 0 or 1 (or ignore_index={ignore_index!r})"
    )
    if eager_any(xp, bad, message):
        raise ValueError(
            f"with independent classes (activation='sigmoid', or one channel) an integer "
            f"label must hold 0 or 1 (or ignore_index={ignore_index!r}); the label with "
            f"shape {tuple(label.shape)} holds {int(xp.sum(xp.astype(bad, xp.int64)))} "
            f"other values (min {int(xp.min(label))}, max {int(xp.max(label))})"
        )


def _class_label(xp, logits, label, keep_mask, axis, ignore_index, check_values):
    """A label of one class per pixel (as for the softmax), as a dense array."""
    hard = checks.label_kind(xp, logits, label, axis)
    keep = keep_mask
    if not hard:
        if check_values:
            checks.check_soft_label_values(xp, label, keep_mask, axis)
        return label, keep, hard
    num_classes = logits.shape[axis]
    if check_values:
        checks.check_hard_label_values(xp, label, num_classes, ignore_index, keep_mask)
    not_ign = not_ignored(xp, label, ignore_index)
    if not_ign is not None:
        keep = not_ign if keep is None else keep & not_ign
    return class_mask(xp, label, keep, axis, num_classes), keep, hard


def check_probabilities(
    xp: Any, prob: Array, keep: Array | None, axis: int, *, sums_to_one: bool
) -> None:
    """Raise where kept probabilities (``activation=None``) lie outside [0, 1] or, for
    one class per pixel, do not sum to 1 over the classes. NaN passes (it comes out as
    a NaN loss, like a NaN logit); skipped for traced arrays."""
    bad = (prob < 0) | (prob > 1)
    kept = None if keep is None else kept_along(xp, keep, prob.ndim, axis)
    if kept is not None:
        bad = bad & kept
    message = "activation=None takes probabilities in [0, 1]; pass logits with "
    message += "activation='softmax' or 'sigmoid'"
    if eager_any(xp, bad, message):
        raise ValueError(
            f"activation=None takes probabilities, but the logits argument with shape "
            f"{tuple(prob.shape)} holds {int(xp.sum(xp.astype(bad, xp.int64)))} kept "
            f"values outside [0, 1]; pass activation='softmax' or 'sigmoid' for logits"
        )
    if not sums_to_one:
        return
    dtype = compute_dtype(xp, prob.dtype)
    total = xp.sum(xp.astype(prob, dtype), axis=axis)
    # Room for the rounding of C probabilities (and for finite-difference steps): the
    # check is there to catch logits and sigmoid outputs, which are far off.
    eps = xp.finfo(prob.dtype).eps
    tolerance = max(1e-4, math.sqrt(eps)) * max(1.0, prob.shape[axis] / 16)
    off = xp.abs(total - 1.0) > tolerance
    if keep is not None:
        off = off & (keep if keep.ndim == off.ndim else xp.any(keep, axis=axis))
    message = (
        f"activation=None with {prob.shape[axis]} classes takes probabilities that sum "
        f"to 1 over class axis {axis}"
    )
    if eager_any(xp, off, message):
        raise ValueError(
            f"activation=None with {prob.shape[axis]} classes takes probabilities that "
            f"sum to 1 over class axis {axis}; {int(xp.sum(xp.astype(off, xp.int64)))} "
            f"kept pixels of the input with shape {tuple(prob.shape)} do not (for "
            f"independent classes, pass sigmoid logits with activation='sigmoid')"
        )
