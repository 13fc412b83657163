"""From (B, C) statistics to one loss value: the Tversky ratio, the class losses, the
level weights and the sums over replicas, each beside its gradient.

Given the active-class masks, the dataset-, image- and class-level means are all linear
in the per-class losses: loss = sum over levels of sum(coef * class_loss). Writing the
reduction with explicit coefficients gives the forward value and, for free, the
derivative with respect to each class loss (the coefficient), which the hand-derived
gradient for libraries without autodiff builds on.

Data-parallel training plugs in here: ``reduce``, a function that sums an array over the
replicas, is applied to every sum or count over the batch (dataset-level tp, fp, fn,
present-class counts, the image counts behind the image- and class-level means, and the
image-level terms), so every replica gets the loss of the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ._array import device, namespace_of, zero_d
from ._cardinalities import Statistics


class Level(NamedTuple):
    """One level of the loss: its tp, fp, fn, active mask and mean coefficients."""

    tp: Any
    fp: Any
    fn: Any
    active: Any
    coef: Any
    batch_summed: bool  # the dataset level sums the (B, C) statistics over the batch


Reduce = Callable[[Any], Any]


def tp_fp_fn(stats: Statistics) -> tuple[Any, Any, Any]:
    """Soft true positives, false positives and false negatives.

    tp = (|x| + |y| - |x - y|) / 2, fp = |x| - tp, fn = |y| - tp (Wang et al.,
    NeurIPS 2023, eq. 8): the set operations of the Jaccard index written with
    norms, which is what keeps the losses correct for soft labels.
    """
    tp = (stats.prob_card + stats.label_card - stats.diff_card) / 2
    return tp, stats.prob_card - tp, stats.label_card - tp


def tp_fp_fn_vjp(g_tp: Any, g_fp: Any, g_fn: Any) -> tuple[Any, Any]:
    """d loss / d |x| and d loss / d |x - y| from the gradients of tp, fp and fn.

    tp = (P + Y - D) / 2, fp = (P - Y + D) / 2, fn = (Y - P + D) / 2.
    """
    return (g_tp + g_fp - g_fn) / 2, (g_fp + g_fn - g_tp) / 2


def levels(
    stats: Statistics,
    options: Any,
    hard: bool,
    class_weights: Any,
    reduce: Reduce | None = None,
    *,
    xp: Any = None,
) -> list[Level]:
    """The levels with non-zero weight, after pooling classes if ``class_agnostic``.

    With ``reduce``, the dataset-level totals and every count that enters a mean are
    summed over the replicas, so the levels are those of the global batch; the
    image-level terms are reduced in :func:`loss_from_levels`. ``xp``: the namespace
    of the statistics, where the caller has it.
    """
    xp = xp or namespace_of(prob_card=stats.prob_card)
    mode = options.active_classes_mode_hard if hard else options.active_classes_mode_soft
    present = stats.label_max > options.threshold
    tp, fp, fn = tp_fp_fn(stats)
    num_classes = tp.shape[1]
    chosen = selected_classes(xp, options.classes, num_classes, tp)
    if options.class_agnostic:
        weights = pooling_weights(xp, class_weights, options.classes, num_classes, tp)
        tp, fp, fn = (pool_classes(xp, v, weights) for v in (tp, fp, fn))
        present = xp.any(present if chosen is None else present & chosen, axis=1,
                         keepdims=True)  # fmt: skip
        chosen = None  # one pooled class, of the chosen ones

    result = []
    if options.mIoUD > 0:
        sums = [xp.sum(v, axis=0) for v in (tp, fp, fn, xp.astype(present, tp.dtype))]
        *totals, present_count = sum_over_replicas(xp, reduce, *sums)
        active = _all_like(xp, totals[0]) if mode == "ALL" else present_count > 0
        active = active if chosen is None else active & chosen
        coef = options.mIoUD * _mean_weights(xp, active, tp.dtype)
        result.append(Level(*totals, active, coef, batch_summed=True))
    if options.mIoUI > 0 or options.mIoUC > 0:
        active = _all_like(xp, tp) if mode == "ALL" else present
        active = active if chosen is None else active & chosen
        coef = _image_and_class_weights(xp, active, options, tp.dtype, reduce)
        result.append(Level(tp, fp, fn, active, coef, batch_summed=False))
    return result


def loss_from_levels(
    xp: Any,
    stats: Statistics,
    parts: list[Level],
    options: Any,
    class_weights: Any,
    reduce: Reduce | None = None,
) -> Any:
    """The loss value: the class losses of every level, weighted by their coefficients.

    NaN in the statistics (a NaN or +inf logit at a kept pixel) makes it NaN, also
    where no class it touches is active: a diverged model never logs a plausible loss.
    """
    weights = None if options.class_agnostic else class_weights
    if options.reduction == "none":
        return per_image_losses(xp, stats, parts, options, weights)
    # 0 * sum is 0 for finite statistics and NaN otherwise; its gradient is 0. It is
    # this replica's, like the sums over its images, which go through reduce with it.
    local = 0.0 * xp.sum(stats.prob_card)
    summed = 0.0
    for lv in parts:
        losses = class_losses(xp, lv.tp, lv.fp, lv.fn, lv.active, options, weights)
        term = xp.sum(lv.coef * losses)
        if lv.batch_summed:  # from statistics already summed over the replicas
            summed = summed + term
        else:  # a sum over this replica's images: the other replicas hold the rest
            local = local + term
    (local,) = sum_over_replicas(xp, reduce, local)
    # NumPy turns 0-d results of arithmetic into scalars; hand back a 0-d array.
    return zero_d(xp, summed + local)


def per_image_losses(xp: Any, stats: Statistics, parts: list[Level], options: Any,
                     class_weights: Any) -> Any:  # fmt: skip
    """``reduction="none"``: the (B, C) class losses of the image level (B, 1 when
    ``class_agnostic``) times ``mIoUI``, 0 where a class is inactive; a row is NaN
    where its image's statistics are (a NaN or +inf logit at a kept pixel)."""
    (lv,) = parts  # the image level: reduction="none" has the others off
    losses = class_losses(xp, lv.tp, lv.fp, lv.fn, lv.active, options, class_weights)
    nan = 0.0 * xp.sum(stats.prob_card, axis=1, keepdims=True)
    return options.mIoUI * losses + nan


