"""The activations that turn a network's output into the probabilities the losses
compare, each an object that owns its labels, checks, probabilities and gradient.

* :data:`SOFTMAX` (``activation="softmax"``, the default): one class per pixel, the
  probabilities sum to 1 over the class axis; the label holds class ids (B, *spatial)
  or per-class probabilities shaped like the logits. Its hot spots (the softmax, the
  hard-label statistics, the fused kernels) live in ``_kernels``.
* :data:`SIGMOID` (``"sigmoid"``): binary and multi-label segmentation. Every class is
  an independent foreground probability sigmoid(z); the label is shaped like the
  logits (0/1 integer or bool, or probabilities in [0, 1]), or, for a single channel
  (B, 1, *spatial), a (B, *spatial) 0/1 label.
* :data:`PROBABILITIES` (``None``): the input already holds probabilities (checked to
  lie in [0, 1] and, for more than one class, to sum to 1 over the classes); the
  labels are those of the softmax, or of the sigmoid for a single channel. Gradients
  are with respect to the probabilities.

:func:`activation_of` turns the option's value into one of these objects; it is the
only place that reads the names. Besides the softmax's class ids, the statistics take
a dense floating label (``Labels.label``) and a keep mask that may drop single
(pixel, class) entries: ``ignore_index`` in a multi-label integer label drops only the
classes that hold it. Whether the label was hard (integer or bool) still picks the
``active_classes_mode_hard`` / ``_soft`` option.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

from . import _checks as checks
from ._array import Array, compute_dtype, eager_any, readable_on_host
from ._pixels import class_mask, kept_pixels, not_ignored, soft_cardinalities_grad

__all__ = [
    "ACTIVATIONS",
    "PROBABILITIES",
    "SIGMOID",
    "SOFTMAX",
    "Activation",
    "Labels",
    "activation_of",
    "check_activation",
    "is_hard",
    "kept_along",
    "sigmoid",
]

ACTIVATIONS = ("softmax", "sigmoid", None)


class Labels(NamedTuple):
    """A checked label in the form the statistics take."""

    label: Array  # class ids (softmax, hard) or a floating label shaped like the logits
    keep: Array | None  # the kept pixels (B, *spatial), or entries (logits' shape), or None
    hard: bool  # the label was integer or bool: active_classes_mode_hard applies
    class_ids: bool  # ``label`` holds class ids for the hard-label kernels


class Activation:
    """What an activation decides about a loss's inputs. Subclasses override what
    differs; this base holds the label rules of one class per pixel."""

    name: str | None = None
    # Whether the input is logits (the activation maps them to probabilities).
    takes_logits = True
    # Whether a fused softmax kernel (Triton, Pallas) may compute the statistics.
    fusable = False

    def __repr__(self) -> str:
        return f"activation={self.name!r}"

    def independent(self, num_classes: int) -> bool:
        """Whether every class is its own binary problem (the sigmoid's label rules:
        a label shaped like the logits, a 0/1 integer label, per-entry ignoring)."""
        return False

    def labels(
        self,
        xp: Any,
        kernels: Any,
        logits: Array,
        label: Array,
        keep_mask: Array | None,
        axis: int,
        ignore_index: int | None,
        *,
        check_values: bool,
    ) -> Labels:
        """The checked label and the kept pixels (``check_values=False`` skips reading
        the label: a backward pass whose forward pass checked the same arrays);
        ``kernels`` the kernel set of ``xp``."""
        if self.independent(logits.shape[axis]):
            return _independent_label(
                xp, logits, label, keep_mask, axis, ignore_index, check_values
            )
        labels = SOFTMAX.labels(
            xp, kernels, logits, label, keep_mask, axis, ignore_index,
            check_values=check_values,
        )  # fmt: skip
        return _dense_class_label(xp, logits, labels, axis)

    def check_input(
        self, xp: Any, logits: Array, keep: Array | None, axis: int
    ) -> None:  # fmt: skip
        """Checks of the input's values beyond its dtype and shape (none for logits)."""

    def probabilities(
        self, xp: Any, kernels: Any, logits: Array, axis: int, keep: Array | None
    ) -> Array:
        """The probabilities in the accumulation dtype; dropped entries count as
        logits 0 (given probabilities 0), so that what they hold reaches no value and
        no gradient."""
        raise NotImplementedError

    def vjp(self, xp: Any, kernels: Any, prob: Array, g_prob: Array, axis: int) -> Array:
        """The gradient with respect to the input of ``sum(g_prob * prob)``."""
        raise NotImplementedError

    def soft_statistics_vjp(
        self, xp: Any, kernels: Any, prob: Array, label: Array, keep: Array | None,
        axis: int, norm: float, g_prob_card: Array, g_diff_card: Array,
    ) -> Array:  # fmt: skip
        """The input's gradient of sum(g_prob_card |x|^p) + sum(g_diff_card |x - y|^p)
        for a floating label ``label`` (both (B, C) cotangents), 0 where dropped."""
        g = soft_cardinalities_grad(
            xp, prob, label, keep, axis, norm, g_prob_card, g_diff_card
        )
        return self.vjp(xp, kernels, prob, g, axis)


