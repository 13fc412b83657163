"""Pixel-wise cross-entropy (with the focal variant) and the distillation KL divergence.

References:
    Tsung-Yi Lin, Priya Goyal, Ross Girshick, Kaiming He, Piotr Dollar. Focal Loss for
    Dense Object Detection. ICCV 2017.
    Geoffrey Hinton, Oriol Vinyals, Jeff Dean. Distilling the Knowledge in a Neural
    Network. NeurIPS Deep Learning Workshop 2014.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import _checks as checks
from ._activation import kept_along
from ._array import Array, compute_dtype, namespace_of, zero_d
from ._inputs import Prepared, prepare, with_probabilities
from ._pixels import class_mask, masked_mean

__all__ = [
    "activated_cross_entropy",
    "activated_cross_entropy_of",
    "activated_cross_entropy_value_and_grad",
    "cross_entropy",
    "cross_entropy_value_and_grad",
    "kl_div",
    "kl_div_value_and_grad",
    "log_softmax",
]


def cross_entropy(
    logits: Array,
    label: Array,
    *,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    gamma: float = 0.0,
) -> Array:
    r"""The mean pixel-wise cross-entropy of softmax(logits) against a hard or soft label.

    With :math:`p_c` the softmax probabilities of a pixel and :math:`y_c` its label,

    .. math::
        \ell = -\sum_c y_c \, (1 - p_c)^\gamma \log p_c,

    averaged over the kept pixels. For a hard label (y one-hot at class t) this is
    :math:`-(1 - p_t)^\gamma \log p_t`, the cross-entropy for ``gamma = 0`` (the
    "mean" of ``torch.nn.functional.cross_entropy`` with ``ignore_index``) and the
    focal loss of Lin et al. (ICCV 2017) for ``gamma > 0``. For a soft label the focal
    factor weights each class term by its own :math:`(1 - p_c)^\gamma`, which reduces to
    the hard-label focal loss when the soft label is one-hot.

    Args:
        logits: (B, C, *spatial) (``class_axis=1``) or (B, *spatial, C)
            (``class_axis=-1``); float16/bfloat16 are accumulated in float32.
        label: a hard label, integer (B, *spatial) class ids; or a soft label, floating
            per-class probabilities shaped like ``logits``.
        ignore_index: hard-label value whose pixels are dropped (soft labels: unused).
        keep_mask: optional boolean (B, *spatial); False drops a pixel.
        class_axis: the axis of ``logits`` (and of a soft label) holding the classes.
        gamma: focal exponent (>= 0); 0 gives the plain cross-entropy.

    Returns:
        A 0-d array in the namespace and on the device of ``logits``, float64 for
        float64 logits and float32 otherwise. 0, with a zero gradient, when no pixel
        is kept.

    Raises:
        TypeError, ValueError: as :func:`jdt_array.jdt_loss` for the logits, label and
            mask; ``gamma`` negative or not finite. Label values are not checked for
            traced arrays (inside ``jax.jit``); there, a kept out-of-range class id
            counts as a pixel with zero loss.
    """
    px = _prepare_cross_entropy(logits, label, ignore_index, keep_mask, class_axis, gamma)
    return _cross_entropy_value(px, gamma)


def cross_entropy_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    r""":func:`cross_entropy` (the same arguments) and its gradient with respect to
    ``logits``, by hand.

    With :math:`\ell = -\sum_c y_c f_c \log p_c`, :math:`f_c = (1 - p_c)^\gamma`:
    :math:`h_c = \partial \ell / \partial \log p_c = -y_c (f_c - \gamma (1 - p_c)^{\gamma-1}
    p_c \log p_c)` and, through the log-softmax, :math:`g = h - p \sum_c h_c`.
    """
    args = checks.arguments(cross_entropy, logits, label, options)
    px, gamma = _prepare_cross_entropy(**args), args["gamma"]
    return _cross_entropy_value(px, gamma), _softmax_cross_entropy_grad(
        px, gamma, logits.dtype
    )


def _softmax_cross_entropy_grad(px: _Pixels, gamma: float, dtype: Any) -> Array:
    """The logits' gradient of :func:`_cross_entropy_value`, in ``dtype``."""
    xp, axis = px.xp, px.axis
    target = xp.astype(px.target, px.log_prob.dtype) if px.hard else px.target
    h = -target * _focal(xp, px.log_prob, gamma, derivative=True)
    grad = h - xp.exp(px.log_prob) * xp.sum(h, axis=axis, keepdims=True)
    grad = _pixel_mean_grad(xp, grad, px.keep, axis)
    return xp.astype(grad, dtype, copy=False)


class _Pixels(NamedTuple):
    """The checked inputs of a pixel-wise loss, with the log-probabilities computed."""

    xp: Any
    axis: int  # the class axis, non-negative
    log_prob: Array
    target: Array  # the one-hot class mask of a hard label, or the soft label
    hard: bool
    keep: Array | None  # the pixels averaged over (None: all)