def statistics_grad(
    xp: Any, parts: list[Level], options: Any, class_weights: Any, shape: tuple
) -> tuple[Any, Any]:
    """d loss / d |x| and d loss / d |x - y|, both (B, C) (|y| does not depend on x)."""
    weights = None if options.class_agnostic else class_weights
    g_tp = g_fp = g_fn = 0.0
    for lv in parts:
        grads = class_losses_vjp(
            xp, lv.tp, lv.fp, lv.fn, lv.active, options, weights, lv.coef
        )
        if lv.batch_summed:
            grads = [xp.expand_dims(g, axis=0) for g in grads]
        g_tp, g_fp, g_fn = g_tp + grads[0], g_fp + grads[1], g_fn + grads[2]
    if options.class_agnostic:
        pooled = pooling_weights(xp, class_weights, options.classes, shape[1], g_tp)
        if pooled is not None:
            g_tp, g_fp, g_fn = (g * pooled for g in (g_tp, g_fp, g_fn))
    g_prob, g_diff = tp_fp_fn_vjp(g_tp, g_fp, g_fn)
    zeros = xp.zeros(shape, dtype=g_prob.dtype, device=device(g_prob))
    return g_prob + zeros, g_diff + zeros


def class_losses(xp, tp, fp, fn, active, options, class_weights):
    """Per-class losses, exactly 0 (with a zero gradient) where a class is inactive.

    The focal power keeps the sign of its base: sign(b) |b|^gamma with b = 1 - T (or
    -log T). b is below 0 only where T > 1 (rounding, or soft labels with norm > 1
    and alpha != beta, where tp can exceed the prediction); one rule for every gamma,
    continuous at gamma = 1, never NaN for a finite base.
    """
    tversky = _tversky(xp, tp, fp, fn, active, options)
    losses = -xp.log(tversky) if options.log_loss else 1.0 - tversky
    if options.gamma != 1:
        losses = xp.sign(losses) * xp.abs(losses) ** options.gamma
    if class_weights is not None:
        losses = losses * class_weights
    return losses


def class_losses_vjp(xp, tp, fp, fn, active, options, class_weights, g_losses):
    """The gradient of ``sum(g_losses * class_losses(...))`` w.r.t. tp, fp and fn."""
    tversky = _tversky(xp, tp, fp, fn, active, options)
    g = g_losses if class_weights is None else g_losses * class_weights
    if options.gamma != 1:  # d sign(b) |b|^gamma / db = gamma |b|^(gamma - 1)
        base = -xp.log(tversky) if options.log_loss else 1.0 - tversky
        g = g * options.gamma * xp.abs(base) ** (options.gamma - 1)
    g_t = -g / tversky if options.log_loss else -g
    den, ok = _denominator(xp, tp, fp, fn, active, options)
    num = tp + options.smooth
    scale = xp.where(ok, g_t / xp.where(ok, den, 1.0) ** 2, 0.0)
    g_tp = scale * (options.alpha * fp + options.beta * fn)
    return g_tp, -scale * options.alpha * num, -scale * options.beta * num


