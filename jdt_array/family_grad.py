"""Hand-derived gradients of the rest of the loss family, in array-API code.

Like :mod:`jdt_array.jdt_grad`, these give NumPy, CuPy and array-api-strict users the
gradient with respect to the logits without autodiff. Each function returns
``(loss, grad)``; the value comes from the loss function itself, so the argument checks
and the forward maths live in one place.
"""

from __future__ import annotations

from typing import Any

from ._namespace import compute_dtype, device, namespace_of
from ._reduction import levels, statistics_grad, sum_over_replicas
from ._statistics import class_mask
from .compound import ce_jdt_loss, generalized_dice_loss, sudre_weights
from .cross_entropy import cross_entropy, kept_pixels, kl_div, log_softmax
from .jdt import JDTOptions, prepare
from .jdt_grad import jdt_value_and_grad, loss_shape, softmax_vjp, statistics_vjp
from .lovasz import jaccard_increments, lovasz_hinge_loss, lovasz_softmax_loss

Array = Any


def cross_entropy_value_and_grad(
    logits: Array,
    label: Array,
    *,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    gamma: float = 0.0,
) -> tuple[Array, Array]:
    r""":func:`jdt_array.cross_entropy` and its gradient.

    With :math:`\ell = -\sum_c y_c f_c \log p_c`, :math:`f_c = (1 - p_c)^\gamma`:
    :math:`h_c = \partial \ell / \partial \log p_c = -y_c (f_c - \gamma (1 - p_c)^{\gamma-1}
    p_c \log p_c)` and, through the log-softmax, :math:`g = h - p \sum_c h_c`.
    """
    loss = cross_entropy(logits, label, ignore_index=ignore_index, keep_mask=keep_mask,
                         class_axis=class_axis, gamma=gamma)  # fmt: skip
    xp = namespace_of(logits=logits)
    axis = class_axis % logits.ndim
    log_p = log_softmax(xp, logits, axis, compute_dtype(xp, logits.dtype))
    p = xp.exp(log_p)
    if gamma == 0:
        weight = 1.0
    else:
        q = -xp.expm1(log_p)  # 1 - p without cancellation
        positive = q > 0
        q_safe = xp.where(positive, q, 1.0)
        slope = xp.where(positive, gamma * q_safe ** (gamma - 1) * p * log_p, 0.0)
        weight = xp.where(positive, q_safe**gamma, 0.0) - slope
    if xp.isdtype(label.dtype, "integral"):
        is_class = xp.astype(class_mask(xp, label, None, axis, logits.shape[axis]), p.dtype)
        h = -is_class * weight
        keep = kept_pixels(xp, label, ignore_index, keep_mask)
    else:
        h = -xp.astype(label, p.dtype) * weight
        keep = keep_mask
    grad = h - p * xp.sum(h, axis=axis, keepdims=True)
    return loss, xp.astype(_pixel_mean_grad(xp, grad, keep, axis), logits.dtype, copy=False)


def kl_div_value_and_grad(
    logits: Array,
    target_prob: Array,
    *,
    temperature: float = 1.0,
    keep_mask: Array | None = None,
    class_axis: int = 1,
) -> tuple[Array, Array]:
    r""":func:`jdt_array.kl_div` and its gradient, :math:`T (p \sum_c q_c - q)` per kept
    pixel over their number, with p = softmax(z / T)."""
    loss = kl_div(logits, target_prob, temperature=temperature, keep_mask=keep_mask,
                  class_axis=class_axis)  # fmt: skip
    xp = namespace_of(logits=logits)
    axis = class_axis % logits.ndim
    dtype = compute_dtype(xp, logits.dtype)
    p = xp.exp(log_softmax(xp, logits, axis, dtype, temperature=temperature))
    q = xp.astype(target_prob, dtype)
    grad = temperature * (p * xp.sum(q, axis=axis, keepdims=True) - q)
    return loss, xp.astype(
        _pixel_mean_grad(xp, grad, keep_mask, axis), logits.dtype, copy=False
    )


def ce_jdt_value_and_grad(
    logits: Array,
    label: Array,
    *,
    ce_weight: float = 0.25,
    jdt_weight: float = 0.75,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    **jdt_options: Any,
) -> tuple[Array, Array]:
    """:func:`jdt_array.ce_jdt_loss` and its gradient: the weighted sum of both parts'."""
    shared = {
        "ignore_index": ignore_index,
        "keep_mask": keep_mask,
        "class_axis": class_axis,
    }
    loss = ce_jdt_loss(logits, label, ce_weight=ce_weight, jdt_weight=jdt_weight,
                       **shared, **jdt_options)  # fmt: skip
    _, g_ce = cross_entropy_value_and_grad(logits, label, **shared)
    _, g_jdt = jdt_value_and_grad(logits, label, **shared, **jdt_options)
    return loss, ce_weight * g_ce + jdt_weight * g_jdt