def _prepare_cross_entropy(logits, label, ignore_index, keep_mask, class_axis, gamma):
    checks.check_real("gamma", gamma, low=0.0)
    inputs = prepare(
        logits, label, keep_mask, class_axis=class_axis, ignore_index=ignore_index
    )
    return _softmax_pixels(inputs)


def _softmax_pixels(inputs: Prepared) -> _Pixels:
    """The log-probabilities and the target of prepared softmax inputs."""
    xp, axis, keep = inputs.xp, inputs.class_axis, inputs.keep
    log_prob = log_softmax(xp, inputs.logits, axis, inputs.dtype, keep=keep)
    if inputs.hard:
        target = class_mask(xp, inputs.label, None, axis, inputs.num_classes)
    else:  # dropped pixels' labels count as 0 (they may hold anything)
        target = xp.astype(inputs.label, inputs.dtype)
        if keep is not None:
            target = xp.where(xp.expand_dims(keep, axis=axis), target, 0.0)
    return _Pixels(xp, axis, log_prob, target, inputs.hard, keep)


def _cross_entropy_value(px: _Pixels, gamma: float) -> Array:
    xp, axis = px.xp, px.axis
    if px.hard:
        # Summing the log-probabilities over a one-hot mask picks log p_t without a gather.
        log_p = xp.sum(xp.where(px.target, px.log_prob, 0.0), axis=axis)
        per_pixel = -_focal(xp, log_p, gamma) * log_p
    else:  # 0 log 0 = 0: a class of label 0 adds nothing, also where p is 0
        terms = px.target * _focal(xp, px.log_prob, gamma) * px.log_prob
        per_pixel = -xp.sum(xp.where(px.target == 0, 0.0, terms), axis=axis)
    return masked_mean(xp, per_pixel, px.keep)


def _focal(xp: Any, log_p: Array, gamma: float, *, derivative: bool = False) -> Any:
    """The focal factor f = (1 - p)^gamma from log p (1 when gamma is 0); with
    ``derivative``, d (f log p) / d log p = f - gamma (1 - p)^(gamma - 1) p log p.

    ``-expm1(log p)`` is 1 - p without cancellation near p = 1; the double where keeps
    the gradient of a fractional power finite where 1 - p rounds to 0.
    """
    if gamma == 0:
        return 1.0
    q = -xp.expm1(log_p)
    positive = q > 0
    q_safe = xp.where(positive, q, 1.0)
    factor = xp.where(positive, q_safe**gamma, 0.0)
    if not derivative:
        return factor
    slope = gamma * q_safe ** (gamma - 1) * xp.exp(log_p) * log_p
    return factor - xp.where(positive, slope, 0.0)


def kl_div(
    logits: Array,
    target_prob: Array,
    *,
    temperature: float = 1.0,
    keep_mask: Array | None = None,
    class_axis: int = 1,
) -> Array:
    r"""Knowledge-distillation loss: :math:`T^2 \, KL(q \,\|\, \mathrm{softmax}(z / T))`.

    With z the student ``logits``, q the teacher distribution ``target_prob`` (e.g. from
    :func:`jdt_array.soft_labels.teacher_probabilities` with the same temperature) and
    :math:`p = \mathrm{softmax}(z / T)`, each pixel contributes

    .. math::
        \sum_c q_c (\log q_c - \log p_c), \qquad 0 \log 0 = 0,

    averaged over the kept pixels and multiplied by :math:`T^2`, which keeps the
    gradient's scale independent of the temperature (Hinton et al., 2014).

    Args:
        logits: student logits, (B, C, *spatial) or (B, *spatial, C) (``class_axis``).
        target_prob: teacher probabilities, a floating array shaped like ``logits``
            with values in [0, 1].
        temperature: T > 0.
        keep_mask: optional boolean (B, *spatial); False drops a pixel.
        class_axis: the class axis of ``logits`` and ``target_prob``.

    Returns:
        A 0-d array like :func:`cross_entropy`; 0 with a zero gradient when no pixel is
        kept.

    Raises:
        TypeError: ``target_prob`` not floating (a hard label has no distribution to
            match), mixed libraries, non-boolean ``keep_mask``.
        ValueError: shapes that do not match, ``temperature`` not > 0, ``target_prob``
            outside [0, 1] (not checked inside ``jax.jit``).
    """
    log_p, q = _prepare_kl_div(logits, target_prob, temperature, keep_mask, class_axis)
    return _kl_div_value(log_p, q, temperature, keep_mask, class_axis % logits.ndim)