def _denominator(xp, tp, fp, fn, active, options):
    """The ratio's denominator, and where it is used: active classes, except a 0 / 0
    (``smooth`` 0 and a class empty in both), whose limit is T = 1. NaN passes."""
    den = tp + options.alpha * fp + options.beta * fn + options.smooth
    return den, active & ~(den <= 0)


def _tversky(xp, tp, fp, fn, active, options):
    den, ok = _denominator(xp, tp, fp, fn, active, options)
    # The double where keeps 0 / 0 out of both the value and the gradient.
    return xp.where(ok, (tp + options.smooth) / xp.where(ok, den, 1.0), 1.0)


def _mean_weights(xp, mask, dtype):
    """Coefficients w with sum(w * v) = mean of v over ``mask`` (0 if mask is empty)."""
    m = xp.astype(mask, dtype)
    count = xp.sum(m)
    return m / xp.where(count > 0, count, 1.0)


def _image_and_class_weights(xp, active, options, dtype, reduce):
    """Coefficients of the (B, C) class losses in ``mIoUI * L_I + mIoUC * L_C``.

    L_I: mean over each image's active classes, then over the images with one; L_C:
    mean over the images where each class is active, then over the classes active
    somewhere. The counts over images are summed over the replicas.
    """
    m = xp.astype(active, dtype)
    per_image = xp.sum(m, axis=1, keepdims=True)  # (B, 1), within one image
    per_class = xp.sum(m, axis=0, keepdims=True)  # (1, C), over this replica's images
    images = xp.sum(xp.astype(per_image > 0, dtype))
    per_class, images = sum_over_replicas(xp, reduce, per_class, images)
    coef = 0.0
    if options.mIoUI > 0:
        coef = coef + options.mIoUI * _mean_of_means(xp, m, per_image, images)
    if options.mIoUC > 0:
        classes = xp.sum(xp.astype(per_class > 0, dtype))
        coef = coef + options.mIoUC * _mean_of_means(xp, m, per_class, classes)
    return coef


def _mean_of_means(xp, m, inner_count, groups):
    """Weights of the mean within each group (``inner_count`` members), then over the
    ``groups`` non-empty groups; 0 for empty ones."""
    inner = m / xp.where(inner_count > 0, inner_count, 1.0)
    return inner / xp.where(groups > 0, groups, 1.0)


def sum_over_replicas(xp: Any, reduce: Reduce | None, *arrays: Any) -> list[Any]:
    """``arrays`` summed over the data-parallel replicas by one call of ``reduce``.

    They are packed into one vector so that a level costs one collective; without
    ``reduce`` they come back unchanged.
    """
    if reduce is None:
        return list(arrays)
    flat = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
    total = reduce(flat)
    if tuple(getattr(total, "shape", ())) != tuple(flat.shape):
        raise ValueError(
            f"reduce must return an array shaped like its input (it sums over the "
            f"replicas); got shape {tuple(getattr(total, 'shape', ()))} for an input of "
            f"shape {tuple(flat.shape)}"
        )
    out, start = [], 0
    for a in arrays:
        size = math.prod(a.shape)
        out.append(xp.reshape(total[start : start + size], a.shape))
        start += size
    return out


def selected_classes(
    xp: Any, classes: tuple[int, ...] | None, num_classes: int, like: Any
) -> Any:
    """(C,) booleans, True for the ``classes`` that enter the means (None: all), on
    the device of ``like``."""
    if classes is None:
        return None
    chosen = set(classes)
    flags = [c in chosen for c in range(num_classes)]
    return xp.asarray(flags, dtype=xp.bool, device=device(like))


def pooling_weights(
    xp: Any, class_weights: Any, classes: Any, num_classes: int, like: Any
) -> Any:
    """The weights of the classes pooled by ``class_agnostic``: ``class_weights``, 0
    for the classes left out by ``classes``; None when every class has weight 1."""
    chosen = selected_classes(xp, classes, num_classes, like)
    if chosen is None:
        return class_weights
    flags = xp.astype(chosen, like.dtype)
    return flags if class_weights is None else class_weights * flags


def pool_classes(xp, values, class_weights):
    if class_weights is not None:
        values = values * class_weights
    return xp.sum(values, axis=1, keepdims=True)


def _all_like(xp, values):
    return xp.ones(values.shape, dtype=xp.bool, device=device(values))