def generalized_dice_value_and_grad(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    ignore_index: int | None = None,
    class_axis: int = 1,
    per_image: bool = False,
    smooth: float = 1e-3,
) -> tuple[Array, Array]:
    """:func:`jdt_array.generalized_dice_loss` and its gradient (the weights, which
    depend on the label only, are constants)."""
    loss = generalized_dice_loss(
        logits, label, keep_mask=keep_mask, ignore_index=ignore_index,
        class_axis=class_axis, per_image=per_image, smooth=smooth,
    )  # fmt: skip
    options = JDTOptions(
        mIoUD=0.0 if per_image else 1.0, mIoUI=1.0 if per_image else 0.0, alpha=0.5,
        beta=0.5, smooth=smooth, threshold=0.0, active_classes_mode_hard="PRESENT",
        active_classes_mode_soft="PRESENT", class_agnostic=True,
    )  # fmt: skip
    inputs = prepare(logits, label, keep_mask, class_axis, 1, ignore_index)
    xp, stats = inputs.xp, inputs.statistics()
    volume = stats.label_card if per_image else xp.sum(stats.label_card, axis=0)
    weights = sudre_weights(xp, volume)
    parts = levels(stats, options, inputs.hard, weights)
    g_prob_card, g_diff_card = statistics_grad(
        xp, parts, options, weights, loss_shape(inputs)
    )
    grad = statistics_vjp(inputs, g_prob_card, g_diff_card)
    return loss, xp.astype(grad, logits.dtype, copy=False)


def lovasz_softmax_value_and_grad(
    logits: Array,
    label: Array,
    *,
    classes: Any = "present",
    per_image: bool = False,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    reduce: Any = None,
) -> tuple[Array, Array]:
    """:func:`jdt_array.lovasz_softmax_loss` and its gradient (with ``reduce``: this
    replica's slice of the global-batch gradient).

    The Lovasz extension is linear in the sorted errors, so d loss / d error of a pixel
    is the Jaccard increment at its rank (times the class's weight in the mean), and
    d error / d p is -1 on the class's pixels and +1 elsewhere.
    """
    loss = lovasz_softmax_loss(logits, label, classes=classes, per_image=per_image,
                               ignore_index=ignore_index, keep_mask=keep_mask,
                               class_axis=class_axis, reduce=reduce)  # fmt: skip
    xp = namespace_of(logits=logits)
    axis = class_axis % logits.ndim
    num_classes, batch = logits.shape[axis], logits.shape[0]
    prob_nd = _softmax(xp, logits, axis)
    prob = xp.reshape(xp.moveaxis(prob_nd, axis, 1), (batch, num_classes, -1))
    flat_label = xp.reshape(label, (batch, -1))
    keep = kept_pixels(xp, label, ignore_index, keep_mask)
    keep = xp.ones(flat_label.shape, dtype=xp.bool, device=device(label)) if keep is None \
        else xp.reshape(keep, flat_label.shape)  # fmt: skip
    listed = not isinstance(classes, str)
    ids = (xp.asarray(tuple(classes), device=device(label)) if listed
           else xp.arange(num_classes, device=device(label)))  # fmt: skip
    ids = xp.astype(ids, label.dtype)
    if listed:
        prob = xp.take(prob, xp.astype(ids, xp.int64), axis=1)
    keep = xp.expand_dims(keep, axis=1)
    fg = (xp.expand_dims(flat_label, axis=1) == xp.reshape(ids, (1, -1, 1))) & keep
    keep = keep & xp.ones(fg.shape, dtype=xp.bool, device=device(fg))
    shape = fg.shape
    if not per_image:
        fg, keep, prob = (_pool(xp, a) for a in (fg, keep, prob))
    errors = xp.where(fg, 1.0 - prob, prob)
    g_errors = _extension_grad(xp, errors, fg, keep)  # (G, K, M)
    active = xp.any(fg if classes == "present" else keep, axis=-1)  # (G, K)
    count = xp.sum(xp.astype(active, errors.dtype), axis=1, keepdims=True)
    weight = xp.where(active, 1.0 / xp.where(count > 0, count, 1.0), 0.0)
    weight = weight / _group_count(xp, errors, reduce)
    sign = 1.0 - 2.0 * xp.astype(fg, errors.dtype)  # d error / d p
    g_prob = sign * g_errors * xp.expand_dims(weight, axis=-1)
    if not per_image:
        pooled = xp.reshape(g_prob[0, ...], (shape[1], batch, -1))
        g_prob = xp.permute_dims(pooled, (1, 0, 2))
    if listed:  # add the rows of repeated or listed classes back to their class
        select = xp.astype(
            xp.reshape(ids, (-1, 1))
            == xp.reshape(
                xp.arange(num_classes, dtype=ids.dtype, device=device(ids)), (1, -1)
            ),
            g_prob.dtype,
        )  # (K, C)
        g_prob = xp.permute_dims(xp.tensordot(g_prob, select, axes=([1], [0])), (0, 2, 1))
    spatial = tuple(prob_nd.shape[a] for a in range(prob_nd.ndim) if a not in (0, axis))
    g_prob = xp.moveaxis(xp.reshape(g_prob, (batch, num_classes, *spatial)), 1, axis)
    grad = softmax_vjp(xp, prob_nd, g_prob, axis)
    return loss, xp.astype(grad, logits.dtype, copy=False)