def kl_div_value_and_grad(
    logits: Array, target_prob: Array, **options: Any
) -> tuple[Array, Array]:
    r""":func:`kl_div` (the same arguments) and its gradient, :math:`T (p \sum_c q_c -
    q)` per kept pixel over their number, with p = softmax(z / T)."""
    args = checks.arguments(kl_div, logits, target_prob, options)
    log_p, q = _prepare_kl_div(**args)
    temperature, keep_mask, class_axis = (args[k] for k in ("temperature", "keep_mask",
                                                              "class_axis"))  # fmt: skip
    xp, axis = namespace_of(logits=logits), class_axis % logits.ndim
    grad = temperature * (xp.exp(log_p) * xp.sum(q, axis=axis, keepdims=True) - q)
    grad = _pixel_mean_grad(xp, grad, keep_mask, axis)
    loss = _kl_div_value(log_p, q, temperature, keep_mask, axis)
    return loss, xp.astype(grad, logits.dtype, copy=False)


def _prepare_kl_div(logits, target_prob, temperature, keep_mask, class_axis):
    """Check the arguments of :func:`kl_div`; log softmax(z / T) and the teacher's q."""
    xp = namespace_of(logits=logits, target_prob=target_prob, keep_mask=keep_mask)
    checks.check_logits(xp, logits)
    axis = checks.normalize_class_axis(class_axis, logits.ndim, tuple(logits.shape))
    checks.check_real("temperature", temperature, low=0.0, strict=True)
    if not xp.isdtype(target_prob.dtype, "real floating"):
        raise TypeError(
            f"target_prob must be a floating array of probabilities shaped like logits, "
            f"got dtype {target_prob.dtype}; for a hard label use cross_entropy"
        )
    checks.label_kind(xp, logits, target_prob, axis)
    if keep_mask is not None:
        checks.check_keep_mask(xp, keep_mask, logits, axis)
    checks.check_soft_label_values(xp, target_prob, keep_mask, axis, name="target_prob")
    dtype = compute_dtype(xp, logits.dtype)
    log_p = log_softmax(xp, logits, axis, dtype, temperature=temperature, keep=keep_mask)
    q = xp.astype(target_prob, dtype)
    if keep_mask is not None:  # dropped pixels' targets count as 0
        q = xp.where(xp.expand_dims(keep_mask, axis=axis), q, 0.0)
    return log_p, q


def _kl_div_value(log_p, q, temperature, keep_mask, axis):
    xp = namespace_of(log_p=log_p)
    positive = q > 0
    # The double where gives 0 log 0 = 0 in the value and a finite gradient.
    q_log_q = xp.where(positive, q * xp.log(xp.where(positive, q, 1.0)), 0.0)
    per_pixel = xp.sum(q_log_q - q * log_p, axis=axis)
    return zero_d(xp, temperature**2 * masked_mean(xp, per_pixel, keep_mask))