class Softmax(Activation):
    name = "softmax"
    fusable = True

    def labels(
        self, xp, kernels, logits, label, keep_mask, axis, ignore_index, *, check_values
    ):
        hard = checks.label_kind(xp, logits, label, axis)
        if not hard:
            if check_values:
                checks.check_soft_label_values(xp, label, keep_mask, axis)
            return Labels(label, keep_mask, hard=False, class_ids=False)
        if check_values:
            checks.check_hard_label_values(
                xp, label, logits.shape[axis], ignore_index, keep_mask, kernels
            )
        keep = kept_pixels(xp, label, ignore_index, keep_mask)
        return Labels(label, keep, hard=True, class_ids=True)

    def check_input(self, xp, logits, keep, axis):
        warn_if_probabilities(xp, logits, axis)

    def probabilities(self, xp, kernels, logits, axis, keep):
        dtype = compute_dtype(xp, logits.dtype)
        x = logits if logits.dtype == dtype else xp.astype(logits, dtype)
        return kernels.softmax(x, axis, keep)

    def vjp(self, xp, kernels, prob, g_prob, axis):
        return kernels.softmax_vjp(prob, g_prob, axis)

    def soft_statistics_vjp(self, xp, kernels, prob, label, keep, axis, norm,
                            g_prob_card, g_diff_card):  # fmt: skip
        # The kernels form g inside the softmax's VJP (one pixel-sized array less).
        return kernels.soft_statistics_vjp(
            prob, label, keep, axis, norm, g_prob_card, g_diff_card
        )


class Sigmoid(Activation):
    name = "sigmoid"

    def independent(self, num_classes):
        return True

    def probabilities(self, xp, kernels, logits, axis, keep):
        return sigmoid(xp, _inert(xp, logits, axis, keep))

    def vjp(self, xp, kernels, prob, g_prob, axis):
        # d sigmoid(z) / dz = x (1 - x); dropped entries carry a zero g_prob.
        return g_prob * prob * (1.0 - prob)


class Probabilities(Activation):
    name = None
    takes_logits = False

    def independent(self, num_classes):
        return num_classes == 1  # one channel: the foreground probability

    def check_input(self, xp, logits, keep, axis):
        independent = self.independent(logits.shape[axis])
        check_probabilities(xp, logits, keep, axis, sums_to_one=not independent)

    def probabilities(self, xp, kernels, logits, axis, keep):
        return _inert(xp, logits, axis, keep)

    def vjp(self, xp, kernels, prob, g_prob, axis):
        return g_prob


SOFTMAX, SIGMOID, PROBABILITIES = Softmax(), Sigmoid(), Probabilities()
_BY_NAME = {a.name: a for a in (SOFTMAX, SIGMOID, PROBABILITIES)}