def lovasz_hinge_value_and_grad(
    logits: Array,
    label: Array,
    *,
    per_image: bool = True,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    reduce: Any = None,
) -> tuple[Array, Array]:
    """:func:`jdt_array.lovasz_hinge_loss` and its gradient: -sign times the Jaccard
    increment at each pixel's rank, where its hinge error is positive."""
    loss = lovasz_hinge_loss(logits, label, per_image=per_image, ignore_index=ignore_index,
                             keep_mask=keep_mask, reduce=reduce)  # fmt: skip
    xp = namespace_of(logits=logits)
    flat = (logits.shape[0], -1) if per_image else (1, -1)
    fg = (label == 1) if label.dtype != xp.bool else label
    keep = kept_pixels(xp, label, ignore_index, keep_mask)
    keep = xp.ones(fg.shape, dtype=xp.bool, device=device(fg)) if keep is None else keep
    z = xp.astype(logits, compute_dtype(xp, logits.dtype))
    signs = 2.0 * xp.astype(fg, z.dtype) - 1.0
    raw = 1.0 - z * signs
    errors = xp.reshape(xp.where(raw > 0, raw, 0.0), flat)
    g_errors = _extension_grad(
        xp, errors, xp.reshape(fg & keep, flat), xp.reshape(keep, flat)
    )
    g_errors = xp.reshape(g_errors, logits.shape) / _group_count(xp, errors, reduce)
    grad = xp.where(raw > 0, -signs * g_errors, 0.0)
    return loss, xp.astype(grad, logits.dtype, copy=False)


def _extension_grad(xp, errors, fg, keep):
    """d/d errors of the Lovasz extension (see ``lovasz.lovasz_extension``): the
    Jaccard increment at each pixel's rank, 0 for dropped pixels."""
    key = xp.where(keep, errors, -1.0)
    order = xp.argsort(key, axis=-1, descending=True, stable=True)
    sorted_fg = xp.take_along_axis(xp.astype(fg, order.dtype), order, axis=-1)
    increments = jaccard_increments(xp, sorted_fg, errors.dtype)
    rank = xp.argsort(order, axis=-1)  # the inverse permutation
    return xp.where(keep, xp.take_along_axis(increments, rank, axis=-1), 0.0)


def _group_count(xp, errors, reduce):
    """The number of groups (images, or 1 when pooled) the loss averages over, summed
    over the replicas with ``reduce``; at least 1 (no group: a zero gradient)."""
    groups = xp.ones((errors.shape[0],), dtype=errors.dtype, device=device(errors))
    (count,) = sum_over_replicas(xp, reduce, xp.sum(groups))
    return xp.where(count > 0, count, 1.0)


def _pixel_mean_grad(xp, grad, keep, axis):
    """Scale per-pixel gradients for a mean over the kept pixels (0 where dropped)."""
    if keep is None:
        return grad * (grad.shape[axis] / _size(grad))
    kept = xp.expand_dims(keep, axis=axis)
    count = xp.sum(xp.astype(keep, grad.dtype))
    return xp.where(kept, grad, 0.0) / xp.where(count > 0, count, 1.0)


def _softmax(xp, logits, axis):
    return xp.exp(log_softmax(xp, logits, axis, compute_dtype(xp, logits.dtype)))


def _pool(xp, a):
    pooled = xp.reshape(xp.permute_dims(a, (1, 0, 2)), (a.shape[1], -1))
    return xp.expand_dims(pooled, axis=0)


def _size(x) -> int:
    n = 1
    for s in x.shape:
        n *= s
    return n


__all__ = [
    "ce_jdt_value_and_grad",
    "cross_entropy_value_and_grad",
    "generalized_dice_value_and_grad",
    "kl_div_value_and_grad",
    "lovasz_hinge_value_and_grad",
    "lovasz_softmax_value_and_grad",
]