def log_softmax(
    xp: Any, logits: Any, axis: int, dtype: Any, *, temperature: float = 1.0,
    keep: Any = None,
):  # fmt: skip
    """log softmax(logits / temperature) over ``axis`` in ``dtype``, shifted by the max
    so that exp never overflows and log never sees 0. Dropped pixels (not ``keep``)
    count as logits 0, so that what they hold reaches no value or gradient."""
    z = logits if logits.dtype == dtype else xp.astype(logits, dtype)
    if keep is not None:
        z = xp.where(xp.expand_dims(keep, axis=axis), z, 0.0)
    if temperature != 1:
        z = z / temperature
    shifted = z - xp.max(z, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _pixel_mean_grad(xp, grad, keep, axis):
    """Scale per-pixel gradients for a mean over the kept pixels (0 where dropped)."""
    if keep is None:
        pixels = math.prod(grad.shape) // max(grad.shape[axis], 1)
        return grad / pixels if pixels else grad
    kept = xp.expand_dims(keep, axis=axis)
    count = xp.sum(xp.astype(keep, grad.dtype))
    return xp.where(kept, grad, 0.0) / xp.where(count > 0, count, 1.0)


def activated_cross_entropy(
    logits: Array,
    label: Array,
    *,
    activation: str | None,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
) -> Array:
    r"""The cross-entropy that goes with ``activation`` (the CE part of
    :func:`jdt_array.ce_jdt_loss`), labels as in :func:`jdt_array.jdt_loss`.

    * ``"softmax"``: :func:`cross_entropy`.
    * ``"sigmoid"``: the binary cross-entropy of every class,
      :math:`-(y \log \sigma(z) + (1 - y) \log(1 - \sigma(z)))`, written with
      softplus so that no log sees 0, averaged over the kept (pixel, class) entries
      (as ``torch.nn.functional.binary_cross_entropy_with_logits``).
    * ``None`` (``logits`` are probabilities x): the binary cross-entropy of x for one
      channel, and :math:`-\sum_c y_c \log x_c` averaged over the kept pixels for
      more; 0 log 0 = 0, and a probability 0 where the label is not gives +inf.

    Examples:
        >>> import numpy as np
        >>> logits = np.zeros((1, 1, 2, 2))  # sigmoid(0) = 0.5 everywhere
        >>> mask = np.array([[[1, 0], [0, 1]]])
        >>> loss = activated_cross_entropy(logits, mask, activation="sigmoid")
        >>> round(float(loss), 4)  # log 2
        0.6931
    """
    inputs = prepare(
        logits, label, keep_mask, class_axis=class_axis, ignore_index=ignore_index,
        activation=activation,
    )  # fmt: skip
    return activated_cross_entropy_of(inputs)


def activated_cross_entropy_of(inputs: Prepared) -> Array:
    """:func:`activated_cross_entropy` of prepared inputs (those of a JDT loss)."""
    return _activated_value_and_grad(inputs, with_grad=False)[0]


def activated_cross_entropy_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    r""":func:`activated_cross_entropy` and its gradient, by hand: per entry
    :math:`\sigma(z) - y` for the sigmoid, :math:`(x - y) / (x (1 - x))` for one
    channel of probabilities, :math:`-y / x` for several; over the number of kept
    entries (pixels)."""
    args = checks.arguments(activated_cross_entropy, logits, label, options)
    inputs = prepare(
        logits, label, args["keep_mask"], class_axis=args["class_axis"],
        ignore_index=args["ignore_index"], activation=args["activation"],
    )  # fmt: skip
    return _activated_value_and_grad(inputs, with_grad=True)


def _activated_value_and_grad(inputs: Prepared, *, with_grad: bool):
    xp, axis, act = inputs.xp, inputs.class_axis, inputs.activation
    binary = act.independent(inputs.num_classes)
    if act.takes_logits and not binary:  # the softmax: its cross-entropy
        px = _softmax_pixels(inputs)
        loss = _cross_entropy_value(px, 0.0)
        if not with_grad:
            return loss, None
        return loss, _softmax_cross_entropy_grad(px, 0.0, inputs.logits.dtype)
    x = with_probabilities(inputs).prob
    y, keep = inputs.label, inputs.keep
    kept = None if keep is None else xp.broadcast_to(
        kept_along(xp, keep, x.ndim, axis), x.shape
    )  # fmt: skip
    if act.takes_logits:  # independent classes of logits: sigmoid(z)
        z = _inert_logits(xp, inputs.logits, kept, x.dtype)
        terms = _guarded(xp, y, _softplus(xp, -z)) + _guarded(xp, 1.0 - y, _softplus(xp, z))
        g = x - y
    else:  # probabilities: 0 log 0 = 0, and no division where the label removes it
        terms = _guarded(xp, y, -xp.log(_safe(xp, y, x)))
        g = xp.where(y > 0, -y / _safe(xp, y, x), 0.0)
        if binary:
            rest = 1.0 - y
            terms = terms + _guarded(xp, rest, -xp.log(_safe(xp, rest, 1.0 - x)))
            g = g + xp.where(rest > 0, rest / _safe(xp, rest, 1.0 - x), 0.0)
    if binary:  # a mean over the kept (pixel, class) entries
        loss = masked_mean(xp, terms, kept)
        grad = _entry_mean_grad(xp, g, kept) if with_grad else None
    else:  # a mean over the kept pixels
        loss = masked_mean(xp, xp.sum(terms, axis=axis), keep)
        grad = _pixel_mean_grad(xp, g, keep, axis) if with_grad else None
    if grad is not None:
        grad = xp.astype(grad, inputs.logits.dtype, copy=False)
    return zero_d(xp, loss), grad


def _inert_logits(xp, logits, kept, dtype):
    """The logits in ``dtype``, 0 where not ``kept`` (so that they stay inert)."""
    z = xp.astype(logits, dtype)
    return z if kept is None else xp.where(kept, z, 0.0)


def _softplus(xp, t):
    """log(1 + exp(t)) without overflow."""
    return xp.maximum(t, 0.0) + xp.log1p(xp.exp(-xp.abs(t)))


def _guarded(xp, weight, value):
    """weight * value, and 0 where the weight is 0 (0 log 0 = 0, also for an infinite
    log)."""
    return xp.where(weight > 0, weight * value, 0.0)


def _safe(xp, weight, value):
    """``value`` where ``weight`` > 0, else 1: a denominator or log argument whose
    term the weight removes anyway."""
    return xp.where(weight > 0, value, 1.0)


def _entry_mean_grad(xp, grad, kept):
    """Scale per-entry gradients for a mean over the kept entries (0 where dropped)."""
    if kept is None:
        count = math.prod(grad.shape)
        return grad / count if count else grad
    count = xp.sum(xp.astype(kept, grad.dtype))
    return xp.where(kept, grad, 0.0) / xp.where(count > 0, count, 1.0)