def check_activation(value: Any) -> str | None:
    """``value`` checked to name an activation: "softmax", "sigmoid" or None."""
    if not (value is None or isinstance(value, str)) or value not in _BY_NAME:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {value!r}")
    return value


def activation_of(value: Any) -> Activation:
    """The activation object named by the ``activation`` option."""
    return _BY_NAME[check_activation(value)]


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


def _inert(xp: Any, logits: Array, axis: int, keep: Array | None) -> Array:
    """The input in the accumulation dtype, 0 at dropped entries."""
    x = xp.astype(logits, compute_dtype(xp, logits.dtype))
    if keep is not None:
        x = xp.where(kept_along(xp, keep, x.ndim, axis), x, 0.0)
    return x


def _independent_label(xp, logits, label, keep_mask, axis, ignore_index, check_values):
    """A label of independent classes: shaped like the logits, or (B, *spatial) for
    one channel; 0/1 integers or bools (hard) or probabilities (soft); as a floating
    label, 0 where dropped."""
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
    elif not xp.isdtype(label.dtype, "real floating"):
        raise TypeError(
            f"label must be a bool, integer or floating array, got dtype {label.dtype}"
        )
    elif check_values:
        checks.check_soft_label_values(xp, label, keep, axis)
    return Labels(_dense(xp, logits, label, keep, axis), keep, hard, class_ids=False)


def _dense_class_label(xp, logits, labels: Labels, axis):
    """A checked label of one class per pixel as a dense floating array (a one-hot
    mask for class ids)."""
    y = labels.label
    if labels.hard:
        y = class_mask(xp, y, labels.keep, axis, logits.shape[axis])
    return Labels(_dense(xp, logits, y, labels.keep, axis), labels.keep, labels.hard,
                  class_ids=False)  # fmt: skip


def _dense(xp, logits, y, keep, axis):
    """``y`` in the accumulation dtype, 0 where not ``keep``."""
    y = xp.astype(y, compute_dtype(xp, logits.dtype))
    if keep is not None:
        y = xp.where(kept_along(xp, keep, y.ndim, axis), y, 0.0)
    return y


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
            f"{message}; the label with shape {tuple(label.shape)} holds "
            f"{int(xp.sum(xp.astype(bad, xp.int64)))} other values (min "
            f"{int(xp.min(label))}, max {int(xp.max(label))})"
        )


def warn_if_probabilities(xp: Any, logits: Array, axis: int) -> None:
    """Warn when the logits of the first image look like probabilities (all in
    [0, 1], summing to 1 over the classes): the softmax would then be taken twice, a
    silent loss of sharpness. Only where the values can be read without waiting for a
    device, and only the first image (a fraction of the batch's cost)."""
    if logits.shape[axis] < 2 or math.prod(logits.shape) == 0:
        return  # one class, or no pixel: nothing to look like a distribution
    if not readable_on_host(logits):
        return
    first = logits[0:1, ...]
    if not bool(xp.all((first >= 0) & (first <= 1))):
        return
    total = xp.sum(xp.astype(first, compute_dtype(xp, first.dtype)), axis=axis)
    if bool(xp.all(xp.abs(total - 1.0) <= 1e-3)):
        warnings.warn(
            f"the logits of the first image lie in [0, 1] and sum to 1 over class axis "
            f"{axis}: they look like probabilities, whose softmax would be taken again; "
            f"pass activation=None for probabilities (or raw logits)",
            UserWarning,
            stacklevel=checks.caller_stacklevel(),
        )


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
    message = (
        "activation=None takes probabilities in [0, 1]; pass logits with "
        "activation='softmax' or 'sigmoid'"
    )
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
            f"{message}; {int(xp.sum(xp.astype(off, xp.int64)))} kept pixels of the "
            f"input with shape {tuple(prob.shape)} do not (for independent classes, "
            f"pass sigmoid logits with activation='sigmoid')"
        )
